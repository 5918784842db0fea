"""Domain layer: the slot lifecycle as event-sourced aggregates, free of I/O.

Two aggregates:

- :class:`Slot` is one pre-provisioned Coolify application. Its events are the ledger's
  audit trail: every one carries the actor, a correlation id and the bot involved.
- :class:`Pool` is the membership of a pool: it hands out unique slot names and enforces
  the maximum size. Saving a new slot together with its pool makes concurrent
  provisioning conflict on the pool's version instead of creating duplicates.

Guards and clock reads live in the public command methods; each event's ``apply`` only
mutates state, because it also runs on replay (eventsourcing notes, section 2).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, Snapshot

from ledger.errors import BadInput, IllegalTransition, PoolFull, StaleLease, WrongBot

__all__ = [
    "ACTOR_RULE",
    "BOT_ID_RULE",
    "CONFIG_KEY_RULE",
    "CONFIG_VALUE_RULE",
    "COOLIFY_UUID_RULE",
    "CORRELATION_ID_RULE",
    "MAX_CONFIG_ENTRIES",
    "PLATFORM_RULE",
    "POOL_NAME_RULE",
    "REASON_CODE_RULE",
    "REASON_RULE",
    "SLOT_NAME_RULE",
    "SLOT_PREFIX_RULE",
    "TRANSITIONS",
    "Pool",
    "QueueEntry",
    "QueueStatus",
    "Slot",
    "SlotStatus",
    "TextRule",
    "Transition",
    "TypedSnapshot",
    "TypedState",
    "check_actor",
    "check_bot_id",
    "check_config",
    "check_origin",
    "check_platform",
    "check_reason",
    "check_text",
    "fit_text",
    "pool_id",
    "restore_types",
]


class SlotStatus(StrEnum):
    """The one status type, exactly the seed's ``idle | deploying | busy | error``."""

    IDLE = "idle"
    DEPLOYING = "deploying"
    BUSY = "busy"
    ERROR = "error"


ALL_STATUSES = frozenset(SlotStatus)


@dataclass(frozen=True)
class Transition:
    """One row of the transition table: which statuses an event may follow, and where
    it leads (``None`` = the status is unchanged; ``retires`` = the slot leaves the pool)."""

    event: str
    sources: frozenset[SlotStatus]
    target: SlotStatus | None
    retires: bool = False


TRANSITIONS: Mapping[str, Transition] = {
    t.event: t
    for t in (
        Transition("SlotAcquired", frozenset({SlotStatus.IDLE}), SlotStatus.DEPLOYING),
        Transition("SlotDeploying", frozenset({SlotStatus.DEPLOYING}), None),
        Transition("SlotStarted", frozenset({SlotStatus.DEPLOYING}), SlotStatus.BUSY),
        Transition(
            "SlotReleased", frozenset({SlotStatus.DEPLOYING, SlotStatus.BUSY}), SlotStatus.IDLE
        ),
        Transition("SlotFailed", ALL_STATUSES, SlotStatus.ERROR),
        Transition("SlotRecoveryFailed", frozenset({SlotStatus.ERROR}), None),
        Transition("SlotRecovered", frozenset({SlotStatus.ERROR}), SlotStatus.IDLE),
        Transition("SlotAppCreated", ALL_STATUSES, None),
        Transition("SlotHeartbeatRefused", ALL_STATUSES, None),
        Transition(
            "SlotRetired", frozenset({SlotStatus.IDLE, SlotStatus.ERROR}), None, retires=True
        ),
    )
}
"""The lifecycle as data: the aggregate's guards and the invariant checker both read it.
``SlotProvisioned`` creates a slot in ``idle`` and is not listed (it has no source)."""

_CONTROLS = r"\x00-\x1f\x7f-\x9f"
"""C0 controls, DEL and C1 controls: PostgreSQL refuses NUL, and the rest reach terminals,
logs and the dashboard as escape sequences."""
_CONTROLS_BUT_TAB_NEWLINE = r"\x00-\x08\x0b-\x1f\x7f-\x9f"
_CONTROL = re.compile(f"[{_CONTROLS}]")
_CONTROL_BUT_TAB_NEWLINE = re.compile(f"[{_CONTROLS_BUT_TAB_NEWLINE}]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
"""JSON can escape a lone surrogate (``"\\ud800"``); UTF-8, and so no store, can hold one."""


@dataclass(frozen=True)
class TextRule:
    """What one kind of text field accepts. Everywhere: a string of at most ``max_len``
    characters, without lone surrogates or control characters (free text, ``multiline``,
    may hold tab and newline). Identifiers also have a ``form``; free text must not be
    blank unless ``blank_ok``.

    Text is refused, never repaired: a caller whose value was cut or cleaned would read
    back something it never sent. Messages show the value only when an identifier has
    the wrong form (never a config value, which may be sensitive)."""

    what: str
    max_len: int
    form: re.Pattern[str] | None = None
    form_words: str = ""
    multiline: bool = False
    blank_ok: bool = False

    @property
    def pattern(self) -> str:
        """The rule as one regular expression, for documents (JSON Schema): all of it
        but the length and lone surrogates, which no valid Unicode text holds (naming them
        would refuse every emoji in a UTF-16 engine such as JavaScript's)."""
        if self.form is not None:
            return self.form.pattern
        c = _CONTROLS_BUT_TAB_NEWLINE if self.multiline else _CONTROLS
        return f"^[^{c}]*$" if self.blank_ok else f"^[^{c}]*[^\\s{c}][^{c}]*$"

    def problem(self, value: object) -> str | None:
        """What is wrong with ``value`` (worded to follow the field's name), or None."""
        if not isinstance(value, str):
            return f"must be a string, not {type(value).__name__}"
        if len(value) > self.max_len:
            return f"is {len(value)} characters long; at most {self.max_len} are allowed"
        if bad := _SURROGATE.search(value):
            return f"must be valid Unicode: lone surrogate {_at(bad)}"
        if bad := (_CONTROL_BUT_TAB_NEWLINE if self.multiline else _CONTROL).search(value):
            aside = " (tab and newline aside)" if self.multiline else ""
            return f"must not contain control characters{aside}: {_at(bad)}"
        if self.form is not None:
            if self.form.fullmatch(value):
                return None
            return f"{value!a} is not a valid {self.what}: {self.form_words}"
        return None if self.blank_ok or value.strip() else "must not be blank"


def _at(found: re.Match[str]) -> str:
    return f"U+{ord(found.group()):04X} at character {found.start() + 1}"


def check_text(value: object, rule: TextRule, *, field: str) -> str:
    """``value`` when ``rule`` accepts it; else :class:`BadInput` naming ``field``, as the
    API and the CLI spell it, so the caller knows which input to correct."""
    problem = rule.problem(value)
    if problem is None and isinstance(value, str):
        return value
    raise BadInput(f"{field} {problem}", field=field)


def fit_text(text: str, max_len: int) -> str:
    """Text the ledger did not choose (an upstream error message) made fit for a free-text
    field before the ledger words a reason with it: controls and lone surrogates become
    U+FFFD and an over-long text is cut, visibly (ending in an ellipsis)."""
    cleaned = _SURROGATE.sub("\ufffd", _CONTROL.sub("\ufffd", text))
    return cleaned if len(cleaned) <= max_len else cleaned[: max_len - 1] + "\u2026"


_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_NAME_WORDS = "1-40 lowercase letters, digits and dashes, the first not a dash"
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
_TOKEN_WORDS = "1-128 letters, digits and _.:@-, the first a letter or digit"

ACTOR_RULE = TextRule(
    "actor",
    70,
    re.compile(r"^(api|worker|operator|policy:[a-z0-9][a-z0-9_.-]{0,62})$"),
    "'api', 'worker', 'operator' or 'policy:<name>'",
)
BOT_ID_RULE = TextRule("bot id", 128, _TOKEN, _TOKEN_WORDS)
CORRELATION_ID_RULE = TextRule("correlation id", 128, _TOKEN, _TOKEN_WORDS)
PLATFORM_RULE = TextRule("platform", 40, _NAME, _NAME_WORDS)
POOL_NAME_RULE = TextRule("pool name", 40, _NAME, _NAME_WORDS)
SLOT_PREFIX_RULE = TextRule("slot prefix", 40, _NAME, _NAME_WORDS)
SLOT_NAME_RULE = TextRule(
    "slot name",
    128,
    re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$"),
    "1-128 lowercase letters, digits and dashes, the first not a dash",
)
COOLIFY_UUID_RULE = TextRule(
    "Coolify uuid",
    128,
    re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"),
    "1-128 letters, digits and _.-, the first a letter or digit",
)
CONFIG_KEY_RULE = TextRule(
    "config key",
    128,
    re.compile(r"^(?!(?:_type_|_data_)$)[A-Za-z_][A-Za-z0-9_]{0,127}$"),
    "a variable name like MEETING_URL (1-128 letters, digits and _, not first a digit),"
    " other than _type_ and _data_, which the event store reserves",
)
"""The event store's JSON transcoder decodes an object of exactly the keys ``_type_`` and
``_data_`` as an encoded value, so a config of just those two could be saved but never
loaded again (every reader of the log would fail on it). Both names are refused on their
own, so the rule stays one per key and the API's schema can state it as a key pattern."""
CONFIG_VALUE_RULE = TextRule("config value", 4096, blank_ok=True)
"""One line: a value becomes a container environment variable, where a newline would
start another variable."""
REASON_RULE = TextRule("reason", 1000, multiline=True)
REASON_CODE_RULE = TextRule(
    "reason code",
    64,
    re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$"),
    "1-64 lowercase letters, digits and _, the first not _",
)
MAX_CONFIG_ENTRIES = 100


def check_actor(actor: str) -> str:
    """Actors are a closed vocabulary so audit queries can group by them."""
    return check_text(actor, ACTOR_RULE, field="actor")


def check_bot_id(bot_id: str) -> str:
    return check_text(bot_id, BOT_ID_RULE, field="bot_id")


def check_platform(platform: str) -> str:
    return check_text(platform, PLATFORM_RULE, field="platform")


def check_reason(reason: str) -> str:
    return check_text(reason, REASON_RULE, field="reason")


def check_origin(actor: str, correlation_id: str) -> None:
    """Who caused an event and under which request: both are on every event."""
    check_actor(actor)
    check_text(correlation_id, CORRELATION_ID_RULE, field="correlation_id")


def check_config(config: dict[str, str]) -> dict[str, str]:
    """A bot's configuration becomes container environment variables: keys must be valid
    variable names and values one line of text (Coolify rejects anything else)."""
    if not isinstance(config, dict) or len(config) > MAX_CONFIG_ENTRIES:
        msg = f"config must be an object of at most {MAX_CONFIG_ENTRIES} string values"
        raise BadInput(msg, field="config")
    for key, value in config.items():
        check_text(key, CONFIG_KEY_RULE, field="config")
        check_text(value, CONFIG_VALUE_RULE, field=f"config.{key}")
    return dict(config)


def pool_id(pool_name: str) -> UUID:
    """Pools are found by name, so their id is derived from it."""
    return uuid5(NAMESPACE_URL, f"slotledger:pool:{pool_name}")


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


class Slot(TypedState, Aggregate):
    """A warm Coolify application that bots lease one at a time."""

    state_types: ClassVar[Mapping[str, type[Any]]] = {
        **TypedState.state_types,
        "status": SlotStatus,
        "status_since": datetime,
        "last_used": datetime,
    }

    class SlotEvent(Aggregate.Event):
        """Fields every slot event carries, for the audit trail."""

        actor: str
        correlation_id: str
        bot_id: str | None

        def transition(self) -> Transition | None:
            return TRANSITIONS.get(type(self).__name__)

        def apply(self, aggregate: Any) -> None:
            slot: Slot = aggregate
            transition = self.transition()
            if transition is not None and transition.target is not None:
                slot.status = transition.target
                slot.status_since = self.timestamp
            self.apply_fields(slot)

        def apply_fields(self, slot: Slot) -> None:
            """Event-specific state changes beyond the status."""

    class SlotProvisioned(Aggregate.Created, SlotEvent):
        pool: str
        name: str
        platform: str
        coolify_uuid: str | None

    class SlotAcquired(SlotEvent):
        def apply_fields(self, slot: Slot) -> None:
            slot.bot_id = self.bot_id
            slot.lease += 1
            slot.deployment_uuid = None

    class SlotDeploying(SlotEvent):
        deployment_uuid: str | None

        def apply_fields(self, slot: Slot) -> None:
            slot.deployment_uuid = self.deployment_uuid

    class SlotStarted(SlotEvent):
        pass

    class SlotReleased(SlotEvent):
        def apply_fields(self, slot: Slot) -> None:
            slot.bot_id = None
            slot.last_used = self.timestamp
            slot.recovery_attempts = 0

    class SlotFailed(SlotEvent):
        """``reason_code`` arrived in v2 so failures can be grouped; v1 had only text."""

        class_version = 2
        reason: str
        reason_code: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["reason_code"] = "unspecified"

        def apply_fields(self, slot: Slot) -> None:
            if slot.bot_id is not None:
                slot.last_used = self.timestamp
            slot.bot_id = None
            slot.last_error = self.reason

    class SlotRecoveryFailed(SlotEvent):
        reason: str

        def apply_fields(self, slot: Slot) -> None:
            slot.recovery_attempts += 1
            slot.last_error = self.reason

    class SlotRecovered(SlotEvent):
        def apply_fields(self, slot: Slot) -> None:
            slot.recovery_attempts = 0

    class SlotAppCreated(SlotEvent):
        """The slot got its Coolify application: the first one (``previous_uuid`` is
        ``None``), or a new one after the old one vanished outside the ledger."""

        previous_uuid: str | None
        coolify_uuid: str

        def apply_fields(self, slot: Slot) -> None:
            slot.coolify_uuid = self.coolify_uuid

    class SlotHeartbeatRefused(SlotEvent):
        """A heartbeat from a bot that does not hold the slot: kept as evidence, never
        applied (the origin system's post-release confusion had no such trail)."""

        reason: str

    class SlotRetired(SlotEvent):
        reason: str

        def apply_fields(self, slot: Slot) -> None:
            slot.retired = True

    def __init__(
        self,
        *,
        pool: str,
        name: str,
        platform: str,
        coolify_uuid: str | None,
        actor: str,
        correlation_id: str,
        bot_id: str | None,
    ) -> None:
        self.pool = pool
        self.name = name
        self.platform = platform
        self.coolify_uuid = coolify_uuid
        self.status = SlotStatus.IDLE
        self.status_since: datetime = self.created_on
        self.bot_id: str | None = bot_id
        self.lease = 0
        self.deployment_uuid: str | None = None
        self.last_used: datetime | None = None
        self.last_error: str | None = None
        self.recovery_attempts = 0
        self.retired = False

    # Commands: guards first, then one event. Nothing changes when a guard raises.

    @classmethod
    def provision(
        cls,
        *,
        slot_id: UUID,
        pool: str,
        name: str,
        platform: str,
        coolify_uuid: str | None,
        at: datetime,
        actor: str,
        correlation_id: str,
    ) -> Slot:
        check_origin(actor, correlation_id)
        check_text(pool, POOL_NAME_RULE, field="pool")
        check_text(name, SLOT_NAME_RULE, field="name")
        check_platform(platform)
        if coolify_uuid is not None:
            check_text(coolify_uuid, COOLIFY_UUID_RULE, field="coolify_uuid")
        return cls._create(
            cls.SlotProvisioned,
            id=slot_id,
            timestamp=at,
            pool=pool,
            name=name,
            platform=platform,
            coolify_uuid=coolify_uuid,
            actor=actor,
            correlation_id=correlation_id,
            bot_id=None,
        )

    def acquire(self, bot_id: str, *, at: datetime, actor: str, correlation_id: str) -> None:
        check_bot_id(bot_id)
        self._emit(self.SlotAcquired, at, actor, correlation_id, bot_id)

    def mark_deploying(
        self,
        deployment_uuid: str | None,
        *,
        at: datetime,
        actor: str,
        correlation_id: str,
    ) -> None:
        self._emit(
            self.SlotDeploying,
            at,
            actor,
            correlation_id,
            self.bot_id,
            deployment_uuid=None
            if deployment_uuid is None
            else check_text(deployment_uuid, COOLIFY_UUID_RULE, field="deployment_uuid"),
        )

    def check_lease(self, lease: int | None) -> None:
        """Fencing: work done for an earlier lease of this slot (a deploy that outlived
        its bot's release) must not change the current lease."""
        if lease is not None and lease != self.lease:
            msg = f"slot {self.name} is on lease {self.lease}, not {lease}: the request is stale"
            raise StaleLease(msg)

    def mark_started(self, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._emit(self.SlotStarted, at, actor, correlation_id, self.bot_id)

    def release(self, bot_id: str, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._check_allowed(self.SlotReleased)
        self._check_holder(bot_id)
        self._emit(self.SlotReleased, at, actor, correlation_id, bot_id)

    def fail(
        self,
        reason: str,
        *,
        reason_code: str = "unspecified",
        at: datetime,
        actor: str,
        correlation_id: str,
    ) -> None:
        self._emit(
            self.SlotFailed,
            at,
            actor,
            correlation_id,
            self.bot_id,
            reason=check_reason(reason),
            reason_code=check_text(reason_code, REASON_CODE_RULE, field="reason_code"),
        )

    def recovery_failed(
        self, reason: str, *, at: datetime, actor: str, correlation_id: str
    ) -> None:
        self._emit(
            self.SlotRecoveryFailed,
            at,
            actor,
            correlation_id,
            None,
            reason=check_reason(reason),
        )

    def recover(self, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._emit(self.SlotRecovered, at, actor, correlation_id, None)

    def app_created(
        self, coolify_uuid: str, *, at: datetime, actor: str, correlation_id: str
    ) -> None:
        self._emit(
            self.SlotAppCreated,
            at,
            actor,
            correlation_id,
            self.bot_id,
            previous_uuid=self.coolify_uuid,
            coolify_uuid=check_text(coolify_uuid, COOLIFY_UUID_RULE, field="coolify_uuid"),
        )

    def heartbeat(self, bot_id: str, *, at: datetime, actor: str, correlation_id: str) -> bool:
        """A heartbeat from the holder proves its container runs: while ``deploying`` it
        starts the slot (True); while ``busy`` it changes nothing. Anyone else is refused."""
        self._check_holder(bot_id)
        if self.status is SlotStatus.DEPLOYING:
            self.mark_started(at=at, actor=actor, correlation_id=correlation_id)
            return True
        return False

    def refuse_heartbeat(
        self, bot_id: str, reason: str, *, at: datetime, actor: str, correlation_id: str
    ) -> None:
        self._emit(
            self.SlotHeartbeatRefused,
            at,
            actor,
            correlation_id,
            check_bot_id(bot_id),
            reason=check_reason(reason),
        )

    def retire(self, reason: str, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._emit(self.SlotRetired, at, actor, correlation_id, None, reason=check_reason(reason))

    def _check_holder(self, bot_id: str) -> None:
        check_bot_id(bot_id)
        if self.bot_id != bot_id:
            holder = f"bot {self.bot_id!r}" if self.bot_id else "no bot"
            msg = f"slot {self.name} is held by {holder}, not by bot {bot_id!r}"
            raise WrongBot(msg)

    def _emit(
        self,
        event_class: type[SlotEvent],
        at: datetime,
        actor: str,
        correlation_id: str,
        bot_id: str | None,
        **fields: Any,
    ) -> None:
        check_origin(actor, correlation_id)
        self._check_allowed(event_class)
        self.trigger_event(
            event_class,
            timestamp=at,
            actor=actor,
            correlation_id=correlation_id,
            bot_id=bot_id,
            **fields,
        )

    def _check_allowed(self, event_class: type[SlotEvent]) -> None:
        transition = TRANSITIONS[event_class.__name__]
        if self.retired:
            msg = f"slot {self.name} is retired: {event_class.__name__} is not allowed"
            raise IllegalTransition(msg)
        if self.status not in transition.sources:
            allowed = ", ".join(sorted(transition.sources))
            msg = (
                f"{event_class.__name__} is not allowed for slot {self.name} in status "
                f"{self.status.value!r} (allowed from: {allowed})"
            )
            raise IllegalTransition(msg)


class Pool(TypedState, Aggregate):
    """Pool membership: unique names and the maximum size, decided in one place."""

    class PoolEvent(Aggregate.Event):
        actor: str
        correlation_id: str

    class PoolCreated(Aggregate.Created, PoolEvent):
        name: str
        prefix: str
        max_size: int

    class PoolResized(PoolEvent):
        max_size: int

        def apply(self, aggregate: Any) -> None:
            aggregate.max_size = self.max_size

    class SlotAdmitted(PoolEvent):
        slot_id: UUID
        platform: str
        slot_name: str

        def apply(self, aggregate: Any) -> None:
            pool: Pool = aggregate
            pool.members[str(self.slot_id)] = self.platform
            pool.next_number[self.platform] = pool.next_number.get(self.platform, 0) + 1

    class SlotRemoved(PoolEvent):
        slot_id: UUID

        def apply(self, aggregate: Any) -> None:
            aggregate.members.pop(str(self.slot_id), None)

    MAX_SIZE_LIMIT: ClassVar[int] = 10_000

    def __init__(
        self, *, name: str, prefix: str, max_size: int, actor: str, correlation_id: str
    ) -> None:
        self.name = name
        self.prefix = prefix
        self.max_size = max_size
        self.members: dict[str, str] = {}
        self.next_number: dict[str, int] = {}

    @classmethod
    def create(
        cls, *, name: str, prefix: str, max_size: int, at: datetime, correlation_id: str
    ) -> Pool:
        cls._check_max_size(max_size)
        check_text(name, POOL_NAME_RULE, field="pool")
        check_text(prefix, SLOT_PREFIX_RULE, field="prefix")
        check_origin("operator", correlation_id)
        return cls._create(
            cls.PoolCreated,
            id=pool_id(name),
            timestamp=at,
            name=name,
            prefix=prefix,
            max_size=max_size,
            actor="operator",
            correlation_id=correlation_id,
        )

    @property
    def size(self) -> int:
        return len(self.members)

    def resize(self, max_size: int, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._check_max_size(max_size)
        check_origin(actor, correlation_id)
        if max_size != self.max_size:
            self.trigger_event(
                self.PoolResized,
                timestamp=at,
                max_size=max_size,
                actor=actor,
                correlation_id=correlation_id,
            )

    def admit(
        self, slot_id: UUID, platform: str, *, at: datetime, actor: str, correlation_id: str
    ) -> str:
        """Reserve the next name for a new slot; refuse when the pool is full."""
        check_platform(platform)
        check_origin(actor, correlation_id)
        if self.size >= self.max_size:
            msg = f"pool {self.name} is at its maximum size of {self.max_size} slots"
            raise PoolFull(msg)
        number = self.next_number.get(platform, 0) + 1
        name = f"{self.prefix}-{platform}-{number:03d}"
        self.trigger_event(
            self.SlotAdmitted,
            timestamp=at,
            slot_id=slot_id,
            platform=platform,
            slot_name=name,
            actor=actor,
            correlation_id=correlation_id,
        )
        return name

    def remove(self, slot_id: UUID, *, at: datetime, actor: str, correlation_id: str) -> None:
        check_origin(actor, correlation_id)
        if str(slot_id) in self.members:
            self.trigger_event(
                self.SlotRemoved,
                timestamp=at,
                slot_id=slot_id,
                actor=actor,
                correlation_id=correlation_id,
            )

    @classmethod
    def _check_max_size(cls, max_size: int) -> None:
        if not isinstance(max_size, int) or not 1 <= max_size <= cls.MAX_SIZE_LIMIT:
            msg = f"max pool size must be between 1 and {cls.MAX_SIZE_LIMIT}, got {max_size!r}"
            raise BadInput(msg, field="max_size")


class QueueStatus(StrEnum):
    WAITING = "waiting"
    DISPATCHED = "dispatched"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class QueueEntry(TypedState, Aggregate):
    """A bot's request waiting for a slot while the pool is full. Entries are never
    deleted: dispatch, expiry and cancellation are events, so queue time is auditable."""

    state_types: ClassVar[Mapping[str, type[Any]]] = {
        **TypedState.state_types,
        "status": QueueStatus,
        "timeout_at": datetime,
        "slot_id": UUID,
        "ended_at": datetime,
    }

    DEFAULT_TIMEOUT_S: ClassVar[float] = 300.0
    MAX_TIMEOUT_S: ClassVar[float] = 600.0

    class QueueEvent(Aggregate.Event):
        actor: str
        correlation_id: str
        bot_id: str

    class QueueEntryEnqueued(Aggregate.Created, QueueEvent):
        """``config`` is the bot's configuration, applied when a slot is dispatched; it is
        stored forever, so it must hold settings, never secrets."""

        pool: str
        platform: str | None
        priority: int
        timeout_at: datetime
        config: dict[str, str]

    class QueueEntryDispatched(QueueEvent):
        slot_id: UUID

        def apply(self, aggregate: Any) -> None:
            aggregate.status = QueueStatus.DISPATCHED
            aggregate.slot_id = self.slot_id
            aggregate.ended_at = self.timestamp

    class QueueEntryExpired(QueueEvent):
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.status = QueueStatus.EXPIRED
            aggregate.reason = self.reason
            aggregate.ended_at = self.timestamp

    class QueueEntryCancelled(QueueEvent):
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.status = QueueStatus.CANCELLED
            aggregate.reason = self.reason
            aggregate.ended_at = self.timestamp

    def __init__(
        self,
        *,
        pool: str,
        platform: str | None,
        priority: int,
        timeout_at: datetime,
        config: dict[str, str],
        actor: str,
        correlation_id: str,
        bot_id: str,
    ) -> None:
        self.pool = pool
        self.config = config
        self.correlation_id = correlation_id
        self.platform = platform
        self.priority = priority
        self.timeout_at = timeout_at
        self.bot_id = bot_id
        self.status = QueueStatus.WAITING
        self.slot_id: UUID | None = None
        self.reason: str | None = None
        self.ended_at: datetime | None = None

    @classmethod
    def enqueue(
        cls,
        *,
        bot_id: str,
        pool: str,
        platform: str | None,
        priority: int,
        timeout_s: float,
        config: dict[str, str],
        at: datetime,
        actor: str,
        correlation_id: str,
    ) -> QueueEntry:
        check_bot_id(bot_id)
        check_origin(actor, correlation_id)
        check_text(pool, POOL_NAME_RULE, field="pool")
        if platform is not None:
            check_platform(platform)
        if type(priority) is not int or not -1000 <= priority <= 1000:  # bool is no priority
            msg = f"priority must be an integer from -1000 to 1000, got {priority!r}"
            raise BadInput(msg, field="priority")
        if not 0 < timeout_s <= cls.MAX_TIMEOUT_S:
            msg = f"queue timeout must be in (0, {cls.MAX_TIMEOUT_S:g}] seconds, got {timeout_s!r}"
            raise BadInput(msg, field="queue_timeout_s")
        return cls._create(
            cls.QueueEntryEnqueued,
            timestamp=at,
            pool=pool,
            platform=platform,
            priority=priority,
            timeout_at=at + timedelta(seconds=timeout_s),
            config=check_config(config),
            actor=actor,
            correlation_id=correlation_id,
            bot_id=bot_id,
        )

    @property
    def queued_at(self) -> datetime:
        return self.created_on

    def expiry_reason(self, at: datetime) -> str:
        """What the requester reads when its entry expires."""
        return f"no slot became available within {(at - self.queued_at).total_seconds():.0f}s"

    def dispatch(self, slot_id: UUID, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._end(self.QueueEntryDispatched, at, actor, correlation_id, slot_id=slot_id)

    def expire(self, reason: str, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._end(self.QueueEntryExpired, at, actor, correlation_id, reason=check_reason(reason))

    def cancel(self, reason: str, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._end(self.QueueEntryCancelled, at, actor, correlation_id, reason=check_reason(reason))

    def _end(
        self,
        event_class: type[QueueEvent],
        at: datetime,
        actor: str,
        correlation_id: str,
        **fields: Any,
    ) -> None:
        check_origin(actor, correlation_id)
        if self.status is not QueueStatus.WAITING:
            msg = (
                f"queue entry of bot {self.bot_id!r} is already {self.status.value}: "
                f"{event_class.__name__} is not allowed"
            )
            raise IllegalTransition(msg)
        self.trigger_event(
            event_class,
            timestamp=at,
            actor=actor,
            correlation_id=correlation_id,
            bot_id=self.bot_id,
            **fields,
        )
