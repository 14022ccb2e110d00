"""The interactive diagram: one self-contained HTML page, `circuit_html`.

Every view the page can show is laid out here, in Python, by the same `layout_graph` as the
static diagram: a view says which block declarations (`StartBlock`s) are expanded. Each view's
layout is drawn as SVG (`svg.py`) into a `<template>`; the page's script (`page.js`) only
swaps the template on show when a frame is clicked, and keeps the clicked frame where it was
on screen. No layout is computed in the browser, so every view keeps the static diagram's
rules (no overlaps, separate lanes, wrapped columns), and a click costs one DOM swap.

Which views are made: every combination of the repeated blocks (those with more than one
repeat) while that is at most `MAX_VIEWS`; past that, the folded view and each block
expanded alone (expanding one block then folds the others). A view that would draw more
than `view.MAX_DRAWN` nodes is left out, and its block says so when clicked.
"""

from __future__ import annotations

import functools
import html
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from torch import Tensor, nn

from ..nodes import InputNode, input_path
from ..scope import Scope
from ..shapes import ShapeTrace
from .describe import DEFAULT_COLORS, format_shape
from .geometry import Direction
from .graph import Graph, InputShapes, circuit_graph, trace_for
from .layout import layout_graph
from .svg import PX, layout_svg
from .view import MAX_DRAWN, block_declarations, check_drawable, drawn_size

__all__ = ["MAX_VIEWS", "PageViews", "circuit_html", "page_views"]

MAX_VIEWS = 64
"""The most views a page holds: every combination of up to 6 repeated blocks."""

ViewMode = Literal["any", "one"]
"""`any`: every combination of expanded blocks; `one`: one block expanded at a time."""


@dataclass(frozen=True)
class PageViews:
    """The views a page holds, each a set of expanded `StartBlock` positions, folded first;
    `toggles` are the blocks a click can expand, `missing` those too large to expand."""

    views: tuple[frozenset[int], ...]
    toggles: tuple[int, ...]
    mode: ViewMode
    missing: tuple[int, ...]


def page_views(circuit: Scope) -> PageViews:
    """Which views a page of `circuit` holds (see the module docstring)."""
    toggles = tuple(b.position for b in block_declarations(circuit.nodes) if b.num_repeats > 1)
    mode: ViewMode = "any" if 2 ** len(toggles) <= MAX_VIEWS else "one"
    if mode == "any":
        candidates = [
            frozenset(chosen)
            for count in range(len(toggles) + 1)
            for chosen in itertools.combinations(toggles, count)
        ]
    else:
        candidates = [frozenset(), *(frozenset((t,)) for t in toggles)]
    views = tuple(v for v in candidates if drawn_size(circuit.nodes, v) <= MAX_DRAWN)
    missing = tuple(t for t in toggles if not any(t in v for v in views))
    return PageViews(views, toggles, mode, missing)


def view_key(view: frozenset[int]) -> str:
    """How the page names a view: its expanded positions in order, joined by commas."""
    return ",".join(str(position) for position in sorted(view))


def circuit_html(
    circuit: Scope,
    *,
    input_shape: Sequence[int] | Tensor | None = None,
    colors: Mapping[str, str] | None = None,
    max_column_height: float | None = None,
    title: str | None = None,
    expanded: bool = False,
    direction: Direction = "down",
    input_shapes: InputShapes | None = None,
    trace: ShapeTrace | None = None,
) -> str:
    """The interactive page of `circuit`'s diagram, as HTML text.

    Args:
        circuit: a `Circuit`.
        input_shape: an input shape (or example tensor): shapes on every edge and in the
            details shown on hover.
        colors: colours by layer family, `skip` and `io`, over `DEFAULT_COLORS` (any
            matplotlib colour).
        max_column_height: as for `layout_circuit`.
        title: the page title; by default the circuit's class and size.
        expanded: open with every block expanded (where the page holds that view) instead
            of folded.
        direction: as for `layout_circuit`: columns (`"down"`) or rows (`"right"`).
        input_shapes: a shape or example tensor for each named input (with `input_shape`).
        trace: shapes already traced, instead of `input_shape` and `input_shapes`.

    Raises:
        ValueError: the folded diagram alone would draw more than `view.MAX_DRAWN` nodes.

    Examples:
        >>> page = circuit_html(model, input_shape=(1, 3, 32, 32))
        >>> page.startswith("<!DOCTYPE html>")
        True
    """
    check_drawable(circuit.nodes, False)
    views = page_views(circuit)
    palette = {**DEFAULT_COLORS, **_hex_colors(colors or {})}
    if trace is None:
        trace = trace_for(circuit, input_shape, input_shapes)
    templates: list[str] = []
    details: dict[str, dict[str, object]] = {}
    for view in views.views:
        graph = circuit_graph(circuit, view=view, trace=trace)
        layout = layout_graph(graph, max_column_height=max_column_height, direction=direction)
        templates.append(
            f'<template data-view="{view_key(view)}" data-width="{layout.width * PX:.0f}" '
            f'data-height="{layout.height * PX:.0f}"><svg xmlns="http://www.w3.org/2000/svg">'
            f"{layout_svg(layout, palette)}</svg></template>"
        )
        details.update(_details(circuit, graph, trace, details))
    everything = frozenset(views.toggles)
    config = {
        "initial": view_key(everything) if expanded and everything in views.views else "",
        "mode": views.mode,
        "toggles": list(views.toggles),
        "missing": list(views.missing),
        "shapes": trace is not None,
        "details": details,
    }
    size = drawn_size(circuit.nodes, True)
    heading = title or f"{type(circuit).__name__} · {size:,} layers, saves and reads"
    return _page(heading, "".join(templates), config, palette)


def _hex_colors(colors: Mapping[str, str]) -> dict[str, str]:
    """Any matplotlib colours as the `#rrggbb` strings SVG and CSS take."""
    if not colors:
        return {}
    from matplotlib.colors import to_hex

    return {key: to_hex(value) for key, value in colors.items()}


def _details(
    circuit: Scope, graph: Graph, trace: ShapeTrace | None, known: Mapping[str, object]
) -> dict[str, dict[str, object]]:
    """What hovering each node shows, by occurrence path: its repr, key, parameter count and
    output shape (`None` without an input shape, or where the value is not a tensor)."""
    found: dict[str, dict[str, object]] = {}
    inputs = {input_path(entry.name): entry for entry in circuit.input_nodes}
    for node in graph.nodes:
        if node.id in known:
            continue
        if node.kind == "entry":
            text, shape = _entry_text(inputs[node.id]), node.out_shape
        elif node.kind in ("input", "output"):
            shape = node.out_shape if node.kind == "input" else node.in_shape
            text = "the tensor passed to forward" if node.kind == "input" else "forward's result"
        else:
            text = _repr(circuit, node.key)
            shape = node.out_shape
        found[node.id] = {
            "repr": text,
            "key": node.key,
            "params": node.params,
            "shape": None if trace is None or shape is None else format_shape(shape),
        }
    return found


def _entry_text(entry: InputNode) -> str:
    """What hovering a named input's entry says: its place in `forward` and its default."""
    given = "required" if entry.required else f"default {entry.default!r}"
    readers = ", ".join(str(position) for position in entry.readers)
    return f"named input {entry.name!r} of forward ({given}); read at positions {readers}"


def _repr(circuit: Scope, key: str) -> str:
    module: nn.Module = circuit.get_submodule(key)
    return repr(module)


@functools.cache
def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _page(
    title: str, templates: str, config: Mapping[str, object], colors: Mapping[str, str]
) -> str:
    # `<` is escaped in the JSON so that no text of a repr can close the script element.
    data = json.dumps(config, ensure_ascii=False).replace("<", "\\u003c")
    skip = html.escape(colors["skip"], quote=True)
    io = html.escape(colors["io"], quote=True)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>:root{{--skip:{skip};--io:{io}}}"
        f"{_asset('page.css')}</style></head><body>"
        '<header><span class="title">'
        f"{html.escape(title)}</span>"
        '<button type="button" id="fold-all" title="Fold every block">Fold all</button>'
        '<button type="button" id="expand-all" title="Expand every block">Expand all</button>'
        '<button type="button" id="zoom-in" title="Zoom in (+)">+</button>'
        '<button type="button" id="zoom-out" title="Zoom out (-)">−</button>'
        '<button type="button" id="fit" title="Fit to the window (0)">Fit</button>'
        '<input id="find" type="search" placeholder="find a key, e.g. resnet.1.5" '
        'aria-label="find a layer by its key">'
        '<span id="status" role="status"></span></header>'
        '<main id="stage"><svg id="view" xmlns="http://www.w3.org/2000/svg"><defs>'
        '<marker id="arrow-flow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z"/></marker>'
        '<marker id="arrow-skip" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z"/></marker>'
        '</defs><g id="camera"></g></svg><div id="tip" hidden></div></main>'
        f"{templates}"
        f'<script type="application/json" id="circuit-data">{data}</script>'
        f"<script>{_asset('page.js')}</script></body></html>\n"
    )
