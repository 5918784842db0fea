-- request -> release for wrk (benchmarks/http_side.py): one connection per wrk thread, each
-- thread one bot that alternates POST /v1/deployments and DELETE /v1/deployments/{bot}.
-- Threads are spread round-robin over the ports in BENCH_PORTS (comma-separated) on
-- 127.0.0.1, so several servers share one load generator without a proxy. BENCH_BOTS
-- prefixes the bot names. done() prints one line "RESULT {json}" with the answers by class.

local ports = {}
for port in string.gmatch(os.getenv("BENCH_PORTS") or "", "%d+") do
  table.insert(ports, port)
end
local prefix = os.getenv("BENCH_BOTS") or "wrk"
local threads = {}

function setup(thread)
  local n = #threads + 1
  local port = ports[(n - 1) % #ports + 1]
  thread.addr = wrk.lookup("127.0.0.1", port)[1]
  thread:set("bot", prefix .. "-" .. n)
  table.insert(threads, thread)
end

function init(args)
  posting = true
  ok, client_errors, server_errors, other = 0, 0, 0, 0
  post_body = '{"bot_id":"' .. bot .. '"}'
  post_headers = { ["Content-Type"] = "application/json" }
end

function request()
  if posting then
    return wrk.format("POST", "/v1/deployments", post_headers, post_body)
  end
  return wrk.format("DELETE", "/v1/deployments/" .. bot)
end

function response(status, headers, body)
  posting = not posting
  if status >= 200 and status < 300 then
    ok = ok + 1
  elseif status >= 500 then
    server_errors = server_errors + 1
  elseif status >= 400 then
    client_errors = client_errors + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local counts = { ok = 0, client_errors = 0, server_errors = 0, other = 0 }
  for _, thread in ipairs(threads) do
    for key, _ in pairs(counts) do
      counts[key] = counts[key] + (thread:get(key) or 0)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "ok": %d, "client_errors": %d, ' ..
    '"server_errors": %d, "other": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, counts.ok, counts.client_errors,
    counts.server_errors, counts.other, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
