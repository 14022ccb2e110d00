"""The drawing rules every layout keeps, checked on layouts as plain data: boxes never
overlap, frames hold their boxes, overlapping skips take their own lanes, no edge crosses a
box, no two edges share a segment, text fits its box; marks (transforms, output names) hold
their text and sit clear of boxes, marks and other edges; named inputs stay off the flow,
every output has its tap and every value a read takes its own arrival."""

from __future__ import annotations

import itertools
from typing import Any

from torch_circuit.diagram.describe import text_width
from torch_circuit.diagram.geometry import Edge, Layout

EPS = 1e-9


# --- The drawing rules, checked on any layout ---


def interiors_overlap(a: Any, b: Any) -> bool:
    return (
        a.x < b.x + b.w - EPS
        and b.x < a.x + a.w - EPS
        and a.y < b.y + b.h - EPS
        and b.y < a.y + a.h - EPS
    )


def segment_crosses_box(p: tuple[float, float], q: tuple[float, float], box: Any) -> bool:
    """Whether an axis-aligned segment enters the open interior of ``box``."""
    x0, x1 = sorted((p[0], q[0]))
    y0, y1 = sorted((p[1], q[1]))
    return (
        x0 < box.x + box.w - EPS
        and x1 > box.x + EPS
        and y0 < box.y + box.h - EPS
        and (y1 > box.y + EPS)
    )


def shared_length(a: tuple[Any, Any], b: tuple[Any, Any]) -> float:
    """How long two axis-aligned segments run along each other (0 when they only cross)."""
    (ax0, ay0), (ax1, ay1) = a
    (bx0, by0), (bx1, by1) = b
    if ax0 == ax1 == bx0 == bx1:
        lo, hi = max(min(ay0, ay1), min(by0, by1)), min(max(ay0, ay1), max(by0, by1))
        return max(0.0, hi - lo)
    if ay0 == ay1 == by0 == by1:
        lo, hi = max(min(ax0, ax1), min(bx0, bx1)), min(max(ax0, ax1), max(bx0, bx1))
        return max(0.0, hi - lo)
    return 0.0


def contains(outer: Any, inner: Any) -> bool:
    return (
        outer.x <= inner.x + EPS
        and outer.y <= inner.y + EPS
        and inner.x + inner.w <= outer.x + outer.w + EPS
        and inner.y + inner.h <= outer.y + outer.h + EPS
    )


def skip_span(edge: Edge, layout: Layout) -> tuple[float, float]:
    """Where a skip's lane runs along: down a column (y), or along a row (x)."""
    boxes = [layout.box(edge.source), *(layout.box(t) for t in edge.targets)]
    along = [box.cx if layout.direction == "right" else box.cy for box in boxes]
    return min(along), max(along)


def check_rules(layout: Layout) -> None:
    boxes = layout.boxes
    for a, b in itertools.combinations(boxes, 2):
        assert not interiors_overlap(a, b), f"boxes {a.id} and {b.id} overlap"
    for box in boxes:
        assert box.x >= 0 and box.x + box.w <= layout.width + EPS, box
        assert box.y >= 0 and box.y + box.h <= layout.height + EPS, box
    frames = {frame.id: frame for frame in layout.frames}
    for box in boxes:
        for frame_id in layout.graph.node(box.id).frames:
            assert contains(frames[frame_id], box), f"frame {frame_id} misses box {box.id}"
    for frame in layout.frames:
        if frame.parent is not None:
            assert contains(frames[frame.parent], frame), f"{frame.id} pokes out of its parent"
    skips = [edge for edge in layout.edges if edge.kind == "skip" and edge.paths]
    skips = [edge for edge in skips if len(lanes_by_column(edge, layout)) == 1]  # not wrapped
    for a, b in itertools.combinations(skips, 2):
        if _same_column(a, b, layout) and _overlap(skip_span(a, layout), skip_span(b, layout)):
            assert a.lane != b.lane, f"{a.id} and {b.id} overlap in one lane"
    for edge in layout.edges:
        ends = {edge.source, *edge.targets}
        for p, q in edge.segments():
            for box in boxes:
                if box.id not in ends:
                    assert not segment_crosses_box(p, q, box), f"{edge.id} crosses {box.id}"
    for a, b in itertools.combinations(layout.edges, 2):
        for s in a.segments():
            for t in b.segments():
                assert shared_length(s, t) < EPS, f"{a.id} and {b.id} share a segment"
    for box in boxes:
        if box.kind in ("layer", "input", "output", "entry"):
            for line in box.lines:
                assert text_width(line, 8) <= box.w, f"text {line!r} overflows {box.id}"
    check_dataflow(layout)
    check_marks(layout)


def check_dataflow(layout: Layout) -> None:
    """Named inputs, outputs and reads of several values: an entry is off the flow and its
    lane reaches every reader; every output has its tap, named; every value a read takes
    arrives at its own place on the merge."""
    graph = layout.graph
    kinds = {box.id: box.kind for box in layout.boxes}
    for edge in layout.edges:
        if edge.kind == "flow":
            assert kinds[edge.source] != "entry" and kinds[edge.targets[0]] != "entry", edge.id
    taps = {edge.source: edge for edge in layout.edges if edge.kind == "tap"}
    for box in layout.boxes:
        if box.kind == "tap":
            (mark,) = taps[box.id].marks
            assert mark.lines == box.lines, f"the tap {box.id} does not name its output"
    ends = {edge.id: [path[-1] for path in edge.paths] for edge in layout.edges}
    for skip in graph.skips:
        if skip.reads:
            assert len(ends[skip.id]) == len(skip.reads), f"{skip.id} misses a read"
    arrivals = [end for found in ends.values() for end in found]
    assert len(arrivals) == len(set(arrivals)), "two values arrive at one place"
    has_outputs = any(node.kind == "tap" for node in graph.nodes)
    assert ("output" in kinds.values()) != has_outputs, "a circuit with outputs has no result"


def check_marks(layout: Layout) -> None:
    """Transform marks and the boxes naming outputs: they hold their text, overlap no box and
    no other mark, and no edge but their own runs through them."""
    marks = [(edge, mark) for edge in layout.edges for mark in edge.marks]
    for edge, mark in marks:
        for line in mark.lines:
            assert text_width(line, 7) <= mark.w + EPS, f"{line!r} overflows its mark"
        for box in layout.boxes:
            assert not interiors_overlap(mark, box), f"a mark of {edge.id} overlaps {box.id}"
        for other in layout.edges:
            if other is edge:
                continue
            for p, q in other.segments():
                assert not segment_crosses_box(p, q, mark), (
                    f"{other.id} crosses a mark of {edge.id}"
                )
    for (a_edge, a), (b_edge, b) in itertools.combinations(marks, 2):
        assert not interiors_overlap(a, b), f"marks of {a_edge.id} and {b_edge.id} overlap"


def lanes_by_column(edge: Edge, layout: Layout) -> dict[int, float]:
    """Where a skip's lane is in each column (x) or row (y) it runs through: it enters the
    next one's lane after each wrap (foot, gutter, top, lane; or right, down, left, lane)."""
    main = edge.paths[0]
    first = layout.box(edge.source).column
    crossings = (len(main) - 4) // 4
    axis = 1 if layout.direction == "right" else 0
    return {first + k: main[1 + 4 * k][axis] for k in range(crossings + 1)}


def _same_column(a: Edge, b: Edge, layout: Layout) -> bool:
    return layout.box(a.source).column == layout.box(b.source).column


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]
