"""Errors of the read side, in the ledger's hierarchy (``ledger.errors``).

Bad arguments (unknown event type, unparseable timestamp, position beyond the log end)
raise :class:`ledger.errors.BadInput` itself, so the CLI and API map them like any other.
"""

from __future__ import annotations

from ledger.errors import Conflict, SlotLedgerError

__all__ = ["ProjectionError", "ReadModelTimeout", "RebuildInProgress"]


class ProjectionError(SlotLedgerError):
    """The read models cannot follow the log (e.g. an event for a slot they never saw):
    the models are inconsistent with the log and need a rebuild."""

    code = "projection_error"
    http_status = 500


class ReadModelTimeout(SlotLedgerError):
    """A read-your-writes wait ran out before the models reached the position."""

    code = "read_model_timeout"
    http_status = 504

    def __init__(self, detail: str, *, position: int, reached: int) -> None:
        super().__init__(detail)
        self.position = position
        self.reached = reached


class RebuildInProgress(Conflict):
    """Another process is already building the same model set."""

    code = "rebuild_in_progress"
