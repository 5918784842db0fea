"""Snapshots that restore state with the types replay gives it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from eventsourcing.domain import Snapshot

__all__ = ["TypedSnapshot", "TypedState", "restore_types"]


def restore_types(types: Mapping[str, type[Any]], state: dict[str, Any]) -> None:
    """Give each attribute of ``state`` named in ``types`` its declared type back, in place
    (None and already-typed values stay as they are)."""
    for name, kind in types.items():
        value = state.get(name)
        if value is None or isinstance(value, kind):
            continue
        state[name] = kind.fromisoformat(value) if issubclass(kind, datetime) else kind(value)


class TypedSnapshot(Snapshot):
    """A snapshot whose restored state has the types replay gives it.

    The JSON transcoder writes a ``StrEnum`` as a plain string and reads a ``str`` back,
    so the library's snapshot restored ``status == "idle"`` where replay gives
    ``SlotStatus.IDLE`` (and every ``is SlotStatus.X`` test failed). The aggregate's
    :attr:`TypedState.state_types` says what to convert; other transcoders that write
    datetimes or UUIDs as text are covered the same way."""

    def mutate(self, _: None) -> Any:
        aggregate: Any = super().mutate(None)
        restore_types(type(aggregate).state_types, vars(aggregate))
        return aggregate


class TypedState:
    """Mixin (before ``Aggregate``) for aggregates snapshotted with :class:`TypedSnapshot`.

    ``state_types`` declares every attribute whose type a transcoder may not keep (enums,
    datetimes, UUIDs). Snapshots taken before this existed were stored with the
    library's own class and no ``class_version``; the library upcasts such state from
    version 1, which restores the same types."""

    class_version: ClassVar[int] = 2
    state_types: ClassVar[Mapping[str, type[Any]]] = {
        "_created_on": datetime,
        "_modified_on": datetime,
    }
    Snapshot = TypedSnapshot

    @classmethod
    def upcast_v1_v2(cls, state: dict[str, Any]) -> None:
        restore_types(cls.state_types, state)
