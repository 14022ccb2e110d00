"""Diagrams of a `Circuit`: one graph, one layout, several renderers.

- `graph.py`: what is drawn (nodes, frames, skips), from one walk of the declared structure.
- `describe.py`: what a layer is called and how it is coloured.
- `columns.py`, `lanes.py`, `layout.py`: where everything goes, as plain data in inches
  (`geometry.py` holds the sizes and the records).
- `render.py`: the layout drawn with matplotlib (PDF, PNG, SVG); `files.py`: checks and
  atomic writes.
- `text.py`: the graph as Graphviz DOT or a Mermaid flowchart.
"""

from .graph import Graph, circuit_graph
from .layout import layout_circuit
from .render import draw_layout, visualize
from .text import to_dot, to_mermaid

__all__ = [
    "Graph",
    "circuit_graph",
    "draw_layout",
    "layout_circuit",
    "to_dot",
    "to_mermaid",
    "visualize",
]
