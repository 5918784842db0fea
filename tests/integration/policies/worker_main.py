"""A policy worker process for the takeover test: ``python -m
tests.integration.policies.worker_main URL --clock-offset S --tick S``.

Its clock runs ``--clock-offset`` seconds ahead, so every slot the test acquires is already
stale to it; recovery runs every second and stopping always succeeds. With
``--always-lead`` it skips the election, to show that two leaders at once still take each
decision once. SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from datetime import UTC, datetime, timedelta

from ledger.application.worker import LocalLeaderElection, Worker
from ledger.bootstrap import build_ledger, election_for, policy_config
from ledger.settings import load_settings
from tests.unit.policies.support import RecordingRuntime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--clock-offset", type=float, default=0.0)
    parser.add_argument("--tick", type=float, default=0.2)
    parser.add_argument("--always-lead", action="store_true", help="skip the election")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
    offset = timedelta(seconds=args.clock_offset)
    settings = load_settings(
        database_url=args.url,
        recovery_interval_s=1,
        postgres_pool_size=1,
        postgres_max_overflow=2,
    )
    ledger = build_ledger(settings, clock=lambda: datetime.now(UTC) + offset)
    election = LocalLeaderElection() if args.always_lead else election_for(settings)
    worker = Worker(policy_config(settings), ledger, RecordingRuntime(), election, tick_s=args.tick)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        worker.run(stop)
    finally:
        ledger.close()


if __name__ == "__main__":
    main()
