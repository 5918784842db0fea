"""Many processes at once never give one slot to two bots nor two slots to one bot.

The verdict comes from the event log alone, through the invariant checker.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

from ledger.bootstrap import build_ledger
from ledger.domain.invariants import check_events, iter_log
from ledger.settings import load_settings
from tests.integration import workers

PROCESSES = 8


def _run(fn, *argsets):  # type: ignore[no-untyped-def]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(argsets), mp_context=ctx) as executor:
        futures = [executor.submit(fn, *args) for args in argsets]
        return [f.result(timeout=240) for f in futures]


@pytest.mark.parametrize(
    ("store", "cycles_per_process", "threads"),
    [("postgres_url", 130, 1), ("postgres_url", 128, 4), ("sqlite_url", 40, 1)],
    ids=["postgres", "postgres-group-commit", "sqlite"],
)
def test_parallel_acquire_release_never_double_assigns(
    request: pytest.FixtureRequest, store: str, cycles_per_process: int, threads: int
) -> None:
    url = str(request.getfixturevalue(store))
    ledger = build_ledger(load_settings(database_url=url))
    for _ in range(3):
        ledger.provision("google-meet")
    start_at = time.time() + 2.0
    results = _run(
        workers.acquire_release_cycles,
        *[(url, i, cycles_per_process, start_at, threads) for i in range(PROCESSES)],
    )
    elapsed = time.time() - start_at
    total = sum(r["cycles"] for r in results)
    report = check_events(iter_log(ledger))
    ledger.close()
    print(
        f"\n{store}: {PROCESSES} processes x {threads} threads, 3 slots: "
        f"checked {report.acquisitions} acquisitions "
        f"in {report.events} events; {total} cycles in {elapsed:.1f}s "
        f"({total / elapsed:.0f} cycles/s); lost races to NoIdleSlot "
        f"{sum(r['no_idle'] for r in results)}, shared bot refused "
        f"{sum(r['bot_refused'] for r in results)}"
    )
    assert total == PROCESSES * cycles_per_process
    assert report.acquisitions == total
    assert report.violations == []


@pytest.mark.parametrize("store", ["postgres_url", "sqlite_url"])
def test_concurrent_provisioning_from_empty_pool_makes_no_duplicates(
    request: pytest.FixtureRequest, store: str
) -> None:
    url = str(request.getfixturevalue(store))
    start_at = time.time() + 2.0
    names = _run(workers.provision_once, *[(url, 8, start_at) for _ in range(10)])
    created = sorted(n for n in names if n != "pool-full")
    assert created == [f"pool-google-meet-{i:03d}" for i in range(1, 9)]
    assert names.count("pool-full") == 2
    ledger = build_ledger(load_settings(database_url=url))
    assert len(ledger.slots()) == 8
    ledger.close()
