"""Where a long diagram wraps into columns.

A diagram is cut into chunks at the places a column may end (between top-level nodes, where
no skip is live), and the chunks are packed into columns next-fit, at the column height that
makes the diagram about as wide as it is tall.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .geometry import FRAME_FOOTER, FRAME_HEADER, GAP, MIN_WRAP_HEIGHT
from .graph import Graph, GraphNode, Item

__all__ = ["chunk_height", "chunks", "pack"]


def chunks(graph: Graph) -> list[list[Item]]:
    """The items split where a column may wrap: between top-level nodes, no skip live."""
    order = {item_id: i for i, (kind, item_id) in enumerate(graph.items) if kind == "node"}
    live_until: dict[int, int] = {}
    for skip in graph.skips:
        start = order[skip.save]
        end = max(order[r.node] for r in skip.reads) if skip.reads else start
        live_until[start] = max(live_until.get(start, start), end)
    result: list[list[Item]] = [[]]
    depth = 0
    live_end = -1
    items = graph.items
    for index, item in enumerate(items):
        kind = item[0]
        result[-1].append(item)
        depth += {"open": 1, "close": -1}.get(kind, 0)
        live_end = max(live_end, live_until.get(index, -1))
        following = items[index + 1] if index + 1 < len(items) else None
        if (
            kind != "open"
            and depth == 0
            and live_end <= index
            and following is not None
            and following[0] != "close"
        ):
            result.append([])
    return [chunk for chunk in result if chunk]


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


def pack(heights: Sequence[float], max_height: float | None, column_width: float) -> list[int]:
    """The column of each chunk, given the chunks' heights.

    Args:
        heights: each chunk's height, in order.
        max_height: the tallest a column may be; by default the height that makes the
            diagram's width plus height least (see `balanced_height`).
        column_width: the width a column takes, with its frames, lanes and gutter.
    """
    if max_height is None:
        max_height = balanced_height(heights, column_width)
    return _next_fit(heights, max(max_height, *heights))


def balanced_height(heights: Sequence[float], column_width: float) -> float:
    """The column height that makes the diagram's width plus height least: as square as the
    content allows, without a column that would only shave a few rows off the others.
    Diagrams shorter than `MIN_WRAP_HEIGHT` stay in one column."""
    total = sum(heights)
    if total <= MIN_WRAP_HEIGHT:
        return total
    most = 2 * math.ceil(math.sqrt(total / column_width))
    options = [(_least_height(heights, c), c) for c in range(1, most + 1)]
    height, _ = min(options, key=lambda option: option[0] + option[1] * column_width)
    return height


def _next_fit(heights: Sequence[float], limit: float) -> list[int]:
    """The column of each chunk when a column is closed as soon as the next would overflow."""
    groups: list[int] = []
    column, used = 0, 0.0
    for height in heights:
        if groups and used + height > limit + 1e-9:
            column, used = column + 1, 0.0
        groups.append(column)
        used += height
    return groups


def _least_height(heights: Sequence[float], columns: int) -> float:
    """The least column height at which `_next_fit` needs at most `columns` columns."""
    low, high = max(heights), sum(heights)
    for _ in range(40):  # bisection: next-fit needs more columns as the height shrinks
        middle = (low + high) / 2
        if max(_next_fit(heights, middle)) + 1 <= columns:
            high = middle
        else:
            low = middle
    return high
