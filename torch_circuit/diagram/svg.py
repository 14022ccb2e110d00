"""A layout drawn as SVG markup, for the interactive HTML page (`html.py`).

Like the matplotlib renderer (`render.py`), this only draws a `Layout`: every position comes
from `layout.py`. Each layer is a `<g class="node">` carrying its module key (`data-key`) and
occurrence path (`data-id`); each frame a `<g class="frame">` carrying its block's name
(`data-block`), its `StartBlock` position (`data-decl`) and its place (`data-x`, `data-y`).
All text is escaped, so a layer whose `repr` holds markup shows it as text.
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Mapping

from .describe import DEFAULT_COLORS
from .geometry import (
    BOX_FONT,
    DOT_R,
    MARK_LINE_H,
    MERGE_R,
    SMALL_FONT,
    TAP_R,
    Box,
    Edge,
    Frame,
    Label,
    Layout,
    Point,
)

__all__ = ["PX", "layout_svg"]

PX = 96.0
"""CSS pixels per inch: the page shows the diagram at the size of the printed one."""

IO_KINDS = ("entry", "input", "output")
_ANCHOR = {"left": "start", "center": "middle", "right": "end"}
_BASELINE = {"top": "hanging", "center": "central", "bottom": "text-after-edge"}


def _num(value: float) -> str:
    return f"{value * PX:.1f}".rstrip("0").rstrip(".")


def _attr(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pt(size: float) -> str:
    """A font size in points as CSS pixels."""
    return f"{size * PX / 72:.2f}"


def layout_svg(layout: Layout, colors: Mapping[str, str] | None = None) -> str:
    """The SVG elements of `layout` (no `<svg>` root), in drawing order: frames, edges,
    nodes, frame labels."""
    palette = dict(DEFAULT_COLORS if colors is None else colors)
    labels = dict(zip((f.id for f in layout.frames), layout.labels, strict=True))
    parts: list[str] = []
    for frame in sorted(layout.frames, key=lambda f: f.depth):
        parts.append(_frame(layout, frame, labels[frame.id]))
    parts += (_edge(edge) for edge in layout.edges)
    parts += (_node(layout, box, palette) for box in layout.boxes)
    return "".join(parts)


def _frame(layout: Layout, frame: Frame, label: Label) -> str:
    info = layout.graph.frame(frame.id)
    repeat = "" if info.repeat is None else str(info.repeat)
    return (
        f'<g class="frame depth{min(frame.depth, 4)}" data-block="{_attr(info.block)}" '
        f'data-frame="{_attr(frame.id)}" data-decl="{info.position}" data-repeat="{repeat}" '
        f'data-repeats="{info.num_repeats}" data-x="{_num(frame.x)}" data-y="{_num(frame.y)}">'
        f'<rect x="{_num(frame.x)}" y="{_num(frame.y)}" width="{_num(frame.w)}" '
        f'height="{_num(frame.h)}" rx="7.7"/>{_text(label, "frame-label")}</g>'
    )


def _path(points: tuple[Point, ...]) -> str:
    head, *rest = points
    return f"M{_num(head[0])} {_num(head[1])}" + "".join(f"L{_num(x)} {_num(y)}" for x, y in rest)


def _edge(edge: Edge) -> str:
    kind = edge.kind
    arrow = "skip" if kind == "skip" else "flow"
    parts = [f'<g class="edge {kind}" data-source="{_attr(edge.source)}">']
    for path in edge.paths:
        parts.append(f'<path d="{_path(path)}" marker-end="url(#arrow-{arrow})"/>')
    for mark in edge.marks:
        parts.append(
            f'<rect class="mark" x="{_num(mark.x)}" y="{_num(mark.y)}" width="{_num(mark.w)}" '
            f'height="{_num(mark.h)}" rx="3.8"/>'
        )
        top = mark.y + mark.h / 2 - (len(mark.lines) - 1) * MARK_LINE_H / 2
        for index, line in enumerate(mark.lines):
            y = top + index * MARK_LINE_H
            parts.append(_plain(mark.x + mark.w / 2, y, line, SMALL_FONT, "middle", "mark-text"))
    for label in edge.labels:
        parts.append(_text(label, f"{label.kind}-label"))
    parts.append("</g>")
    return "".join(parts)


def _node(layout: Layout, box: Box, palette: Mapping[str, str]) -> str:
    node = layout.graph.node(box.id)
    family = "io" if box.kind in IO_KINDS else box.family
    opening = (
        f'<g class="node {box.kind} {family}" data-id="{_attr(box.id)}" '
        f'data-key="{_attr(node.key)}" data-kind="{box.kind}">'
    )
    return opening + "".join(_node_shapes(box, palette)) + "</g>"


def _node_shapes(box: Box, palette: Mapping[str, str]) -> Iterator[str]:
    if box.kind == "tap":
        cx, cy, r = box.cx, box.cy, TAP_R
        corners = ((cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy))
        yield f'<polygon points="{" ".join(f"{_num(x)},{_num(y)}" for x, y in corners)}"/>'
        return
    if box.kind == "save":
        yield f'<circle cx="{_num(box.cx)}" cy="{_num(box.cy)}" r="{_num(DOT_R)}"/>'
        return
    if box.kind == "merge":
        yield f'<circle cx="{_num(box.cx)}" cy="{_num(box.cy)}" r="{_num(MERGE_R)}"/>'
        symbol = box.lines[0]
        size = 9.0 if len(symbol) == 1 else 6.0
        yield _plain(box.cx, box.cy, symbol, size, "middle", "symbol")
        return
    fill = palette["io"] if box.kind in IO_KINDS else palette[box.family]
    yield (
        f'<rect x="{_num(box.x)}" y="{_num(box.y)}" width="{_num(box.w)}" '
        f'height="{_num(box.h)}" rx="5.8" fill="{_attr(fill)}"/>'
    )
    line_h = box.h / len(box.lines)
    for index, line in enumerate(box.lines):
        y = box.y + line_h * (index + 0.5)
        size, style = (BOX_FONT, "line") if index == 0 else (SMALL_FONT, "detail")
        yield _plain(box.cx, y, line, size, "middle", style)


def _text(label: Label, style: str) -> str:
    return (
        f'<text class="{style}" x="{_num(label.x)}" y="{_num(label.y)}" '
        f'font-size="{_pt(label.size)}" text-anchor="{_ANCHOR[label.ha]}" '
        f'dominant-baseline="{_BASELINE[label.va]}">{html.escape(label.text)}</text>'
    )


def _plain(x: float, y: float, text: str, size: float, anchor: str, style: str) -> str:
    return (
        f'<text class="{style}" x="{_num(x)}" y="{_num(y)}" font-size="{_pt(size)}" '
        f'text-anchor="{anchor}" dominant-baseline="central">{html.escape(text)}</text>'
    )
