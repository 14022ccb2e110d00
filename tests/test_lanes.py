"""Where skips run: lane levels in a column, and a skip's path across the columns it wraps
into."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torch_circuit import Circuit, GetInput, SaveInput
from torch_circuit.diagram.geometry import Box, TextFit
from torch_circuit.diagram.graph import circuit_graph
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
