"""What the read side needs of the ledger: its event log, never its application.

The ledger's application (``ledger.application.SlotLedger``) fits these protocols as it
is; the read side only reads notifications and decodes them with the ledger's mapper, and
an incident bundle's import also saves into a fresh ledger.
"""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, Mapper, Recording

__all__ = ["EventLog", "WritableLog"]


class EventLog(Protocol):
    """A ledger's event log: its name (the tracking key), its pool, a recorder that
    selects notifications and events, and the mapper that decodes them."""

    @property
    def name(self) -> str: ...

    @property
    def pool_name(self) -> str: ...

    @property
    def recorder(self) -> ApplicationRecorder: ...

    @property
    def mapper(self) -> Mapper[UUID]: ...


class WritableLog(EventLog, Protocol):
    """A ledger an incident bundle is imported into."""

    def save(self, *objs: Any) -> list[Recording[UUID]]: ...

    def close(self) -> None: ...
