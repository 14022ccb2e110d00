"""A `Circuit`'s diagram as text: Graphviz DOT and Mermaid flowcharts.

Both are written from the same graph as the drawn diagram (`graph.circuit_graph`) and need
no package: paste the DOT into any Graphviz viewer, or the Mermaid into a GitHub page or a
notebook's Markdown cell. Blocks become clusters (DOT) or subgraphs (Mermaid) labelled
`name ×N`, or one per repeat when `expanded=True`; each skip is an edge from its
`SaveInput` to each `GetInput` that reads it, labelled `name · op`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..scope import Scope
from .describe import DEFAULT_COLORS, FAMILIES, format_shape
from .graph import Graph, GraphNode, circuit_graph

__all__ = ["to_dot", "to_mermaid"]


def to_dot(
    circuit: Scope,
    show_repeats: bool | None = None,
    *,
    expanded: bool | None = None,
    input_shape: Sequence[int] | Tensor | None = None,
) -> str:
    """The diagram of `circuit` as Graphviz DOT source.

    Args:
        circuit: a `Circuit`.
        show_repeats: `True` draws each block once, as a cluster labelled `name ×N`;
            `False` draws every repeat as its own cluster (the seed's spelling).
        expanded: `True` draws every repeat, `False` (the default) each block once.
        input_shape: an input shape (or example tensor) to label the edges with shapes.

    Examples:
        >>> print(to_dot(model))  # then: dot -Tsvg circuit.dot, or any online viewer
    """
    graph = circuit_graph(circuit, show_repeats, input_shape, expanded=expanded)
    ids = _node_ids(graph)
    skip = DEFAULT_COLORS["skip"]
    lines = [
        "digraph circuit {",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9, color="#4a4a4a"];',
    ]
    clusters = {frame.id: index for index, frame in enumerate(graph.frames)}
    save_labels = {
        s.save: s.label + (f"\nvia {s.transform}" if s.transform else "") for s in graph.skips
    }
    depth = 1
    for kind, item_id in graph.items:
        pad = "  " * depth
        if kind == "open":
            label = _dot_quote(graph.frame(item_id).label)
            lines.append(f"{pad}subgraph cluster_{clusters[item_id]} {{")
            lines.append(
                f'{pad}  label={label}; style="dashed,rounded"; color="#8c8c8c"; '
                'fontname="Helvetica"; fontsize=10;'
            )
            depth += 1
        elif kind == "close":
            depth -= 1
            lines.append(f"{'  ' * depth}}}")
        else:
            lines.append(pad + _dot_node(graph.node(item_id), ids[item_id], save_labels, skip))
    for previous, node in zip(graph.nodes, graph.nodes[1:], strict=False):
        attributes = f" [label={_dot_quote(format_shape(node.in_shape))}]" if node.in_shape else ""
        lines.append(f"  {ids[previous.id]} -> {ids[node.id]}{attributes};")
    for skip_edge in graph.skips:
        for read in skip_edge.reads:
            label = read.label + (f"\nvia {read.transform}" if read.transform else "")
            lines.append(
                f"  {ids[skip_edge.save]} -> {ids[read.node]} [label={_dot_quote(label)}, "
                f'color="{skip}", fontcolor="{skip}", style=dashed, constraint=false];'
            )
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(
    circuit: Scope,
    show_repeats: bool | None = None,
    *,
    expanded: bool | None = None,
    input_shape: Sequence[int] | Tensor | None = None,
) -> str:
    """The diagram of `circuit` as a Mermaid flowchart (renders on GitHub in a
    Markdown code block tagged `mermaid`).

    Args:
        circuit: a `Circuit`.
        show_repeats: `True` draws each block once, as a subgraph labelled `name ×N`;
            `False` draws every repeat as its own subgraph (the seed's spelling).
        expanded: `True` draws every repeat, `False` (the default) each block once.
        input_shape: an input shape (or example tensor) to label the edges with shapes.

    Examples:
        >>> print(to_mermaid(model))
    """
    graph = circuit_graph(circuit, show_repeats, input_shape, expanded=expanded)
    ids = _node_ids(graph)
    clusters = {frame.id: index for index, frame in enumerate(graph.frames)}
    lines = ["flowchart TB"]
    depth = 1
    for kind, item_id in graph.items:
        pad = "  " * depth
        if kind == "open":
            label = _mermaid_quote(graph.frame(item_id).label)
            lines.append(f"{pad}subgraph f{clusters[item_id]}[{label}]")
            depth += 1
        elif kind == "close":
            depth -= 1
            lines.append(f"{'  ' * depth}end")
        else:
            lines.append(pad + _mermaid_node(graph, graph.node(item_id), ids[item_id]))
    links = 0
    for previous, node in zip(graph.nodes, graph.nodes[1:], strict=False):
        shape = format_shape(node.in_shape)
        arrow = f"-->|{_mermaid_quote(shape)}|" if shape else "-->"
        lines.append(f"  {ids[previous.id]} {arrow} {ids[node.id]}")
        links += 1
    skip_links: list[int] = []
    for skip_edge in graph.skips:
        for read in skip_edge.reads:
            label = read.label + (f"<br/>via {read.transform}" if read.transform else "")
            lines.append(f"  {ids[skip_edge.save]} -.->|{_mermaid_quote(label)}| {ids[read.node]}")
            skip_links.append(links)
            links += 1
    lines += _mermaid_styles(graph, ids, skip_links)
    return "\n".join(lines) + "\n"


# --- DOT details ---


def _node_ids(graph: Graph) -> dict[str, str]:
    """Short ids in drawing order: occurrence paths hold dots, which neither format allows."""
    return {node.id: f"n{index}" for index, node in enumerate(graph.nodes)}


def _dot_quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _dot_node(node: GraphNode, node_id: str, save_labels: dict[str, str], skip: str) -> str:
    if node.kind == "save":
        xlabel = _dot_quote(save_labels.get(node.id, node.lines[0]))
        return (
            f'{node_id} [shape=point, width=0.12, color="{skip}", xlabel={xlabel}, '
            f'fontcolor="{skip}"];'
        )
    if node.kind == "merge":
        return (
            f'{node_id} [shape=circle, style=solid, color="{skip}", fontcolor="{skip}", '
            f"label={_dot_quote(node.lines[0])}, width=0.3, fixedsize=true];"
        )
    if node.kind in ("input", "output"):
        return f"{node_id} [label={_dot_quote(node.lines[0])}, style=rounded, shape=box];"
    color = DEFAULT_COLORS.get(node.family, DEFAULT_COLORS["other"])
    return f'{node_id} [label={_dot_quote(chr(10).join(node.lines))}, fillcolor="{color}"];'


# --- Mermaid details ---


def _mermaid_quote(text: str) -> str:
    escaped = text.replace('"', "#quot;").replace("\n", "<br/>")
    return f'"{escaped}"'


def _mermaid_node(graph: Graph, node: GraphNode, node_id: str) -> str:
    if node.kind == "save":
        skip = graph.skip_of(node.id)
        text = skip.label + (f"<br/>via {skip.transform}" if skip.transform else "")
        return f"{node_id}([{_mermaid_quote(text)}])"
    if node.kind == "merge":
        return f"{node_id}(({_mermaid_quote(node.lines[0])}))"
    if node.kind in ("input", "output"):
        return f"{node_id}[/{_mermaid_quote(node.lines[0])}/]"
    return f"{node_id}[{_mermaid_quote('<br/>'.join(node.lines))}]"


def _mermaid_styles(graph: Graph, ids: dict[str, str], skip_links: list[int]) -> list[str]:
    skip = DEFAULT_COLORS["skip"]
    lines: list[str] = []
    for family in (*FAMILIES, "skip"):
        members = [ids[n.id] for n in graph.nodes if n.family == family and n.kind != "input"]
        if members:
            color = DEFAULT_COLORS[family]
            fill = "#ffffff" if family == "skip" else color
            lines.append(f"  classDef {family} fill:{fill},stroke:#555555,color:#1a1a1a;")
            lines.append(f"  class {','.join(members)} {family};")
    if skip_links:
        indices = ",".join(str(i) for i in skip_links)
        lines.append(f"  linkStyle {indices} stroke:{skip},color:{skip};")
    return lines
