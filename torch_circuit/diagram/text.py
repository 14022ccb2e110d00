"""A `Circuit`'s diagram as text: Graphviz DOT and Mermaid flowcharts.

Both are written from the same graph as the drawn diagram (`graph.circuit_graph`) and need
no package: paste the DOT into any Graphviz viewer, or the Mermaid into a GitHub page or a
notebook's Markdown cell. Blocks become clusters (DOT) or subgraphs (Mermaid) labelled
`name ×N`, or one per repeat when `expanded=True`; each skip is an edge from its
`SaveInput` (or named input) to each `GetInput` that reads it, labelled `name · op`; an
`Output` is a tap on the flow with an edge to a node named after the output.

Writing the text takes time linear in the nodes drawn (every lookup is an index built once),
and is refused past `MAX_TEXT_NODES` rather than `view.MAX_DRAWN`: text stays cheap where a
drawing would not.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..scope import Scope
from .describe import DEFAULT_COLORS, FAMILIES, format_shape
from .graph import Graph, GraphNode, InputShapes, SkipRead, graph_of_text

__all__ = ["MAX_TEXT_NODES", "to_dot", "to_mermaid"]

MAX_TEXT_NODES = 50_000
"""The most layers, saves and reads a DOT or Mermaid diagram writes (a few seconds)."""

IO_KINDS = ("entry", "input", "output")


def to_dot(
    circuit: Scope,
    show_repeats: bool | None = None,
    *,
    expanded: bool | None = None,
    input_shape: Sequence[int] | Tensor | None = None,
    input_shapes: InputShapes | None = None,
) -> str:
    """The diagram of `circuit` as Graphviz DOT source.

    Args:
        circuit: a `Circuit`.
        show_repeats: `True` draws each block once, as a cluster labelled `name ×N`;
            `False` draws every repeat as its own cluster (the seed's spelling).
        expanded: `True` draws every repeat, `False` (the default) each block once.
        input_shape: an input shape (or example tensor) to label the edges with shapes.
        input_shapes: with `input_shape`, a shape or example tensor for each named input.

    Raises:
        ValueError: more than `MAX_TEXT_NODES` nodes to write (the message gives the
            folded size), or input shapes the circuit cannot take.

    Examples:
        >>> print(to_dot(model))  # then: dot -Tsvg circuit.dot, or any online viewer
    """
    graph = graph_of_text(
        circuit, show_repeats, expanded, input_shape, input_shapes, MAX_TEXT_NODES
    )
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
            node = graph.node(item_id)
            lines += [pad + line for line in _dot_node(node, ids[item_id], save_labels, skip)]
    entries = [ids[node.id] for node in graph.nodes if node.kind in ("entry", "input")]
    if len(entries) > 1:  # the named inputs beside the input, at the top
        lines.append(f"  {{rank=source; {'; '.join(entries)};}}")
    for previous, node in zip(graph.flow, graph.flow[1:], strict=False):
        attributes = f" [label={_dot_quote(format_shape(node.in_shape))}]" if node.in_shape else ""
        lines.append(f"  {ids[previous.id]} -> {ids[node.id]}{attributes};")
    for skip_edge in graph.skips:
        for read in skip_edge.reads:
            label = _read_text(read, "\n")
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
    input_shapes: InputShapes | None = None,
) -> str:
    """The diagram of `circuit` as a Mermaid flowchart (renders on GitHub in a
    Markdown code block tagged `mermaid`).

    Args:
        circuit: a `Circuit`.
        show_repeats: `True` draws each block once, as a subgraph labelled `name ×N`;
            `False` draws every repeat as its own subgraph (the seed's spelling).
        expanded: `True` draws every repeat, `False` (the default) each block once.
        input_shape: an input shape (or example tensor) to label the edges with shapes.
        input_shapes: with `input_shape`, a shape or example tensor for each named input.

    Raises:
        ValueError: more than `MAX_TEXT_NODES` nodes to write (the message gives the
            folded size), or input shapes the circuit cannot take.

    Examples:
        >>> print(to_mermaid(model))
    """
    graph = graph_of_text(
        circuit, show_repeats, expanded, input_shape, input_shapes, MAX_TEXT_NODES
    )
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
            node = graph.node(item_id)
            lines += [pad + line for line in _mermaid_node(graph, node, ids[item_id])]
    links = 0
    for previous, node in zip(graph.flow, graph.flow[1:], strict=False):
        shape = format_shape(node.in_shape)
        arrow = f"-->|{_mermaid_quote(shape)}|" if shape else "-->"
        lines.append(f"  {ids[previous.id]} {arrow} {ids[node.id]}")
        links += 1
    for node in graph.nodes:
        if node.kind == "tap":
            lines.append(f"  {ids[node.id]} --> {_port(ids[node.id])}")
            links += 1
    skip_links: list[int] = []
    for skip_edge in graph.skips:
        for read in skip_edge.reads:
            label = _mermaid_quote(_read_text(read, "<br/>"))
            lines.append(f"  {ids[skip_edge.save]} -.->|{label}| {ids[read.node]}")
            skip_links.append(links)
            links += 1
    lines += _mermaid_styles(graph, ids, skip_links)
    return "\n".join(lines) + "\n"


def _read_text(read: SkipRead, newline: str) -> str:
    """A skip edge's label: the read's, or for one value of a read of several, that value's
    name and the op (`k · attend`)."""
    label = read.label
    if read.slots > 1:
        _, sep, rest = label.partition(" · ")
        label = f"{read.name} · {rest}" if sep else read.name
    return label + (f"{newline}via {read.transform}" if read.transform else "")


def _port(node_id: str) -> str:
    """The id of the node naming a tap's output: `o7` for the tap `n7`."""
    return f"o{node_id[1:]}"


def _node_ids(graph: Graph) -> dict[str, str]:
    """Short ids in drawing order: occurrence paths hold dots, which neither format allows."""
    return {node.id: f"n{index}" for index, node in enumerate(graph.nodes)}


# --- DOT details ---


def _dot_quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _dot_node(node: GraphNode, node_id: str, save_labels: dict[str, str], skip: str) -> list[str]:
    if node.kind == "save":
        xlabel = _dot_quote(save_labels.get(node.id, node.lines[0]))
        return [
            f'{node_id} [shape=point, width=0.12, color="{skip}", xlabel={xlabel}, '
            f'fontcolor="{skip}"];'
        ]
    if node.kind == "merge":
        return [
            f'{node_id} [shape=circle, style=solid, color="{skip}", fontcolor="{skip}", '
            f"label={_dot_quote(node.lines[0])}, width=0.3, fixedsize=true];"
        ]
    if node.kind == "tap":  # a point on the flow, with an edge to a box naming the output
        name = _dot_quote(node.lines[0])
        return [
            f'{node_id} [shape=diamond, style=filled, color="#4a4a4a", label="", width=0.14, '
            "height=0.14, fixedsize=true];",
            f"{_port(node_id)} [label={name}, style=rounded, shape=box, "
            'fontname="Helvetica-Oblique"];',
            f"{node_id} -> {_port(node_id)};",
            f"{{rank=same; {node_id}; {_port(node_id)};}}",
        ]
    if node.kind in IO_KINDS:
        return [
            f"{node_id} [label={_dot_quote(chr(10).join(node.lines))}, style=rounded, shape=box];"
        ]
    color = DEFAULT_COLORS.get(node.family, DEFAULT_COLORS["other"])
    return [f'{node_id} [label={_dot_quote(chr(10).join(node.lines))}, fillcolor="{color}"];']


# --- Mermaid details ---


def _mermaid_quote(text: str) -> str:
    escaped = text.replace('"', "#quot;").replace("\n", "<br/>")
    return f'"{escaped}"'


def _mermaid_node(graph: Graph, node: GraphNode, node_id: str) -> list[str]:
    if node.kind == "save":
        skip = graph.skip_of(node.id)
        text = skip.label + (f"<br/>via {skip.transform}" if skip.transform else "")
        return [f"{node_id}([{_mermaid_quote(text)}])"]
    if node.kind == "merge":
        return [f"{node_id}(({_mermaid_quote(node.lines[0])}))"]
    if node.kind == "tap":  # a small circle on the flow; the output's name beside it
        return [f'{node_id}(("out"))', f"{_port(node_id)}[/{_mermaid_quote(node.lines[0])}/]"]
    if node.kind in IO_KINDS:
        return [f"{node_id}[/{_mermaid_quote('<br/>'.join(node.lines))}/]"]
    return [f"{node_id}[{_mermaid_quote('<br/>'.join(node.lines))}]"]


def _mermaid_styles(graph: Graph, ids: dict[str, str], skip_links: list[int]) -> list[str]:
    skip = DEFAULT_COLORS["skip"]
    lines: list[str] = []
    members: dict[str, list[str]] = {}
    for node in graph.nodes:
        if node.kind not in IO_KINDS and node.kind != "tap":
            members.setdefault(node.family, []).append(ids[node.id])
    for family in (*FAMILIES, "skip"):
        if family in members:
            color = DEFAULT_COLORS[family]
            fill = "#ffffff" if family == "skip" else color
            lines.append(f"  classDef {family} fill:{fill},stroke:#555555,color:#1a1a1a;")
            lines.append(f"  class {','.join(members[family])} {family};")
    if skip_links:
        indices = ",".join(str(i) for i in skip_links)
        lines.append(f"  linkStyle {indices} stroke:{skip},color:{skip};")
    return lines
