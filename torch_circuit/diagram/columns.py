"""Where a long diagram wraps into columns.

A diagram is cut into chunks at the places a column may end (between top-level items: never
inside a frame), and the chunks are packed into columns next-fit, at the column height that
makes the diagram about as wide as it is tall and never much taller than wide. A skip live
across a cut runs down its lane to the foot of the column, across the gutter and on in the
next column (see `layout.py`); where a cut with no live skip is as good, it is preferred.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Callable, Sequence

from .geometry import COLUMN_GUTTER, FRAME_FOOTER, FRAME_HEADER, GAP, MAX_ASPECT, MIN_WRAP_HEIGHT
from .graph import Graph, GraphNode, GraphSkip, Item

__all__ = ["chunk_height", "chunks", "pack", "skips_by_column"]


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
    live: list[int] = []  # a heap of the last-read indices of the skips live here
    items = graph.items
    for index, item in enumerate(items):
        kind = item[0]
        result[-1].append(item)
        depth += {"open": 1, "close": -1}.get(kind, 0)
        if index in ends:
            heapq.heappush(live, ends[index])
        while live and live[0] <= index:
            heapq.heappop(live)
        following = items[index + 1] if index + 1 < len(items) else None
        entry = kind == "node" and graph.node(item[1]).kind == "entry"  # stays with the input
        if kind != "open" and depth == 0 and following is not None and not entry:
            result.append([])
            live_at_cut.append(len(live))
    return result, live_at_cut


def skips_by_column(
    graph: Graph, columns: Sequence[Sequence[Item]]
) -> tuple[dict[str, tuple[int, int]], list[list[GraphSkip]]]:
    """The first and last column of every skip with a reader, and the skips that run in each
    column (one without a reader: in its save's), given each column's items."""
    where = {
        item_id: c for c, items in enumerate(columns) for kind, item_id in items if kind == "node"
    }
    spans: dict[str, tuple[int, int]] = {}
    running: list[list[GraphSkip]] = [[] for _ in columns]
    for skip in graph.skips:
        first = last = where[skip.save]
        if skip.reads:
            last = max(where[read.node] for read in skip.reads)
            spans[skip.id] = (first, last)
        for column in range(first, last + 1):
            running[column].append(skip)
    return spans, running


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

    @functools.cache
    def height(columns: int) -> float:
        return _least_height(heights, columns, live)

    def slim(columns: int) -> bool:
        return height(columns) <= MAX_ASPECT * width(columns)

    def cost(columns: int) -> float:
        return height(columns) + columns * column_width

    # More columns only make the diagram lower and wider: the slim counts are those from the
    # fewest slim one on (a bisection), and the cost falls then rises over them (a ternary
    # search, then a look at the neighbours where chunks make it uneven). A few dozen packings
    # in all, however many columns a long model needs.
    fewest = _first(1, most, slim)
    low, high = fewest, most
    while high - low > 4:
        third = (high - low) // 3
        if cost(low + third) <= cost(high - third):
            high = high - third
        else:
            low = low + third
    best = min(range(low, high + 1), key=cost)
    best = min(range(max(fewest, best - 4), min(most, best + 4) + 1), key=cost)
    return height(best)


def _first(low: int, high: int, holds: Callable[[int], bool]) -> int:
    """The least of `low..high` where `holds` (false, then true from some point) is true;
    `high` if it never is."""
    while low < high:
        middle = (low + high) // 2
        if holds(middle):
            high = middle
        else:
            low = middle + 1
    return low


PREFER_QUIET_CUT = 0.25
"""How much of a column's height may be given up to end it at a cut with fewer live skips."""


def _next_fit(
    heights: Sequence[float],
    limit: float,
    live: Sequence[int] | None = None,
    most: int | None = None,
) -> list[int]:
    """The column of each chunk when a column is closed as soon as the next would overflow
    (or at a cut a little earlier with fewer skips live across it); with `most`, the packing
    stops where it needs more than `most` columns (the chunks after are left out)."""
    groups: list[int] = []
    column, used = 0, 0.0
    for index, height in enumerate(heights):
        if groups and used + height > limit + 1e-9:
            start = _quieter_start(groups, heights, live, index, limit) if live else index
            for earlier in range(start, index):
                groups[earlier] = column + 1
            column, used = column + 1, sum(heights[start:index])
            if most is not None and column >= most:
                groups.append(column)
                return groups
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
    # Bisection (next-fit needs more columns as the height shrinks), to a thousandth of an
    # inch: about 20 packings for a model hundreds of inches long.
    for _ in range(60):
        if high - low <= 1e-3:
            break
        middle = (low + high) / 2
        if _next_fit(heights, middle, live, columns)[-1] + 1 <= columns:
            high = middle
        else:
            low = middle
    return high
