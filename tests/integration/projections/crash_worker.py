"""Projects slowly, batch by batch, until the test kills it with SIGKILL mid-batch."""

from __future__ import annotations

import sys
import time
from typing import Any

from ledger.bootstrap import build_ledger, build_read_models
from ledger.settings import load_settings


def main(url: str) -> None:
    settings = load_settings(database_url=url)
    models = build_read_models(settings, build_ledger(settings), batch_size=3)
    write = models._write

    def slow_write(curs: Any, changes: Any) -> None:
        write(curs, changes)
        time.sleep(0.05)  # still inside the batch's transaction: the kill lands mid-batch

    models._write = slow_write  # type: ignore[method-assign]
    models.catch_up()


if __name__ == "__main__":
    main(sys.argv[1])
