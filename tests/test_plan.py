"""`resolve.plan_circuit` and the plan records: steps, frame layouts, captures, ports."""

from __future__ import annotations

import pytest
from torch import nn

from torch_circuit import EndBlock, GetInput, Output, SaveInput, StartBlock, UnusedSaveWarning
from torch_circuit.plan import BlockPlan, Port, ScopePlan
from torch_circuit.program import (
    CallLayer,
    PopSkip,
    PushSkip,
    ReadSkip,
    ReadSkips,
    RunBlock,
    SaveOutput,
    SaveSkip,
)
from torch_circuit.resolve import plan_circuit


def lin() -> nn.Linear:
    return nn.Linear(2, 2)


def block_plan(scope: ScopePlan, key: str) -> BlockPlan:
    entry = dict(scope.entries)[key]
    assert isinstance(entry, BlockPlan)
    return entry


def test_a_read_releases_its_slot_at_the_last_read() -> None:
    plan = plan_circuit([SaveInput("r"), lin(), GetInput("r"), lin(), GetInput("r")]).scope
    assert plan.steps == (
        SaveSkip("0", 0, 0),
        CallLayer("1", 1),
        ReadSkip("2", 2, 0, False),
        CallLayer("3", 3),
        ReadSkip("4", 4, 0, True),
    )
    assert (plan.num_captures, plan.num_slots) == (0, 1)


def test_a_save_nothing_reads_only_passes_x_on() -> None:
    with pytest.warns(UnusedSaveWarning, match=r"SaveInput\('r'\) at position 0 is never read"):
        plan = plan_circuit([SaveInput("r"), lin()]).scope
    assert plan.steps == (CallLayer("0", 0), CallLayer("1", 1))
    assert plan.num_slots == 0  # no slot is kept for it


def test_a_block_captures_outer_skips_and_the_last_reader_releases_them() -> None:
    scope = plan_circuit(
        [
            SaveInput("a"),
            SaveInput("b"),
            StartBlock("s", num_repeats=2),
            GetInput("b"),
            GetInput("a"),
            EndBlock("s"),
            GetInput("b"),
        ]
    ).scope
    run_block = scope.steps[2]
    assert run_block == RunBlock("s", (1, 0), (0,))  # b then a, in the order first read
    body = block_plan(scope, "s").body
    assert body.captured == (("b", 1), ("a", 0))
    # Each read is the last in the body's frame: it frees the body's slot (the block's own
    # arguments keep the tensors for the next repeat).
    assert body.steps == (ReadSkip("3", 3, 0, True), ReadSkip("4", 4, 1, True))
    assert scope.steps[3] == ReadSkip("6", 6, 1, True)


def test_named_inputs_come_first_and_are_handed_in() -> None:
    with pytest.warns(UnusedSaveWarning, match="input 'unused' is never read"):
        plan = plan_circuit(
            [GetInput("m", op=lambda x, m: x), SaveInput("r"), GetInput("r")],
            inputs=("m", "unused"),
        )
    assert [node.name for node in plan.inputs] == ["m", "unused"]
    assert plan.read_inputs == (0,)
    assert plan.scope.num_captures == 1  # the one input read
    assert plan.scope.steps[0] == ReadSkip("0", 0, 0, True)
    assert plan.scope.steps[1] == SaveSkip("1", 1, 1)


def test_a_read_of_several_names() -> None:
    scope = plan_circuit(
        [SaveInput("k"), SaveInput("v"), GetInput(("k", "v"), op=lambda x, k, v: x)]
    ).scope
    assert scope.steps[-1] == ReadSkips("2", 2, (0, 1), (0, 1))


@pytest.mark.filterwarnings("ignore:SaveInput\\('s', push=True\\) at position 1 pushes 3")
def test_stacks_and_outputs_have_ports_and_list_slots() -> None:
    plan = plan_circuit(
        [
            StartBlock("down", num_repeats=3),
            SaveInput("s", push=True),
            Output("h"),
            EndBlock("down"),
            StartBlock("up", num_repeats=2),
            GetInput("s", pop=True),
            EndBlock("up"),
        ]
    )
    down, up = block_plan(plan.scope, "down"), block_plan(plan.scope, "up")
    assert down.body.port == Port((("s", 0, 1),), (("h", 1),))
    assert down.port == Port((("s", 0, 3),), (("h", 3),))  # three runs chained
    assert down.body.steps == (PushSkip("1", 1, 0), SaveOutput("2", 2, 1))
    assert up.body.port == Port((("s", 1, 0),))
    assert up.port == Port((("s", 2, 0),))
    assert up.body.steps == (PopSkip("5", 5, 0),)
    top = plan.scope
    assert top.steps == (
        RunBlock("down", (), (), (), ((0, 3), (1, 3))),
        RunBlock("up", (), (), ((0, 2),), ()),
    )
    assert (top.stack_slots, top.output_slots) == ((0,), (1,))
    assert plan.outputs == (("h", True),)


def test_a_scope_that_dips_into_its_stack_takes_what_it_needs() -> None:
    # Each repeat pops two and pushes one: over 3 repeats the block takes 4, leaves 1.
    body = [GetInput("s", pop=True), GetInput("s", pop=True), SaveInput("s", push=True)]
    plan = plan_circuit(
        [
            StartBlock("fill", num_repeats=4),
            SaveInput("s", push=True),
            EndBlock("fill"),
            StartBlock("fold", num_repeats=3),
            *body,
            EndBlock("fold"),
            GetInput("s", pop=True),
        ]
    )
    fold = block_plan(plan.scope, "fold")
    assert fold.body.port == Port((("s", 2, 1),))
    assert fold.port == Port((("s", 4, 1),))
