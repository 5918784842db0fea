"""The pool's capacity under a maximum lowered below its size: the plan (pure), and the
ledger and the operator's drains around it, on the in-memory store."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID, uuid4

from ledger.application import SlotLedger
from ledger.application.capacity import capacity_plan
from ledger.application.operations import Operator
from ledger.bootstrap import memory_env
from ledger.domain import SlotStatus
from tests.contracts.ledger import FakeClock


@dataclass
class Row:
    name: str
    status: SlotStatus = SlotStatus.IDLE
    drain_scope: str | None = None
    retired: bool = False
    slot_id: UUID = field(default_factory=uuid4)


def names(rows: list[Row]) -> list[str]:
    return [r.name for r in rows]


def test_error_slots_go_first_then_idle_ones_by_name() -> None:
    rows = [Row("a"), Row("b", SlotStatus.ERROR), Row("c"), Row("d", SlotStatus.BUSY)]
    drain, undrain = capacity_plan(rows, 2)
    assert (names(drain), undrain) == (["a", "b"], [])


def test_slots_already_drained_for_size_are_kept_and_the_operators_count() -> None:
    rows = [Row("a"), Row("b", drain_scope="size"), Row("c", drain_scope="slot"), Row("d")]
    assert capacity_plan(rows, 3) == ([], [rows[1]])  # c, drained by name, is enough
    assert capacity_plan(rows, 2) == ([], [])  # b and c


def test_too_few_slots_at_rest_drain_every_slot_until_enough_are() -> None:
    rows = [Row(n, SlotStatus.BUSY) for n in "abc"]
    drain, _ = capacity_plan(rows, 1)
    assert names(drain) == ["a", "b", "c"]  # none may be taken again when released
    rows = [Row("a", drain_scope="size"), Row("b", drain_scope="size"), Row("c", SlotStatus.BUSY)]
    rows[2].drain_scope = "size"
    assert capacity_plan(rows, 1) == ([], [rows[2]])  # two at rest: the busy one may return


def test_room_undrains_everything_and_retired_slots_do_not_count() -> None:
    rows = [Row("a", drain_scope="size"), Row("b", retired=True), Row("c")]
    assert capacity_plan(rows, 2) == ([], [rows[0]])


def test_a_drained_pool_gives_no_room_back_and_its_undrain_rebalances() -> None:
    ledger = SlotLedger(memory_env(), max_pool_size=3, default_platform="meet", clock=FakeClock())
    for _ in range(3):
        ledger.provision("meet")
    ledger.max_pool_size = 2
    ledger.ensure_pool()  # a smaller setting at start
    assert [r.drain_scope for r in ledger.slots()] == ["size", None, None]
    operator = Operator(ledger, lambda: NotImplemented, "delete")

    drained = operator.drain_pool("maintenance")
    assert drained.slots == ("pool-meet-002", "pool-meet-003")
    assert all(r.drained for r in ledger.slots())  # none came back while the pool drained
    assert ledger.index.idle_candidates(ledger.pool_name, None, 10) == []

    operator.drain_pool("over", undrain=True)
    assert sorted(str(r.drain_scope) for r in ledger.slots()) == ["None", "None", "size"]
