"""`nodes.walk`: the one traversal that shapes, summaries and diagrams are driven by."""

from __future__ import annotations

import sys

import torch
from torch import nn

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock
from torch_circuit.nodes import BlockNode, Enter, Event, Exit, Visit, walk


def nested(share_outer: bool = False) -> Circuit:
    return Circuit(
        nn.Linear(4, 4),  # 0
        SaveInput("x"),  # 1
        StartBlock("outer", num_repeats=2, share_weights=share_outer),  # 2
        SaveInput("r"),  # 3
        StartBlock("inner", num_repeats=2),  # 4
        nn.Linear(4, 4),  # 5
        GetInput("r"),  # 6: reads the outer repeat's save
        GetInput("x"),  # 7: reads the top-level save
        EndBlock("inner"),
        SaveInput("r"),  # 9: rebinds r
        nn.Tanh(),  # 10
        GetInput("r"),  # 11: reads position 9, not 3
        EndBlock("outer"),
    )


def describe(event: Event) -> str:
    if isinstance(event, Enter):
        return f"enter {event.frame.id}"
    if isinstance(event, Exit):
        return f"exit {event.frame.id}"
    sources = f" <- {','.join(event.sources)}" if event.sources else ""
    return f"{event.path} [{event.key}]{sources}"


def test_expanded_walk_visits_every_repeat_in_forward_order() -> None:
    events = [describe(e) for e in walk(nested())]
    assert events[:12] == [
        "0 [0]",
        "1 [1]",
        "enter outer.0",
        "outer.0.3 [outer.0.3]",
        "enter outer.0.inner.0",
        "outer.0.inner.0.5 [outer.0.inner.0.5]",
        "outer.0.inner.0.6 [outer.0.inner.0.6] <- outer.0.3",
        "outer.0.inner.0.7 [outer.0.inner.0.7] <- 1",
        "exit outer.0.inner.0",
        "enter outer.0.inner.1",
        "outer.0.inner.1.5 [outer.0.inner.1.5]",
        "outer.0.inner.1.6 [outer.0.inner.1.6] <- outer.0.3",
    ]
    assert "outer.1.11 [outer.1.11] <- outer.1.9" in events
    assert "outer.1.inner.1.6 [outer.1.inner.1.6] <- outer.1.3" in events
    assert events[-1] == "exit outer.1"


def test_folded_walk_enters_each_block_once_with_repeat_zero_paths() -> None:
    events = [describe(e) for e in walk(nested(), folded=True)]
    assert events == [
        "0 [0]",
        "1 [1]",
        "enter outer",
        "outer.0.3 [outer.0.3]",
        "enter outer.0.inner",
        "outer.0.inner.0.5 [outer.0.inner.0.5]",
        "outer.0.inner.0.6 [outer.0.inner.0.6] <- outer.0.3",
        "outer.0.inner.0.7 [outer.0.inner.0.7] <- 1",
        "exit outer.0.inner",
        "outer.0.9 [outer.0.9]",
        "outer.0.10 [outer.0.10]",
        "outer.0.11 [outer.0.11] <- outer.0.9",
        "exit outer",
    ]


def test_keys_of_shared_repeats_name_the_one_module() -> None:
    model = nested(share_outer=True)
    visits = [e for e in walk(model) if isinstance(e, Visit)]
    fifth = [v for v in visits if v.node.position == 5]
    assert [v.path for v in fifth] == [
        "outer.0.inner.0.5",
        "outer.0.inner.1.5",
        "outer.1.inner.0.5",
        "outer.1.inner.1.5",
    ]
    assert [v.key for v in fifth] == [
        "outer.0.inner.0.5",
        "outer.0.inner.1.5",
        "outer.0.inner.0.5",
        "outer.0.inner.1.5",
    ]
    for visit in visits:
        assert visit.module is model.get_submodule(visit.key)


def test_frames_carry_depth_parent_and_the_block() -> None:
    enters = [e.frame for e in walk(nested()) if isinstance(e, Enter)]
    inner = enters[1]
    assert (inner.id, inner.depth, inner.parent) == ("outer.0.inner.0", 2, "outer.0")
    assert isinstance(inner.node, BlockNode) and inner.node.name == "inner"
    assert inner.repeat_key == "outer.0.inner.0"
    visit = next(e for e in walk(nested()) if isinstance(e, Visit) and e.node.position == 5)
    assert [f.id for f in visit.frames] == ["outer.0", "outer.0.inner.0"]


def test_exit_marks_the_end_of_a_block() -> None:
    exits = [(e.frame.id, e.last) for e in walk(nested()) if isinstance(e, Exit)]
    assert exits[:3] == [("outer.0.inner.0", False), ("outer.0.inner.1", True), ("outer.0", False)]
    folded = [e.last for e in walk(nested(), folded=True) if isinstance(e, Exit)]
    assert folded == [True, True]


def test_walk_does_not_recurse() -> None:
    # Blocks nested deeper than the recursion limit, built as nodes by hand so that only the
    # walk is tested here.
    depth = sys.getrecursionlimit() + 100
    names = [f"b{i}" for i in range(depth)]
    node = None
    for index in reversed(range(depth)):
        body = (node,) if node is not None else ()
        node = BlockNode(
            index, 2 * depth - index, names[index], names[index], 1, False, False, body
        )

    class Deep:
        nodes = (node,)
        input_nodes = ()

        def get_submodule(self, target: str) -> nn.Module:
            return _Anything()

    events = list(walk(Deep()))  # type: ignore[arg-type]
    assert len(events) == 2 * depth


class _Anything(nn.Module):
    def get_submodule(self, target: str) -> nn.Module:
        return self


def test_every_visit_module_is_the_one_forward_runs() -> None:
    model = nested()
    calls: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Tanh):
            module.register_forward_hook(lambda m, a, o, name=name: calls.append(name))
    model(torch.randn(2, 4))
    walked = [
        e.key
        for e in walk(model)
        if isinstance(e, Visit) and isinstance(e.module, nn.Linear | nn.Tanh)
    ]
    assert walked == calls
