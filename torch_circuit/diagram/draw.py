"""`visualize`: check the arguments, lay the diagram out, draw it, write it, show it.

One call serves every way a diagram is used. With a path, the diagram is written (PDF, PNG,
SVG by matplotlib; HTML as the interactive page) and nothing is shown. Without one, in a
notebook the returned figure displays as the interactive page; in a script or a terminal it is
shown in a window like any pyplot figure, and where there is no display a warning says how to
save it instead.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, BinaryIO

from torch import Tensor

from ..scope import Scope
from .files import FORMATS, check_save_path, write_atomically
from .geometry import Direction
from .graph import InputShapes, trace_for
from .html import circuit_html
from .layout import check_direction, layout_circuit
from .render import PNG_DPI, check_figsize, draw_layout, resolve_colors
from .view import check_drawable, resolve_expanded

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["NoDisplayWarning", "visualize"]


class NoDisplayWarning(UserWarning):
    """`visualize()` was asked to show a diagram where matplotlib has no display."""


def visualize(
    circuit: Scope,
    save_path: str | os.PathLike[str] | None = None,
    *,
    show_repeats: bool | None = None,
    expanded: bool | None = None,
    figsize: tuple[float, float] | None = None,
    color_map: Mapping[str, str] | None = None,
    input_shape: Sequence[int] | Tensor | None = None,
    max_column_height: float | None = None,
    dpi: float = PNG_DPI,
    show: bool | None = None,
    direction: Direction = "down",
    input_shapes: InputShapes | None = None,
) -> Figure:
    """Draw the circuit as a diagram and return the matplotlib `Figure`.

    `model.visualize(...)` is this function, with the model as `circuit`.

    Args:
        circuit: the `Circuit` to draw.
        save_path: where to write the diagram; `.pdf`, `.png` or `.svg` picks the
            format, `.html` writes the interactive page (one self-contained file: click a
            block's frame to expand or fold it, hover a layer for its details, zoom and
            pan). The file is written whole or not at all.
        show_repeats: the seed's spelling of the same choice: `True` draws each block once,
            `False` every repeat. Give `expanded` or `show_repeats`, not both contradicting.
        expanded: `True` draws every repeat of every block, each in a frame `name [r/N]`;
            `False` (the default) each block once, in a frame `name ×N`. An HTML page opens
            in this view and can expand or fold each block.
        figsize: the figure size in inches; by default the content's natural size, so
            text keeps its size however large the model.
        color_map: colours overriding `DEFAULT_COLORS`, keyed by layer family
            (`conv`, `linear`, `norm`, `activation`, `pooling`, `attention`,
            `dropout`, `other`), `skip` or `io`.
        input_shape: an input shape including the batch dimension (or an example tensor):
            every edge is labelled with its tensor shape, computed on the `meta` device.
        max_column_height: wrap a long diagram into columns no taller than this (inches);
            with `direction="right"`, into rows no wider.
        dpi: the resolution of raster images, in dots per inch: a PNG file, and the image
            a notebook shows for the returned figure where it cannot show the page.
        show: whether to show the figure in a window when no `save_path` is given (a
            diagram asked to be saved is never shown). By default (or `True`) it is shown
            outside a notebook; `False` only returns it, managed by `pyplot` so that
            `plt.show()` shows it later.
        direction: `"down"` (the default) runs the flow down columns that wrap to the
            right; `"right"` runs it left to right along rows that wrap downwards.
        input_shapes: with `input_shape`, a shape or example tensor for each named input
            of the circuit (`{"mask": torch.ones(1, 16, dtype=torch.bool)}`: a shape alone
            makes a float tensor); each input's entry shows its shape.

    Raises:
        ValueError: an unknown extension, contradicting `show_repeats` and `expanded`, a bad
            `color_map`, `figsize` or `direction`, a diagram too large to draw (the
            message gives its size and that of the folded view), or input shapes the circuit
            cannot take; each before any file is written.

    Examples:
        >>> fig = model.visualize("architecture.pdf", input_shape=(1, 3, 32, 32))
        >>> model.visualize("architecture.html")  # open it in a browser
    """
    colors = resolve_colors(color_map)
    path = check_save_path(save_path)
    check_figsize(figsize)
    check_direction(direction)
    everything = resolve_expanded(show_repeats, expanded)
    check_drawable(circuit.nodes, everything)
    trace = trace_for(circuit, input_shape, input_shapes)
    page = functools.partial(
        circuit_html,
        circuit,
        trace=trace,
        colors=colors,
        max_column_height=max_column_height,
        expanded=everything,
        direction=direction,
    )
    if path is not None and FORMATS[path.suffix.lower()] == "html":
        data = page().encode("utf-8")

        def write(stream: BinaryIO) -> None:
            stream.write(data)

        write_atomically(path, write)
    layout = layout_circuit(
        circuit,
        expanded=everything,
        trace=trace,
        max_column_height=max_column_height,
        direction=direction,
    )
    notebook = path is None and _in_notebook()
    window = path is None and not notebook and show is not False
    managed = (window and _has_display()) or (path is None and show is False and not notebook)
    figure = draw_layout(layout, figsize=figsize, colors=colors, dpi=dpi, managed=managed)
    figure.page = page  # type: ignore[attr-defined]
    if path is not None and FORMATS[path.suffix.lower()] != "html":
        fmt = FORMATS[path.suffix.lower()]
        write_atomically(path, lambda stream: figure.savefig(stream, format=fmt, dpi=dpi))
    if window:
        _show(figure, managed)
    return figure


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (which displays the returned figure itself)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _has_display() -> bool:
    """Whether matplotlib's backend can open a window here."""
    import matplotlib
    from matplotlib.backends.registry import BackendFilter, backend_registry

    backend = str(matplotlib.get_backend()).lower()
    if backend.startswith("module://"):
        return "inline" not in backend
    interactive: list[str] = backend_registry.list_builtin(  # type: ignore[no-untyped-call]
        BackendFilter.INTERACTIVE
    )
    return backend in interactive


def _show(figure: Figure, managed: bool) -> None:
    if not managed:
        import matplotlib

        warnings.warn(
            f"matplotlib has no display here (backend {matplotlib.get_backend()!r}), so the "
            "diagram cannot be shown. Save it instead: model.visualize('architecture.png') "
            "(or .pdf, .svg), or model.visualize('architecture.html') for the interactive "
            "page to open in a browser. Pass show=False to only get the figure.",
            NoDisplayWarning,
            stacklevel=3,
        )
        return
    import matplotlib.pyplot as plt

    plt.show()
