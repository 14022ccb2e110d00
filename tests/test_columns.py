"""Where a long diagram wraps: cuts between top-level items (skips live across them or not),
packed into columns no taller than the width allows, ending early at a quieter cut."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock
from torch_circuit.diagram.columns import _least_height, balanced_height, chunks, pack
from torch_circuit.diagram.geometry import COLUMN_GUTTER, MAX_ASPECT, MIN_WRAP_HEIGHT
from torch_circuit.diagram.graph import circuit_graph


def long_skip() -> Circuit:
    return Circuit(
        nn.ReLU(),
        SaveInput("a"),
        nn.ReLU(),
        StartBlock("b", num_repeats=2),
        nn.ReLU(),
        nn.ReLU(),
        EndBlock("b"),
        GetInput("a"),
        nn.ReLU(),
    )


def test_cuts_fall_between_top_level_items_even_where_a_skip_is_live() -> None:
    graph = circuit_graph(long_skip(), expanded=True)
    parts, live = chunks(graph)
    assert [[item for item in part] for part in parts][:3] == [
        [("node", "input")],
        [("node", "0")],
        [("node", "1")],
    ]
    frames = [part for part in parts if part[0][0] == "open"]
    assert [part[0][1] for part in frames] == ["b.0", "b.1"]  # each repeat whole, never split
    assert all(part[-1] == ("close", part[0][1]) for part in frames)
    # The skip 'a' is live from its save (node 1) to its read (node 7).
    assert live == [0, 0, 1, 1, 1, 1, 0, 0]
    assert len(live) == len(parts) - 1


def test_a_column_ends_early_at_a_cut_with_fewer_live_skips() -> None:
    heights = [1.0] * 10
    assert pack(heights, 4.0, 3.0) == [0] * 4 + [1] * 4 + [2] * 2
    live = [1, 1, 0, 1, 1, 1, 1, 1, 1]  # the cut after chunk 2 is quiet: end the column there
    assert pack(heights, 4.0, 3.0, live)[:5] == [0, 0, 0, 1, 1]
    far = [1, 0, 1, 1, 1, 1, 1, 1, 1]  # a quiet cut half a column back is not worth it
    assert pack(heights, 4.0, 3.0, far)[:5] == [0, 0, 0, 0, 1]


@pytest.mark.parametrize("width", [2.5, 3.1, 4.0])
def test_one_column_only_while_it_is_not_too_tall_for_its_width(width: float) -> None:
    heights = [0.6] * 20  # 12 inches in all
    limit = balanced_height(heights, width)
    columns = max(pack(heights, None, width)) + 1
    if sum(heights) <= min(MIN_WRAP_HEIGHT, MAX_ASPECT * (width - COLUMN_GUTTER)):
        assert columns == 1
    else:
        assert columns > 1
        assert limit <= MAX_ASPECT * (columns * width - COLUMN_GUTTER)


def exhaustive_height(heights: list[float], width: float, live: list[int]) -> float:
    """The column height `balanced_height` stands for, found by trying every column count."""
    total = sum(heights)

    def across(columns: int) -> float:
        return columns * width - COLUMN_GUTTER

    if total <= min(MIN_WRAP_HEIGHT, MAX_ASPECT * across(1)):
        return total
    most = 2 * math.ceil(math.sqrt(total / width)) + 1
    options = [(_least_height(heights, c, live), c) for c in range(1, most + 1)]
    slim = [o for o in options if o[0] <= MAX_ASPECT * across(o[1])] or options[-1:]
    return min(slim, key=lambda option: option[0] + option[1] * width)[0]


def diagram_cost(heights: list[float], limit: float, width: float, live: list[int]) -> float:
    columns = max(pack(heights, limit, width, live)) + 1
    return limit + columns * width


@settings(max_examples=60, deadline=None)
@given(
    heights=st.lists(st.sampled_from([0.6, 0.64, 0.8, 1.2, 2.9, 5.5]), min_size=5, max_size=250),
    width=st.floats(2.5, 5.0),
    data=st.data(),
)
def test_the_search_for_a_column_height_matches_trying_every_count(
    heights: list[float], width: float, data: Any
) -> None:
    live = data.draw(
        st.lists(st.integers(0, 3), min_size=len(heights) - 1, max_size=len(heights) - 1)
    )
    found = balanced_height(heights, width, live)
    best = exhaustive_height(heights, width, live)
    assert (
        diagram_cost(heights, found, width, live) <= diagram_cost(heights, best, width, live) + 1e-6
    )


def test_named_inputs_stay_in_the_column_of_the_input() -> None:
    model = Circuit(GetInput("mask", op=torch.mul), nn.ReLU(), inputs=("mask",))
    parts, _ = chunks(circuit_graph(model))
    assert parts[0] == [("node", "input:mask"), ("node", "input")]
