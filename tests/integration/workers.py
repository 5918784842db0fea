"""Process entry points for the multi-process tests (importable under ``spawn``)."""

from __future__ import annotations

import threading
import time

from ledger.bootstrap import build_ledger
from ledger.errors import BotAlreadyHoldsSlot, ConcurrencyExhausted, NoIdleSlot, PoolFull
from ledger.settings import load_settings


def _ledger(url: str, max_pool_size: int = 100):  # type: ignore[no-untyped-def]
    return build_ledger(
        load_settings(
            database_url=url,
            max_pool_size=max_pool_size,
            postgres_pool_size=1,
            postgres_max_overflow=2,
        )
    )


def _wait_until(start_at: float) -> None:
    time.sleep(max(0.0, start_at - time.time()))


def acquire_release_cycles(
    url: str, index: int, cycles: int, start_at: float, threads: int = 1
) -> dict[str, int]:
    """Acquire and release until ``cycles`` are done. Every other cycle uses a bot
    shared by all processes, so two processes race to give one bot a second slot. With
    ``threads`` > 1 the process runs that many callers through group commit."""
    ledger = _ledger(url)
    if threads > 1:
        ledger.enable_group_commit()
    counts = {"cycles": 0, "no_idle": 0, "bot_refused": 0, "exhausted": 0}
    lock = threading.Lock()
    failures: list[str] = []

    def count(key: str) -> None:
        with lock:
            counts[key] += 1

    def caller(thread: int) -> None:
        try:
            cycle(thread)
        except Exception as e:  # a thread's error must reach the test, not vanish
            failures.append(repr(e))

    def cycle(thread: int) -> None:
        done = 0
        while done < cycles // threads:
            bot = f"shared-{done % 3}" if done % 2 else f"p{index}-t{thread}-bot"
            try:
                ledger.acquire(bot)
            except NoIdleSlot:
                count("no_idle")
                time.sleep(0.0005)
                continue
            except BotAlreadyHoldsSlot:
                count("bot_refused")
                time.sleep(0.0005)
                continue
            except ConcurrencyExhausted:
                count("exhausted")
                continue
            ledger.release(bot)
            done += 1
            count("cycles")

    _wait_until(start_at)
    try:
        callers = [threading.Thread(target=caller, args=(t,)) for t in range(threads)]
        for t in callers:
            t.start()
        for t in callers:
            t.join()
    finally:
        ledger.close()
    if failures:
        raise RuntimeError(f"{len(failures)} callers failed, first: {failures[0]}")
    return counts


def provision_once(url: str, max_pool_size: int, start_at: float) -> str:
    ledger = _ledger(url, max_pool_size)
    _wait_until(start_at)
    try:
        return ledger.provision("google-meet").slot.name
    except PoolFull:
        return "pool-full"
    finally:
        ledger.close()
