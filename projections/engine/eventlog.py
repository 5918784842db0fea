"""What the read side needs of the ledger: its event log, never its application.

The ledger's application (``ledger.application.SlotLedger``) fits these protocols as it
is; the read side only reads notifications and decodes them with the ledger's mapper, and
an incident bundle's import also saves into a fresh ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Protocol, cast
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    ApplicationRecorder,
    Mapper,
    MapperDeserialisationError,
    Recording,
    StoredEvent,
    find_id_convertor,
)
from eventsourcing.utils import resolve_topic

__all__ = ["EventLog", "WritableLog", "event_decoder"]


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


def event_decoder(mapper: Mapper[UUID]) -> Callable[[StoredEvent], DomainEventProtocol[UUID]]:
    """``mapper.to_domain_event``, or for the library's plain mapper (no cipher, no
    compressor) the same steps with each topic's class, id convertor and version looked
    up once: the mapper's per-event lookups cost a fifth of a rebuild's decoding."""
    if type(mapper) is not Mapper or mapper.cipher or mapper.compressor:
        return mapper.to_domain_event
    decode = mapper.transcoder.decode
    classes: dict[str, tuple[Any, int, Any, Callable[[Any], Any]]] = {}

    def to_domain_event(stored: StoredEvent) -> DomainEventProtocol[UUID]:
        topic, originator_id = stored.topic, stored.originator_id
        try:
            cls, class_version, id_type, convert = classes[topic]
        except KeyError:
            cls, id_type = cast("Hashable", resolve_topic(topic)), None
            class_version = getattr(cls, "class_version", 1)
        if type(originator_id) is not id_type:
            id_type = cast("Hashable", type(originator_id))
            convert = find_id_convertor(cls, id_type)
            classes[topic] = cls, class_version, id_type, convert
        try:
            state: dict[str, Any] = decode(stored.state)
        except Exception as e:
            msg = (
                f"Failed to deserialise state of stored event with topic '{topic}', "
                f"originator_id '{stored.originator_id}' and "
                f"originator_version {stored.originator_version}: {e}"
            )
            raise MapperDeserialisationError(msg) from e
        state["originator_id"] = convert(originator_id)
        state["originator_version"] = stored.originator_version
        from_version = state.pop("class_version", 1)
        while from_version < class_version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(state)
            from_version += 1
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", state)
        return cast("DomainEventProtocol[UUID]", event)

    return to_domain_event
