"""Diagrams of a `Circuit`: one graph, one layout, several renderers.

- `graph.py`: what is drawn (nodes, frames, skips; named inputs' entries, outputs' taps),
  from one walk of the declared structure.
- `describe.py`: what a layer is called and how it is coloured; `labels.py`: what each
  drawn thing says (a named layer's name, how a layer built per repeat differs, skip labels).
- `columns.py`, `lanes.py`, `layout.py`: where everything goes, as plain data in inches
  (`geometry.py` holds the sizes and the records, `intervals.py` the index that assigns
  lanes); `rows.py` the same left to right.
- `view.py`: which blocks a view folds, and how much it draws (too much is refused).
- `render.py`: the layout drawn with matplotlib (PDF, PNG, SVG); `svg.py` and `html.py`:
  the interactive page, one SVG layout per view, swapped by `page.js`; `files.py`: checks
  and atomic writes; `draw.py`: `visualize`, which uses them all.
- `text.py`: the graph as Graphviz DOT or a Mermaid flowchart.
"""

from .draw import NoDisplayWarning, visualize
from .graph import Graph, circuit_graph
from .html import circuit_html
from .layout import layout_circuit
from .render import draw_layout
from .text import to_dot, to_mermaid

__all__ = [
    "Graph",
    "NoDisplayWarning",
    "circuit_graph",
    "circuit_html",
    "draw_layout",
    "layout_circuit",
    "to_dot",
    "to_mermaid",
    "visualize",
]
