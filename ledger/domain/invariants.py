"""Invariant checker: reads any event log and reports what must never happen.

It trusts nothing but the events themselves, so it can audit a production log, an
imported incident bundle, or the log a concurrency test produced:

- ``slot_two_bots``: a slot acquired while another bot held it;
- ``bot_two_slots``: a bot acquiring a second slot while holding one;
- ``illegal_transition``: an event its slot's status does not allow (transition table;
  a releasing slot, whose lease ended while its container may still run, has no bot, so
  what needs a held slot is illegal there; a drained slot is never acquired);
- ``pool_over_max``: an event that leaves more slots in use (deploying or busy) in a
  pool than its maximum, as the pool's ``PoolCreated`` and ``PoolResized`` set it (a
  resize below the slots in use is not one: those leave as they finish; an error slot
  runs no container and is not in use);
- ``queue_starved``: a queue entry waiting while a slot of its pool and platform stood
  idle, not drained, for longer than ``queue_grace_s``;
- ``deploying_stuck``: a held slot deploying for longer than ``deploying_timeout_s``
  plus ``deploying_grace_s`` with no decision (the stale-deploying policy's
  ``SlotFailed``, a start, a release);
- ``unchecked_event``: an event the checker could not read or take.

:class:`Checker` is incremental: ``slotledger check`` feeds it a whole log once; the
policy worker's leader (:mod:`ledger.application.checker`) feeds it each new event and,
between events, the time (:meth:`Checker.tick`), and keeps its state (:meth:`Checker.dump`).
A time is always an event's timestamp or a clock reading, never read here.

Every violation has a ``key`` that the same log always gives it (the position that shows
it, or where the violating state began), so a checker that reads the log again finds the
same keys and nothing is recorded twice. A violation stays open until a
:class:`Resolution`: a state's (pool, queue, deploying) when the state ends; a single
event's (two bots, illegal transition) once its slot is back at rest (idle or retired)
through a later event; ``unchecked_event`` never by itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import Application

from ledger.domain.pool import Pool
from ledger.domain.queue import QueueEntry
from ledger.domain.slot import OCCUPIED, TRANSITIONS, Slot, SlotStatus

__all__ = [
    "KINDS",
    "CheckReport",
    "Checker",
    "Finding",
    "Resolution",
    "Violation",
    "check_events",
    "iter_log",
]

KINDS = (
    "slot_two_bots",
    "bot_two_slots",
    "illegal_transition",
    "pool_over_max",
    "queue_starved",
    "deploying_stuck",
    "unchecked_event",
)


@dataclass(frozen=True)
class Violation:
    kind: str
    position: int
    """Where it was seen: the event that shows it, or the last one before the time it was
    seen at."""
    timestamp: datetime
    detail: str
    slot_id: UUID | None = None
    bot_id: str | None = None
    key: str = ""
    """Its name across runs (``kind:position`` unless the kind says otherwise)."""
    positions: tuple[int, ...] = ()
    """The evidence: the positions that show it (where the state began, where it was seen)."""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", f"{self.kind}:{self.position}")
        if not self.positions:
            object.__setattr__(self, "positions", (self.position,))


@dataclass(frozen=True)
class Resolution:
    """A violation's state ended: the violation ``key`` is no longer open."""

    key: str
    kind: str
    position: int
    timestamp: datetime
    detail: str


Finding = Violation | Resolution


@dataclass
class CheckReport:
    events: int = 0
    acquisitions: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def iter_log(app: Application[Any], *, batch: int = 1000) -> Iterator[tuple[int, Any]]:
    """Every event of an application's log with its position, in log order."""
    start = 0
    while True:
        notifications = app.recorder.select_notifications(start, batch, inclusive_of_start=False)
        for n in notifications:
            yield n.id, app.mapper.to_domain_event(n)
        if len(notifications) < batch:
            return
        start = notifications[-1].id


@dataclass
class _SlotState:
    pool: str = ""
    platform: str = ""
    status: SlotStatus = SlotStatus.IDLE
    holder: str | None = None
    retired: bool = False
    since: datetime | None = None
    """When its status began (``SlotProvisioned`` or the last event that set it)."""
    since_position: int = 0
    held_at: int = 0
    """Where its holder acquired it."""
    suspect: list[str] = field(default_factory=list)
    """Keys of its open single-event violations."""
    stuck: str | None = None
    """The key of its open ``deploying_stuck``."""
    foreign: bool = False
    """Of another pool than the one checked: its events are skipped."""
    drained: bool = False
    """Out of acquisition: idle, but no queue entry can take it (added last: states
    dumped before it load undrained)."""

    @property
    def releasing(self) -> bool:
        return self.holder is None and self.status in OCCUPIED

    @property
    def held_deploying(self) -> bool:
        return self.status is SlotStatus.DEPLOYING and self.holder is not None and not self.retired

    def dump(self) -> list[Any]:
        return [
            self.pool,
            self.platform,
            self.status.value,
            self.holder,
            self.retired,
            None if self.since is None else self.since.isoformat(),
            self.since_position,
            self.held_at,
            self.suspect,
            self.stuck,
            self.foreign,
            self.drained,
        ]

    @classmethod
    def load(cls, row: list[Any]) -> _SlotState:
        pool, platform, status, holder, retired, since, since_pos, held_at, *rest = row
        suspect, stuck, foreign, *added = rest
        return cls(
            pool,
            platform,
            SlotStatus(status),
            holder,
            retired,
            None if since is None else datetime.fromisoformat(since),
            since_pos,
            held_at,
            list(suspect),
            stuck,
            foreign,
            bool(added and added[0]),
        )


@dataclass
class _Waiting:
    pool: str
    platform: str | None
    bot_id: str
    queued_at: datetime
    position: int

    def dump(self) -> list[Any]:
        return [self.pool, self.platform, self.bot_id, self.queued_at.isoformat(), self.position]

    @classmethod
    def load(cls, row: list[Any]) -> _Waiting:
        pool, platform, bot_id, queued_at, position = row
        return cls(pool, platform, bot_id, datetime.fromisoformat(queued_at), position)


@dataclass
class _Starving:
    """A pool's queue waiting while one of its slots it could take stands idle."""

    since: datetime
    position: int
    key: str | None = None
    """Set once reported."""


class Checker:
    """Feeds on ``(position, event)`` in log order and on the time between events; what
    it finds (:class:`Violation`, :class:`Resolution`) waits in :meth:`drain`.

    ``pool`` limits the checks to one pool's slots, queue and maximum (None: every pool);
    ``deploying_timeout_s`` None leaves the deploying check out. Its cost per event is
    independent of the pool's size, and so is a state's (:meth:`dump`) of the log's length.
    """

    STATE_FORMAT = 1

    def __init__(
        self,
        *,
        queue_grace_s: float = 30.0,
        deploying_timeout_s: float | None = None,
        deploying_grace_s: float = 0.0,
        pool: str | None = None,
    ) -> None:
        self.queue_grace_s = queue_grace_s
        self.deploying_timeout_s = deploying_timeout_s
        self.deploying_grace_s = deploying_grace_s
        self.pool = pool
        self.position = 0
        self.events = 0
        self.acquisitions = 0
        self.slots: dict[UUID, _SlotState] = {}
        self.waiting: dict[UUID, _Waiting] = {}
        self.maxima: dict[str, int] = {}
        self.pool_names: dict[UUID, str] = {}
        self.starving: dict[str, _Starving] = {}
        self.over: dict[str, str] = {}
        """Pools over their maximum: the key of the open ``pool_over_max``."""
        self._found: list[Finding] = []
        self._holders: dict[str, UUID] = {}
        self._idle: Counter[tuple[str, str]] = Counter()
        self._idle_in: Counter[str] = Counter()
        self._non_idle: Counter[str] = Counter()
        self._wanted: Counter[tuple[str, str | None]] = Counter()
        self._deploying: dict[UUID, None] = {}

    # --- what it found -----------------------------------------------------------------

    def drain(self) -> list[Finding]:
        """What was found since the last call, in the order found."""
        found, self._found = self._found, []
        return found

    def _violate(self, kind: str, position: int, at: datetime, detail: str, **fields: Any) -> str:
        violation = Violation(kind, position, at, detail, **fields)
        self._found.append(violation)
        return violation.key

    def _resolve(self, key: str, position: int, at: datetime, detail: str) -> None:
        kind = key.split(":", 1)[0]
        self._found.append(Resolution(key, kind, position, at, detail))

    # --- feeding -----------------------------------------------------------------------

    def feed(self, position: int, event: Any) -> None:
        """One event: first the time until it passes (checked against the state before
        it), then the event itself."""
        self.events += 1
        self._elapse(event.timestamp, position)
        if isinstance(event, Slot.SlotEvent):
            self._slot_event(position, event)
        elif isinstance(event, QueueEntry.QueueEvent):
            self._queue_event(position, event)
        elif isinstance(event, Pool.PoolEvent):
            self._pool_event(position, event)
        self.position = position

    def tick(self, at: datetime) -> None:
        """Time passed up to ``at`` with no event after :attr:`position` (the caller read
        the log up to its head first)."""
        self._elapse(at, self.position)

    def unchecked(self, position: int, at: datetime, topic: str, error: str) -> None:
        """The event at ``position`` could not be read or taken: say so and go past it."""
        self.events += 1
        self._violate("unchecked_event", position, at, f"{topic} could not be checked: {error}")
        self.position = position

    # --- slots -------------------------------------------------------------------------

    def _slot_event(self, position: int, event: Slot.SlotEvent) -> None:
        slot_id, name = event.originator_id, type(event).__name__
        if isinstance(event, Slot.SlotProvisioned):
            self._provisioned(position, event)
            return
        state = self.slots.get(slot_id)
        if state is None:
            state = self.slots[slot_id] = _SlotState()
            self._count(state, 1)
        transition = TRANSITIONS.get(name)
        if state.foreign or transition is None:
            return
        new: list[str] = []
        refused = transition.held and state.releasing
        drained = state.drained and isinstance(event, Slot.SlotAcquired)
        if state.retired or state.status not in transition.sources or refused or drained:
            was = (
                "retired"
                if state.retired
                else "releasing"
                if refused
                else "drained"
                if drained
                else state.status.value
            )
            new.append(
                self._violate(
                    "illegal_transition",
                    position,
                    event.timestamp,
                    f"{name} from {was}",
                    slot_id=slot_id,
                    bot_id=event.bot_id,
                    positions=(state.since_position, position),
                )
            )
        non_idle = self._non_idle[state.pool]
        self._count(state, -1)
        if isinstance(event, Slot.SlotAcquired):
            new += self._acquired(position, event, state)
        elif isinstance(event, Slot.SlotReleasing | Slot.SlotReleased | Slot.SlotFailed):
            self._let_go(state, slot_id)
        if transition.target is not None:
            state.status = transition.target
            state.since, state.since_position = event.timestamp, position
        state.retired = state.retired or transition.retires
        if isinstance(event, Slot.SlotDrained | Slot.SlotUndrained):
            state.drained = isinstance(event, Slot.SlotDrained)
        self._count(state, 1)
        self._track_deploying(slot_id, state, position)
        state.suspect += new
        self._after_slot_change(position, event, slot_id, state, non_idle, set(new))

    def _provisioned(self, position: int, event: Slot.SlotProvisioned) -> None:
        slot_id = event.originator_id
        old = self.slots.get(slot_id)
        suspect = []
        if old is not None:
            self._count(old, -1)
            self._let_go(old, slot_id)
            if old.stuck is not None:
                self._resolve(old.stuck, position, event.timestamp, "provisioned again")
            twice = self._violate(
                "illegal_transition",
                position,
                event.timestamp,
                "slot provisioned twice",
                slot_id=slot_id,
                positions=(old.since_position, position),
            )
            suspect = [*old.suspect, twice]
        foreign = self.pool is not None and event.pool != self.pool
        state = _SlotState(
            pool=event.pool,
            platform=event.platform,
            since=event.timestamp,
            since_position=position,
            suspect=suspect,
            foreign=foreign,
        )
        self.slots[slot_id] = state
        self._count(state, 1)
        self._track_deploying(slot_id, state, position)
        if not foreign:
            self._watch_queue(event.pool, position, event.timestamp)

    def _acquired(self, position: int, event: Slot.SlotAcquired, state: _SlotState) -> list[str]:
        bot, slot_id, at = event.bot_id or "", event.originator_id, event.timestamp
        self.acquisitions += 1
        new = []
        if state.holder is not None and state.holder != bot:
            new.append(
                self._violate(
                    "slot_two_bots",
                    position,
                    at,
                    f"acquired by {bot!r} while {state.holder!r} held it",
                    slot_id=slot_id,
                    bot_id=bot,
                    positions=(state.held_at, position),
                )
            )
            self._let_go(state, slot_id)
        other = self._holders.get(bot)
        if other is not None and other != slot_id:
            new.append(
                self._violate(
                    "bot_two_slots",
                    position,
                    at,
                    f"bot {bot!r} acquired a second slot while holding {other}",
                    slot_id=slot_id,
                    bot_id=bot,
                    positions=(self.slots[other].held_at, position),
                )
            )
        state.holder, state.held_at = bot, position
        self._holders[bot] = slot_id
        return new

    def _let_go(self, state: _SlotState, slot_id: UUID) -> None:
        if state.holder is not None and self._holders.get(state.holder) == slot_id:
            del self._holders[state.holder]
        state.holder = None

    def _after_slot_change(
        self,
        position: int,
        event: Slot.SlotEvent,
        slot_id: UUID,
        state: _SlotState,
        non_idle_before: int,
        new: set[str],
    ) -> None:
        at = event.timestamp
        if state.stuck is not None and (
            not state.held_deploying or state.since_position == position
        ):
            self._resolve(state.stuck, position, at, f"{type(event).__name__}: deploying ended")
            state.stuck = None
        if state.retired or state.status is SlotStatus.IDLE:
            for key in [k for k in state.suspect if k not in new]:
                self._resolve(
                    key, position, at, f"the slot is back at rest ({type(event).__name__})"
                )
            state.suspect = [k for k in state.suspect if k in new]
        self._watch_size(state.pool, position, at, non_idle_before, slot_id)
        self._watch_queue(state.pool, position, at)

    def _track_deploying(self, slot_id: UUID, state: _SlotState, position: int) -> None:
        """Keep the held deploying slots in the order their deploying began (the log's),
        so the time check looks at the oldest first and stops at the first in time."""
        if state.held_deploying and not state.foreign:
            if state.since_position == position:
                self._deploying.pop(slot_id, None)
            self._deploying[slot_id] = None
        else:
            self._deploying.pop(slot_id, None)

    def _count(self, state: _SlotState, sign: int) -> None:
        """Add (``sign`` 1) or take out (-1) a slot's share of the counters."""
        if state.foreign or state.retired:
            return
        if state.status is SlotStatus.IDLE:
            if not state.drained:
                self._idle[(state.pool, state.platform)] += sign
                self._idle_in[state.pool] += sign
        elif state.status in OCCUPIED:
            self._non_idle[state.pool] += sign

    # --- the pool's maximum ------------------------------------------------------------

    def _pool_event(self, position: int, event: Pool.PoolEvent) -> None:
        if isinstance(event, Pool.PoolCreated):
            self.pool_names[event.originator_id] = event.name
        name = self.pool_names.get(event.originator_id)
        if name is None or (self.pool is not None and name != self.pool):
            return
        if isinstance(event, Pool.PoolCreated | Pool.PoolResized):
            self.maxima[name] = event.max_size
            self._watch_size(name, position, event.timestamp, self._non_idle[name], None)

    def _watch_size(
        self, pool: str, position: int, at: datetime, before: int, slot_id: UUID | None
    ) -> None:
        maximum, now = self.maxima.get(pool), self._non_idle[pool]
        if maximum is None:
            return
        key = self.over.get(pool)
        if key is not None and now <= maximum:
            self._resolve(key, position, at, f"{now} of at most {maximum} slots are in use")
            del self.over[pool]
        elif key is None and now > maximum and now > before:
            self.over[pool] = self._violate(
                "pool_over_max",
                position,
                at,
                f"{now} slots of pool {pool} are in use, more than its maximum of {maximum}",
                slot_id=slot_id,
                key=f"pool_over_max:{pool}:{position}",
            )

    # --- the queue ---------------------------------------------------------------------

    def _queue_event(self, position: int, event: QueueEntry.QueueEvent) -> None:
        if isinstance(event, QueueEntry.QueueEntryEnqueued):
            if self.pool is not None and event.pool != self.pool:
                return
            entry = _Waiting(event.pool, event.platform, event.bot_id, event.timestamp, position)
            self.waiting[event.originator_id] = entry
            self._wanted[(entry.pool, entry.platform)] += 1
        else:
            gone = self.waiting.pop(event.originator_id, None)
            if gone is None:
                return
            entry = gone
            self._wanted[(entry.pool, entry.platform)] -= 1
        self._watch_queue(entry.pool, position, event.timestamp)

    def _starves(self, pool: str, platform: str | None) -> bool:
        if platform is None:
            return self._idle_in[pool] > 0
        return self._idle[(pool, platform)] > 0

    def _is_starving(self, pool: str) -> bool:
        return any(
            count > 0 and self._starves(p, platform)
            for (p, platform), count in self._wanted.items()
            if p == pool
        )

    def _watch_queue(self, pool: str, position: int, at: datetime) -> None:
        """After a change in the pool's idle slots or queue: starvation begins or ends."""
        starving, episode = self._is_starving(pool), self.starving.get(pool)
        if starving and episode is None:
            self.starving[pool] = _Starving(at, position)
        elif not starving and episode is not None:
            del self.starving[pool]
            if episode.key is not None:
                self._resolve(episode.key, position, at, "no entry waits for an idle slot")

    # --- time --------------------------------------------------------------------------

    def _elapse(self, at: datetime, position: int) -> None:
        """The checks of time: the state as it stood before ``position``, at ``at``."""
        for pool, episode in self.starving.items():
            waited = (at - episode.since).total_seconds()
            if episode.key is None and waited > self.queue_grace_s:
                first = min(
                    (
                        w
                        for w in self.waiting.values()
                        if w.pool == pool and self._starves(pool, w.platform)
                    ),
                    key=lambda w: w.queued_at,
                )
                episode.key = self._violate(
                    "queue_starved",
                    position,
                    at,
                    f"queue entries waited {waited:.1f}s while a slot was idle "
                    f"(the first, of bot {first.bot_id!r}, since position {first.position})",
                    bot_id=first.bot_id,
                    key=f"queue_starved:{pool}:{episode.position}",
                    positions=(episode.position, position),
                )
        if self.deploying_timeout_s is not None:
            self._deploying_overdue(at, position, self.deploying_timeout_s)

    def _deploying_overdue(self, at: datetime, position: int, timeout_s: float) -> None:
        limit = timeout_s + self.deploying_grace_s
        for slot_id in self._deploying:
            state = self.slots[slot_id]
            if state.stuck is not None or state.since is None:
                continue
            waited = (at - state.since).total_seconds()
            if waited <= limit:
                return  # the others began later
            state.stuck = self._violate(
                "deploying_stuck",
                position,
                at,
                f"deploying for {waited:.0f}s without a decision: the timeout is "
                f"{timeout_s:g}s, the grace {self.deploying_grace_s:g}s",
                slot_id=slot_id,
                bot_id=state.holder,
                key=f"deploying_stuck:{slot_id}:{state.since_position}",
                positions=(state.since_position, position),
            )

    # --- state -------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """The state as JSON values, for :meth:`restore` (its size grows with the pools
        and the queue, never with the log). Findings not drained are not in it."""
        return {
            "format": self.STATE_FORMAT,
            "position": self.position,
            "events": self.events,
            "acquisitions": self.acquisitions,
            "slots": {str(k): s.dump() for k, s in self.slots.items()},
            "waiting": {str(k): w.dump() for k, w in self.waiting.items()},
            "maxima": dict(self.maxima),
            "pool_names": {str(k): v for k, v in self.pool_names.items()},
            "starving": {
                p: [e.since.isoformat(), e.position, e.key] for p, e in self.starving.items()
            },
            "over": dict(self.over),
        }

    def restore(self, state: dict[str, Any]) -> bool:
        """Take a :meth:`dump`'s state; False (nothing taken) when it is of another format."""
        if state.get("format") != self.STATE_FORMAT:
            return False
        self.position, self.events = state["position"], state["events"]
        self.acquisitions = state["acquisitions"]
        self.slots = {UUID(k): _SlotState.load(v) for k, v in state["slots"].items()}
        self.waiting = {UUID(k): _Waiting.load(v) for k, v in state["waiting"].items()}
        self.maxima = dict(state["maxima"])
        self.pool_names = {UUID(k): v for k, v in state["pool_names"].items()}
        self.starving = {
            p: _Starving(datetime.fromisoformat(since), position, key)
            for p, (since, position, key) in state["starving"].items()
        }
        self.over = dict(state["over"])
        for slot_id, slot in sorted(self.slots.items(), key=lambda item: item[1].since_position):
            self._count(slot, 1)
            self._track_deploying(slot_id, slot, slot.since_position)
            if slot.holder is not None:
                self._holders[slot.holder] = slot_id
        for entry in self.waiting.values():
            self._wanted[(entry.pool, entry.platform)] += 1
        return True


def check_events(
    events: Iterable[tuple[int, Any]],
    *,
    queue_grace_s: float = 30.0,
    deploying_timeout_s: float | None = None,
    deploying_grace_s: float = 0.0,
) -> CheckReport:
    """Replay ``(position, event)`` pairs and collect every invariant violation."""
    checker = Checker(
        queue_grace_s=queue_grace_s,
        deploying_timeout_s=deploying_timeout_s,
        deploying_grace_s=deploying_grace_s,
    )
    report = CheckReport()
    for position, event in events:
        checker.feed(position, event)
        report.violations += [f for f in checker.drain() if isinstance(f, Violation)]
    report.events, report.acquisitions = checker.events, checker.acquisitions
    return report
