"""The one JSON encoding of records and events: ISO instants, UUID strings, enum values.

The CLI's tables and NDJSON, the audit records' data and the incident bundles all encode
with it, so a value reads the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

__all__ = ["encode", "jsonable"]


def encode(value: object) -> Any:
    """A value ``json`` cannot take, in its JSON form (``json.dumps(default=encode)``);
    TypeError for anything else, as ``json`` expects."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def jsonable(value: object) -> Any:
    """``value`` with every nested record, mapping and sequence made JSON-ready; values
    neither ``json`` nor :func:`encode` knows stay as they are."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | UUID | Enum) or (
        is_dataclass(value) and not isinstance(value, type)
    ):
        return encode(value)
    return value
