"""Process entry points for the multi-process tests (importable under ``spawn``)."""

from __future__ import annotations

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


def acquire_release_cycles(url: str, index: int, cycles: int, start_at: float) -> dict[str, int]:
    """Acquire and release until ``cycles`` are done. Every other cycle uses a bot
    shared by all processes, so two processes race to give one bot a second slot."""
    ledger = _ledger(url)
    counts = {"cycles": 0, "no_idle": 0, "bot_refused": 0, "exhausted": 0}
    _wait_until(start_at)
    try:
        while counts["cycles"] < cycles:
            n = counts["cycles"]
            bot = f"shared-{n % 3}" if n % 2 else f"p{index}-bot"
            try:
                ledger.acquire(bot)
            except NoIdleSlot:
                counts["no_idle"] += 1
                time.sleep(0.0005)
                continue
            except BotAlreadyHoldsSlot:
                counts["bot_refused"] += 1
                time.sleep(0.0005)
                continue
            except ConcurrencyExhausted:
                counts["exhausted"] += 1
                continue
            ledger.release(bot)
            counts["cycles"] += 1
    finally:
        ledger.close()
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
