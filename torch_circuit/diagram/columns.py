"""Where a long diagram wraps into columns.

A diagram is cut into chunks at the places a column may end (between top-level items: never
inside a frame), and the chunks are packed into columns next-fit, at the column height that
makes the diagram about as wide as it is tall and never much taller than wide. A skip live
across a cut runs down its lane to the foot of the column, across the gutter and on in the
next column (see `layout.py`); where a cut with no live skip is as good, it is preferred.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .geometry import COLUMN_GUTTER, FRAME_FOOTER, FRAME_HEADER, GAP, MAX_ASPECT, MIN_WRAP_HEIGHT
from .graph import Graph, GraphNode, Item

__all__ = ["chunk_height", "chunks", "pack"]


def chunks(graph: Graph) -> tuple[list[list[Item]], list[int]]:
    """The items split where a column may wrap (between top-level items), and for each cut
    (after chunk `i`) how many skips are live across it."""
    order = {item_id: i for i, (kind, item_id) in enumerate(graph.items) if kind == "node"}
    ends: dict[int, int] = {}  # a save's item index -> its last read's
    for skip in graph.skips:
        start = order[skip.save]
        ends[start] = max(order[r.node] for r in skip.reads) if skip.reads else start
    result: list[list[Item]] = [[]]
    live_at_cut: list[int] = []
    depth = 0
    live: list[int] = []  # the last-read indices of the skips live here
    items = graph.items
    for index, item in enumerate(items):
        kind = item[0]
        result[-1].append(item)
        depth += {"open": 1, "close": -1}.get(kind, 0)
        if index in ends:
            live.append(ends[index])
        live = [end for end in live if end > index]
        following = items[index + 1] if index + 1 < len(items) else None
        if kind != "open" and depth == 0 and following is not None:
            result.append([])
            live_at_cut.append(len(live))
    return result, live_at_cut


def chunk_height(
    chunk: Sequence[Item], graph: Graph, node_height: Callable[[GraphNode], float]
) -> float:
    """The height a chunk takes in a column."""
    height = 0.0
    for kind, item_id in chunk:
        if kind == "node":
            height += GAP + node_height(graph.node(item_id))
        elif kind == "open":
            height += GAP / 2 + FRAME_HEADER
        else:
            height += FRAME_FOOTER
    return height


def pack(
    heights: Sequence[float],
    max_height: float | None,
    column_width: float,
    live: Sequence[int] | None = None,
) -> list[int]:
    """The column of each chunk, given the chunks' heights.

    Args:
        heights: each chunk's height, in order.
        max_height: the tallest a column may be; by default the height that makes the
            diagram's width plus height least (see `balanced_height`).
        column_width: the width a column takes, with its frames, lanes and gutter.
        live: for each cut, the skips live across it: a column ends a little early rather
            than at a cut with more live skips than a nearby one.
    """
    if max_height is None:
        max_height = balanced_height(heights, column_width, live)
    return _next_fit(heights, max(max_height, *heights), live)


def balanced_height(
    heights: Sequence[float], column_width: float, live: Sequence[int] | None = None
) -> float:
    """The column height that makes the diagram's width plus height least: as square as the
    content allows, without a column that would only shave a few rows off the others, and
    no taller than `MAX_ASPECT` times the width where the chunks allow. Diagrams shorter than
    `MIN_WRAP_HEIGHT` and not too tall for their width stay in one column."""
    total = sum(heights)

    def width(columns: int) -> float:  # less the gutter after the last column
        return columns * column_width - COLUMN_GUTTER

    if total <= min(MIN_WRAP_HEIGHT, MAX_ASPECT * width(1)):
        return total
    most = 2 * math.ceil(math.sqrt(total / column_width)) + 1
    options = [(_least_height(heights, c, live), c) for c in range(1, most + 1)]
    slim = [o for o in options if o[0] <= MAX_ASPECT * width(o[1])] or options[-1:]
    height, _ = min(slim, key=lambda option: option[0] + option[1] * column_width)
    return height


PREFER_QUIET_CUT = 0.25
"""How much of a column's height may be given up to end it at a cut with fewer live skips."""


def _next_fit(
    heights: Sequence[float], limit: float, live: Sequence[int] | None = None
) -> list[int]:
    """The column of each chunk when a column is closed as soon as the next would overflow
    (or at a cut a little earlier with fewer skips live across it)."""
    groups: list[int] = []
    column, used = 0, 0.0
    for index, height in enumerate(heights):
        if groups and used + height > limit + 1e-9:
            start = _quieter_start(groups, heights, live, index, limit) if live else index
            for earlier in range(start, index):
                groups[earlier] = column + 1
            column, used = column + 1, sum(heights[start:index])
        groups.append(column)
        used += height
    return groups


def _quieter_start(
    groups: list[int], heights: Sequence[float], live: Sequence[int], index: int, limit: float
) -> int:
    """Where the next column starts: `index`, or an earlier chunk of the same column after a
    cut with fewer live skips, no more than `PREFER_QUIET_CUT` of a column back."""
    best, best_live = index, live[index - 1]
    given_up = 0.0
    start = index - 1
    while start > 0 and groups[start - 1] == groups[index - 1]:
        given_up += heights[start]
        if given_up > PREFER_QUIET_CUT * limit:
            break
        if live[start - 1] < best_live:
            best, best_live = start, live[start - 1]
        start -= 1
    return best


def _least_height(heights: Sequence[float], columns: int, live: Sequence[int] | None) -> float:
    """The least column height at which `_next_fit` needs at most `columns` columns."""
    low, high = max(heights), sum(heights)
    for _ in range(40):  # bisection: next-fit needs more columns as the height shrinks
        middle = (low + high) / 2
        if max(_next_fit(heights, middle, live)) + 1 <= columns:
            high = middle
        else:
            low = middle
    return high
