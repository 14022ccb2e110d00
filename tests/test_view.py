"""Views of a circuit: which blocks are folded, what each view walks and draws, and the checks
made before any work (the two spellings of the choice, and diagrams too large to draw)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from _diagrams import circuits, models, nested
from hypothesis import HealthCheck, given, settings
from torch import nn

from torch_circuit import Circuit, EndBlock, StartBlock
from torch_circuit.diagram import graph as graph_module
from torch_circuit.diagram.graph import circuit_graph
from torch_circuit.diagram.view import (
    MAX_DRAWN,
    DiagramTooLargeError,
    block_declarations,
    check_drawable,
    drawn_size,
    resolve_expanded,
    view_walk,
)
from torch_circuit.nodes import Enter, Exit, Visit, walk

STAGE, UNIT = 2, 4  # StartBlock positions in nested()


def summary(events: Any) -> list[tuple[Any, ...]]:
    """Each event as plain values: what it is, its path or frame, and where it sits."""
    rows: list[tuple[Any, ...]] = []
    for event in events:
        if isinstance(event, Visit):
            frames = tuple((f.id, f.repeat, f.parent) for f in event.frames)
            rows.append(("visit", event.path, event.key, event.sources, frames))
        else:
            frame = event.frame
            kind = "enter" if isinstance(event, Enter) else "exit"
            rows.append((kind, frame.id, frame.repeat, frame.parent, frame.node.num_repeats))
    return rows


@pytest.mark.parametrize("model", [nested, models.quickstart, models.unet])
def test_a_view_of_every_or_no_block_is_the_plain_walk(model: Any) -> None:
    circuit = model()
    every = frozenset(b.position for b in block_declarations(circuit.nodes))
    assert summary(view_walk(circuit, frozenset())) == summary(walk(circuit, folded=True))
    assert summary(view_walk(circuit, every)) == summary(walk(circuit, folded=False))
    assert summary(view_walk(circuit, False)) == summary(walk(circuit, folded=True))
    assert summary(view_walk(circuit, True)) == summary(walk(circuit, folded=False))


def test_an_inner_block_expands_inside_its_folded_outer_one() -> None:
    events = list(view_walk(nested(), frozenset({UNIT})))
    frames = [(e.frame.id, e.frame.repeat, e.frame.parent) for e in events if isinstance(e, Enter)]
    assert frames == [
        ("stage", None, None),
        ("stage.0.unit.0", 0, "stage"),
        ("stage.0.unit.1", 1, "stage"),
        ("stage.0.unit.2", 2, "stage"),
    ]
    exits = [e for e in events if isinstance(e, Exit)]
    assert all(e.frame.node.num_repeats in (2, 3) for e in exits)  # declared counts kept
    assert [e.last for e in exits] == [False, False, True, True]
    reads = [e for e in events if isinstance(e, Visit) and e.path.endswith(".8")]
    assert [r.sources for r in reads] == [("1",)] * 3  # 'outer', read in every unit repeat


def test_an_outer_block_expands_around_its_folded_inner_one() -> None:
    events = list(view_walk(nested(), frozenset({STAGE})))
    frames = [(e.frame.id, e.frame.parent) for e in events if isinstance(e, Enter)]
    assert frames == [
        ("stage.0", None),
        ("stage.0.unit", "stage.0"),
        ("stage.1", None),
        ("stage.1.unit", "stage.1"),
    ]
    keys = [e.key for e in events if isinstance(e, Visit) and e.path.startswith("stage.1.unit")]
    assert keys == ["stage.1.unit.0.5", "stage.1.unit.0.6", "stage.1.unit.0.7", "stage.1.unit.0.8"]


def test_drawn_size_counts_what_each_view_draws() -> None:
    circuit = nested()
    blocks = [b.position for b in block_declarations(circuit.nodes)]
    assert blocks == [STAGE, UNIT]
    for count in range(3):
        for chosen in itertools.combinations(blocks, count):
            view = frozenset(chosen)
            graph = circuit_graph(circuit, view=view)
            assert drawn_size(circuit.nodes, view) == len(graph.nodes) - 2  # less input, output
    assert drawn_size(circuit.nodes, True) == 3 + 2 * (2 + 3 * 4)
    assert drawn_size(circuit.nodes, False) == 3 + 2 + 4


@pytest.mark.parametrize(
    ("show_repeats", "expanded", "result"),
    [(None, None, False), (True, None, False), (False, None, True), (None, True, True),
     (None, False, False), (True, False, False), (False, True, True)],
)  # fmt: skip
def test_two_spellings_of_the_folded_choice(
    show_repeats: bool | None, expanded: bool | None, result: bool
) -> None:
    assert resolve_expanded(show_repeats, expanded) is result


def test_contradicting_spellings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"show_repeats=True and expanded=True contradict"):
        resolve_expanded(True, True)
    with pytest.raises(ValueError, match=r"show_repeats=False and expanded=False contradict"):
        models.quickstart().visualize(show_repeats=False, expanded=False)
    with pytest.raises(TypeError, match=r"expanded must be True or False, got 'yes'"):
        resolve_expanded(None, "yes")  # type: ignore[arg-type]


def refuse_any_walk(monkeypatch: Any) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("walked a diagram that should have been refused first")

    monkeypatch.setattr(graph_module, "view_walk", fail)
    monkeypatch.setattr(graph_module, "trace_shapes", fail)


def test_a_block_too_large_to_expand_is_refused_before_any_walk(
    monkeypatch: Any, tmp_path: Any
) -> None:
    model = Circuit(
        nn.Linear(4, 4),
        StartBlock("b", num_repeats=100_000, share_weights=True),
        nn.Linear(4, 4),
        EndBlock("b"),
    )
    refuse_any_walk(monkeypatch)
    for extension in (".png", ".html"):
        path = tmp_path / f"big{extension}"
        with pytest.raises(
            DiagramTooLargeError,
            match=r"would draw 100,001 layers.*more than the 5,000.*Draw it folded instead "
            r"\(expanded=False, the default\), which draws 2 nodes",
        ):
            model.visualize(path, expanded=True, input_shape=(1, 4))
        assert not path.exists()
    assert MAX_DRAWN == 5000


def test_a_flat_list_too_large_to_draw_is_refused(monkeypatch: Any, tmp_path: Any) -> None:
    relu = nn.ReLU()
    model = Circuit(*[relu] * 6000)
    refuse_any_walk(monkeypatch)
    with pytest.raises(ValueError, match=r"6,000 layers.*Even folded.*model\.summary\(\)"):
        model.visualize(tmp_path / "flat.html")
    with pytest.raises(ValueError, match=r"6,000 layers"):
        check_drawable(model.nodes, False)
    assert list(tmp_path.iterdir()) == []


# --- Pushes and pops in every view pair as the stacks do ---


def folded_path(path: str, positions: dict[str, int], view: frozenset[int]) -> str:
    """Where the run `path` of the expanded walk is drawn in `view`: repeat 0 of every block
    the view folds (block names are unique in the random circuits)."""
    tokens = path.split(".")
    for index in range(0, len(tokens) - 1, 2):
        if positions[tokens[index]] not in view:
            tokens[index + 1] = "0"
    return ".".join(tokens)


def stack_pairs(graph: Any) -> set[tuple[str, str]]:
    return {
        (skip.save, read.node)
        for skip in graph.skips
        for read in skip.reads
        if graph.read_of(read.node).label.endswith(" · pop")
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=circuits(stacks=True))
def test_every_view_joins_each_pop_to_the_pushes_it_takes(model: Circuit) -> None:
    """Drawn in any view (the folded walk, and every set of expanded blocks), a pop is joined
    to exactly the drawn pushes whose tensors the runs it stands for take: the expanded
    pairs, seen through the view's folding."""
    blocks = block_declarations(model.nodes)
    positions = {block.name: block.position for block in blocks}
    exact = stack_pairs(circuit_graph(model, expanded=True))
    views: list[bool | frozenset[int]] = [False]
    for count in range(min(len(blocks), 4) + 1):
        views += [frozenset(c) for c in itertools.combinations(positions.values(), count)]
    for view in views:
        shown = frozenset() if view is False else view
        seen = {
            (folded_path(p, positions, shown), folded_path(q, positions, shown)) for p, q in exact
        }
        assert stack_pairs(circuit_graph(model, view=view)) == seen, view
