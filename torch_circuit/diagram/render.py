"""Draw a `Circuit`'s layout with matplotlib.

The layout (`layout.py`) decides every position; this module only draws it. matplotlib is
imported inside the functions, so `import torch_circuit` does not pay for it. Figures are
`CircuitFigure`s, created without `pyplot` unless the caller asks for a figure that pyplot
manages (to show it in a window): nothing is registered globally otherwise, and the figure
displays inline in a notebook, as the interactive page where it knows its circuit.
"""

from __future__ import annotations

import functools
import html
import io
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .describe import COLOR_KEYS, DEFAULT_COLORS
from .geometry import BOX_FONT, DOT_R, MERGE_R, SMALL_FONT, TAP_R, Box, Edge, Layout

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["PNG_DPI", "check_figsize", "draw_layout", "resolve_colors"]

EDGE_COLOR = "#4a4a4a"
TEXT_COLOR = "#1a1a1a"
MUTED_COLOR = "#5a5a5a"
PNG_DPI = 150
IO_KINDS = ("entry", "input", "output")


# --- Checking the arguments before any work ---


def resolve_colors(color_map: Mapping[str, str] | None) -> dict[str, str]:
    """`DEFAULT_COLORS` updated by `color_map`, whose keys and colours are checked."""
    from matplotlib.colors import is_color_like

    colors = dict(DEFAULT_COLORS)
    if color_map is None:
        return colors
    if not isinstance(color_map, Mapping):
        raise TypeError(
            f"color_map must be a mapping from layer family to colour, got "
            f"{type(color_map).__name__}; e.g. color_map={{'conv': 'tab:blue'}}."
        )
    unknown = sorted(str(key) for key in color_map if key not in COLOR_KEYS)
    if unknown:
        raise ValueError(
            f"color_map has unknown keys {unknown}; valid keys are {list(COLOR_KEYS)}. "
            "Rename them, e.g. color_map={'conv': 'tab:blue'}."
        )
    for key, color in color_map.items():
        if not is_color_like(color):
            raise ValueError(
                f"color_map[{key!r}] = {color!r} is not a matplotlib colour; use a name "
                "('tab:blue'), a hex string ('#1f77b4') or an RGB tuple."
            )
    colors.update(color_map)
    return colors


def check_figsize(figsize: tuple[float, float] | None) -> None:
    """Refuse a `figsize` that is not two positive numbers."""
    if figsize is None:
        return
    valid = (
        isinstance(figsize, tuple | list)
        and len(figsize) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in figsize)
    )
    if not valid:
        raise ValueError(
            f"figsize must be (width, height) in inches, both positive, got {figsize!r}; "
            "e.g. figsize=(8, 12), or leave it out to follow the content."
        )


# --- Drawing ---


def draw_layout(
    layout: Layout,
    *,
    figsize: tuple[float, float] | None = None,
    colors: Mapping[str, str] | None = None,
    dpi: float = PNG_DPI,
    managed: bool = False,
) -> Figure:
    """A new `Figure` showing `layout`; text is scaled with `figsize` when one is given.

    `dpi` is the figure's own resolution: that of the image a notebook shows for it.
    `managed=True` creates it through `pyplot`, so that `plt.show()` and `figure.show()`
    show it in a window like any pyplot figure.
    """
    palette = dict(DEFAULT_COLORS if colors is None else colors)
    width, height = max(layout.width, 0.5), max(layout.height, 0.5)
    size = (width, height) if figsize is None else (float(figsize[0]), float(figsize[1]))
    scale = min(size[0] / width, size[1] / height)
    figure: Figure
    if managed:
        import matplotlib.pyplot as plt

        figure = plt.figure(figsize=size, dpi=dpi, FigureClass=_figure_class())
    else:
        figure = _figure_class()(figsize=size, dpi=dpi)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    # Centre the content; keep inches square when figsize changes the aspect.
    span_x, span_y = size[0] / scale, size[1] / scale
    axes.set_xlim((width - span_x) / 2, (width + span_x) / 2)
    axes.set_ylim((height + span_y) / 2, (height - span_y) / 2)
    axes.set_axis_off()
    _Painter(axes, palette, scale).paint(layout)
    return figure


@functools.cache
def _figure_class() -> type[Figure]:
    """`CircuitFigure`: a `Figure` that shows itself in a notebook without pyplot.

    Created on first use so that importing this module does not import matplotlib.
    """
    from matplotlib.figure import Figure

    class CircuitFigure(Figure):
        """A circuit diagram; displays inline in Jupyter as the interactive page where it was
        given one (`visualize` does), else as PNG, even if pyplot was never set up."""

        page: Callable[[], str] | None = None
        """Makes the interactive page of the diagram (`html.circuit_html`), for notebooks."""

        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi="figure")
            return buffer.getvalue()

        def _repr_html_(self) -> str | None:
            if self.page is None:
                return None
            height = min(720, max(320, int(self.get_size_inches()[1] * 96) + 60))
            return (
                f'<iframe srcdoc="{html.escape(self.page(), quote=True)}" '
                'sandbox="allow-scripts" title="circuit diagram" '
                f'style="width: 100%; height: {height}px; border: 1px solid #ddd"></iframe>'
            )

        def __getstate__(self) -> dict[str, Any]:
            state: dict[str, Any] = dict(super().__getstate__())  # type: ignore[call-overload]
            state.pop("page", None)  # holds the circuit: a pickled figure is only a picture
            return state

    CircuitFigure.__module__ = __name__
    CircuitFigure.__qualname__ = "CircuitFigure"  # picklable, found via __getattr__ below
    return CircuitFigure


def __getattr__(name: str) -> Any:
    if name == "CircuitFigure":
        return _figure_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Painter:
    def __init__(self, axes: Axes, colors: Mapping[str, str], scale: float) -> None:
        self.axes = axes
        self.colors = colors
        self.scale = scale

    def font(self, size: float) -> float:
        return size * self.scale

    def paint(self, layout: Layout) -> None:
        for frame in sorted(layout.frames, key=lambda f: f.depth):
            self.frame(frame.x, frame.y, frame.w, frame.h, frame.depth)
        for edge in layout.edges:
            self.edge(edge)
        for box in layout.boxes:
            self.box(box)
        for label in layout.labels:
            self.text(
                label.x,
                label.y,
                label.text,
                label.size,
                label.ha,
                label.va,
                color=MUTED_COLOR,
                weight="bold",
            )

    def frame(self, x: float, y: float, w: float, h: float, depth: int) -> None:
        from matplotlib.patches import FancyBboxPatch

        shade = max(0.88, 0.975 - 0.03 * (depth - 1))  # nested frames a little darker
        self.axes.add_patch(
            FancyBboxPatch(
                (x, y),
                w,
                h,
                boxstyle="round,pad=0,rounding_size=0.08",
                facecolor=(shade, shade, min(1.0, shade + 0.01)),
                edgecolor="#8c8c8c",
                linewidth=0.8 * self.scale,
                linestyle=(0, (4, 2)),
                zorder=0,
            )
        )

    def box(self, box: Box) -> None:
        from matplotlib.patches import Circle, FancyBboxPatch, RegularPolygon

        if box.kind == "tap":
            self.axes.add_patch(
                RegularPolygon(
                    (box.cx, box.cy),
                    4,
                    radius=TAP_R,
                    facecolor=EDGE_COLOR,
                    edgecolor="none",
                    zorder=3,
                )
            )
            return
        if box.kind == "save":
            self.axes.add_patch(
                Circle(
                    (box.cx, box.cy),
                    DOT_R,
                    facecolor=self.colors["skip"],
                    edgecolor="none",
                    zorder=3,
                )
            )
            return
        if box.kind == "merge":
            self.axes.add_patch(
                Circle(
                    (box.cx, box.cy),
                    MERGE_R,
                    facecolor="white",
                    edgecolor=self.colors["skip"],
                    linewidth=1.2 * self.scale,
                    zorder=3,
                )
            )
            symbol = box.lines[0]
            self.text(
                box.cx,
                box.cy,
                symbol,
                9 if len(symbol) == 1 else 6,
                "center",
                "center",
                color=self.colors["skip"],
                weight="bold",
            )
            return
        color = self.colors["io"] if box.kind in IO_KINDS else self.colors[box.family]
        self.axes.add_patch(
            FancyBboxPatch(
                (box.x, box.y),
                box.w,
                box.h,
                boxstyle="round,pad=0,rounding_size=0.06",
                facecolor=color,
                edgecolor="#555555",
                linewidth=0.8 * self.scale,
                zorder=2,
            )
        )
        lines = box.lines
        line_h = box.h / len(lines)
        for index, line in enumerate(lines):
            y = box.y + line_h * (index + 0.5)
            first = index == 0
            self.text(
                box.cx,
                y,
                line,
                BOX_FONT if first else SMALL_FONT,
                "center",
                "center",
                color=TEXT_COLOR if first else MUTED_COLOR,
                style="italic" if box.kind in IO_KINDS else "normal",
            )

    def edge(self, edge: Edge) -> None:
        color = self.colors["skip"] if edge.kind == "skip" else EDGE_COLOR
        width = (1.1 if edge.kind == "skip" else 0.9) * self.scale
        for path in edge.paths:
            xs = [point[0] for point in path]
            ys = [point[1] for point in path]
            self.axes.plot(
                xs,
                ys,
                color=color,
                linewidth=width,
                zorder=1,
                solid_capstyle="butt",
                solid_joinstyle="miter",
            )
            self.arrow(path[-2], path[-1], color)
        tap = edge.kind == "tap"  # its mark names an output, styled as the output box
        for mark in edge.marks:
            from matplotlib.patches import FancyBboxPatch

            self.axes.add_patch(
                FancyBboxPatch(
                    (mark.x, mark.y),
                    mark.w,
                    mark.h,
                    boxstyle="round,pad=0,rounding_size=0.04",
                    facecolor=self.colors["io"] if tap else "white",
                    edgecolor=color,
                    linewidth=0.8 * self.scale,
                    zorder=2,
                )
            )
            self.text(
                mark.x + mark.w / 2,
                mark.y + mark.h / 2,
                mark.text,
                SMALL_FONT,
                "center",
                "center",
                color=TEXT_COLOR if tap else color,
                style="italic" if tap else "normal",
            )
        for label in edge.labels:
            self.text(
                label.x,
                label.y,
                label.text,
                label.size,
                label.ha,
                label.va,
                color=color if edge.kind == "skip" else MUTED_COLOR,
            )

    def arrow(self, start: tuple[float, float], end: tuple[float, float], color: str) -> None:
        from matplotlib.patches import FancyArrowPatch

        self.axes.add_patch(
            FancyArrowPatch(
                start,
                end,
                arrowstyle="-|>",
                mutation_scale=8 * self.scale,
                color=color,
                linewidth=0,
                shrinkA=0,
                shrinkB=0,
                zorder=1.5,
            )
        )

    def text(
        self, x: float, y: float, text: str, size: float, ha: str, va: str, **style: Any
    ) -> None:
        self.axes.text(
            x, y, text, fontsize=self.font(size), ha=ha, va=va, zorder=4, clip_on=False, **style
        )
