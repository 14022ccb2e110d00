"""The highest level among intervals placed so far that overlap a new one, in `O(log n)`.

Lanes are assigned one object at a time: each takes the level just outside every earlier
object whose span overlaps its own (`lanes.lane_levels`). Comparing each object with all
earlier ones is quadratic in the skips of a column; `LevelIndex` answers the same question
with a segment tree over the spans' ends.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

__all__ = ["LevelIndex"]


class LevelIndex:
    """Intervals with a level each; asks the highest level among those overlapping a span.

    Spans are closed (`(0, 1)` and `(1, 2)` overlap), and every span placed or asked about
    must have its ends among `ends`.

    Examples:
        >>> index = LevelIndex([0.0, 1.0, 2.0, 3.0])
        >>> index.place((0.0, 1.0), 0)
        >>> index.highest((1.0, 3.0)), index.highest((2.0, 3.0))
        (0, -1)
    """

    def __init__(self, ends: Iterable[float]) -> None:
        self.points = sorted(set(ends))
        size = 1
        while size < max(1, len(self.points)):
            size *= 2
        self.size = size
        # `whole[n]`: the highest level placed over all of node n's points; `some[n]`: over
        # any of them. Levels only grow, so no update ever needs pushing down.
        self.whole = [-1] * (2 * size)
        self.some = [-1] * (2 * size)

    def _range(self, span: tuple[float, float]) -> tuple[int, int]:
        lo = bisect.bisect_left(self.points, span[0])
        hi = bisect.bisect_right(self.points, span[1]) - 1
        return lo, hi

    def place(self, span: tuple[float, float], level: int) -> None:
        """Record an interval at `level`."""
        lo, hi = self._range(span)
        self._place(1, 0, self.size - 1, lo, hi, level)

    def highest(self, span: tuple[float, float]) -> int:
        """The highest level of the intervals overlapping `span`, or -1 if none does."""
        lo, hi = self._range(span)
        return self._highest(1, 0, self.size - 1, lo, hi)

    def _place(self, node: int, left: int, right: int, lo: int, hi: int, level: int) -> None:
        if hi < left or right < lo:
            return
        self.some[node] = max(self.some[node], level)
        if lo <= left and right <= hi:
            self.whole[node] = max(self.whole[node], level)
            return
        middle = (left + right) // 2
        self._place(2 * node, left, middle, lo, hi, level)
        self._place(2 * node + 1, middle + 1, right, lo, hi, level)

    def _highest(self, node: int, left: int, right: int, lo: int, hi: int) -> int:
        if hi < left or right < lo:
            return -1
        if lo <= left and right <= hi:
            return self.some[node]
        middle = (left + right) // 2
        return max(
            self.whole[node],
            self._highest(2 * node, left, middle, lo, hi),
            self._highest(2 * node + 1, middle + 1, right, lo, hi),
        )
