"""Where skips run: lane levels in a column, and a skip's path across the columns it wraps
into."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from torch_circuit import Circuit, GetInput, SaveInput
from torch_circuit.diagram.geometry import Box, TextFit
from torch_circuit.diagram.graph import circuit_graph
from torch_circuit.diagram.intervals import LevelIndex
from torch_circuit.diagram.lanes import SkipRoute, SkipRouter, lane_levels


def two_long_skips() -> Circuit:
    return Circuit(
        SaveInput("outer"),
        nn.ReLU(),
        SaveInput("inner"),
        nn.ReLU(),
        GetInput("inner"),
        nn.ReLU(),
        GetInput("outer", op=torch.mul),
    )


def test_skips_crossing_a_whole_column_nest_by_their_reach() -> None:
    graph = circuit_graph(two_long_skips())
    outer, inner = graph.skips
    # In a column both cross from top to foot: the spans are equal, the reach decides.
    levels = lane_levels(graph, [(outer, (0.0, 5.0)), (inner, (0.0, 5.0))], {})
    assert levels[inner.id] == 0 and levels[outer.id] == 1
    levels = lane_levels(graph, [(inner, (0.0, 5.0)), (outer, (0.0, 5.0))], {})
    assert levels[inner.id] == 0 and levels[outer.id] == 1
    apart = lane_levels(graph, [(outer, (0.0, 1.0)), (inner, (2.0, 3.0))], {})
    assert apart[outer.id] == apart[inner.id] == 0  # no overlap, one lane


def box(node_id: str, kind: str, cy: float, column: int) -> Box:
    w = 0.3 if kind in ("save", "merge") else 1.7
    return Box(node_id, kind, 1.0 - w / 2, cy - 0.15, w, 0.3, ("x",), "skip", column)  # type: ignore[arg-type]


def test_a_wrapped_skip_runs_to_the_foot_across_the_gutter_and_down_the_next_lane() -> None:
    graph = circuit_graph(two_long_skips())
    outer = graph.skips[0]
    boxes = {
        outer.save: box(outer.save, "save", 1.0, 0),
        outer.reads[0].node: box("6", "merge", 2.0, 1),
    }
    route = SkipRoute(lanes={0: 2.0, 1: 6.0}, turns={0: (9.0, 3.5, 0.3)}, level=1)
    edge = SkipRouter(TextFit(1.7)).edge(outer, boxes, route)
    (path,) = edge.paths
    assert [p for point in path for p in point] == pytest.approx(
        [
            p
            for point in (
                (1.06, 1.0),  # out of the save's dot
                (2.0, 1.0),  # into its lane in column 0
                (2.0, 9.0),  # down to the column's foot
                (3.5, 9.0),  # across to the gutter
                (3.5, 0.3),  # up the gutter
                (6.0, 0.3),  # over the top of column 1 to its lane there
                (6.0, 2.0),  # down to the read
                (1.14, 2.0),  # into the merge
            )
            for p in point
        ]
    )
    assert edge.lane == 1 and edge.targets == ("6",)


# --- The level index agrees with comparing each span with all earlier ones ---


def brute_levels(spans: list[tuple[float, float]]) -> list[int]:
    levels: list[int] = []
    for index, (lo, hi) in enumerate(spans):
        below = [levels[j] for j, (a, b) in enumerate(spans[:index]) if a <= hi and lo <= b]
        levels.append(1 + max(below) if below else 0)
    return levels


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 8)).map(lambda p: (p[0], p[0] + p[1])),
        max_size=40,
    )
)
def test_the_level_index_finds_what_comparing_all_pairs_finds(
    pairs: list[tuple[int, int]],
) -> None:
    spans = [(float(a), float(b)) for a, b in pairs]
    index = LevelIndex(end for span in spans for end in span)
    levels = []
    for span in spans:
        levels.append(index.highest(span) + 1)
        index.place(span, levels[-1])
    assert levels == brute_levels(spans)


def test_many_skips_live_in_one_column_each_get_their_own_lane() -> None:
    levels = 300
    model = Circuit(
        *[SaveInput(f"s{i}") for i in range(levels)],
        *[GetInput(f"s{i}") for i in reversed(range(levels))],
    )
    graph = circuit_graph(model)
    spans = [(skip, (float(i), float(2 * levels - i))) for i, skip in enumerate(graph.skips)]
    found = lane_levels(graph, spans, {})
    assert sorted(found.values()) == list(range(levels))
    assert found[graph.skips[-1].id] == 0 and found[graph.skips[0].id] == levels - 1
