"""What a diagram of a `Circuit` shows, before any position is chosen: `circuit_graph`.

The graph is built from one `walk` of the declared structure: a node per layer, save, read
and output (plus an entry per named input, the input and, unless the circuit names its
outputs, the output), a frame per block (folded) or per repeat, and a skip per save or named
input with every read that reads it. Every renderer draws from this graph, through the
layout (`layout.py`) or directly (`text.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from torch import Tensor

from ..nodes import Enter, Exit, Frame, Input, LayerNode, OutputNode, ReadNode, SaveNode, Visit
from ..scope import Scope
from ..shapes import Shape, ShapeTrace, trace_shapes
from .describe import OP_SYMBOLS, count_params, format_shape, layer_family
from .labels import (
    frame_label,
    layer_lines,
    output_label,
    read_label,
    represented_modules,
    save_label,
    transform_layers,
    transform_text,
)
from .view import Expand, check_drawable, represented, resolve_expanded, view_walk

__all__ = [
    "GLYPHS",
    "Graph",
    "GraphFrame",
    "GraphNode",
    "GraphSkip",
    "InputShapes",
    "Item",
    "ItemKind",
    "NodeKind",
    "SkipRead",
    "circuit_graph",
    "trace_for",
]

NodeKind = Literal["entry", "input", "layer", "save", "merge", "tap", "output"]
"""What a graph node is: a named input (an entry, with a lane to its readers), the input, a
layer, a save (a dot), a read (a merge), an output (a tap off the flow), the output."""

ItemKind = Literal["node", "open", "close"]
"""A graph item: a node, or the opening or closing of a frame."""

Item = tuple[ItemKind, str]
"""`("node", node id)`, `("open", frame id)` or `("close", frame id)`."""

GLYPHS: tuple[NodeKind, ...] = ("save", "merge", "tap")
"""Node kinds drawn as a small glyph on the flow rather than as a box."""

InputShapes = Mapping[str, Sequence[int] | Tensor | None]
"""A shape or example tensor for each named input (see `shapes.trace_shapes`)."""


@dataclass(frozen=True)
class GraphNode:
    """A drawn node.

    `id` is the occurrence path (`"resnet.1.5"` is position 5 in repeat 1 of `resnet`;
    `"input:mask"` the named input `mask`); `key` the path of the module that runs there
    (`get_submodule(key)`), empty for the inputs and the output; `frames` the frame ids
    that hold it, outermost first; `in_shape` and `out_shape` the tensor shapes on the edges
    into and out of it, when an input shape was given (`None` where the value there is not
    a tensor). A tap's `lines` are its output's label; an entry's its name and shape.
    """

    id: str
    kind: NodeKind
    lines: tuple[str, ...]
    family: str
    params: int
    key: str
    frames: tuple[str, ...]
    in_shape: Shape | None = None
    out_shape: Shape | None = None


@dataclass(frozen=True)
class GraphFrame:
    """A drawn block: folded (`repeat is None`) or one repeat of it.

    `position` is its `StartBlock`'s position in the layer list: the same for the folded
    frame and every repeat's frame, it names the block declaration a view folds or expands.
    """

    id: str
    label: str
    parent: str | None
    depth: int
    block: str
    repeat: int | None
    position: int = -1
    num_repeats: int = 1


@dataclass(frozen=True)
class SkipRead:
    """One `GetInput` reading a skip: the merge node and its `name · op` label.

    `transform` names the read's transform in one line (`Projection`); `transform_layers`
    has a line per layer of it with its parameter count, or one line for a long one. A read
    of several values (several names, or a pop drawn folded that may take several pushes)
    joins each one's lane at its own place on the merge: this is value `slot` of `slots`,
    named `name`; the label is drawn once, at slot 0.
    """

    node: str
    label: str
    transform: str | None
    transform_layers: tuple[str, ...] = ()
    name: str = ""
    slot: int = 0
    slots: int = 1


@dataclass(frozen=True)
class GraphSkip:
    """A `SaveInput` (or a named input: its entry node is `save`) and every `GetInput`
    that reads it, in order (`transform` as in `SkipRead`, for the save's transform)."""

    id: str
    name: str
    save: str
    label: str
    transform: str | None
    reads: tuple[SkipRead, ...]
    transform_layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Graph:
    """Nodes in drawing order, with `items` interleaving frame openings and closings."""

    nodes: tuple[GraphNode, ...]
    frames: tuple[GraphFrame, ...]
    skips: tuple[GraphSkip, ...]
    items: tuple[Item, ...]
    folded: bool
    expand: Expand = False

    def node(self, node_id: str) -> GraphNode:
        """The node whose occurrence path is `node_id`."""
        node = self._nodes_by_id.get(node_id)
        if node is None:
            raise KeyError(f"no node {node_id!r} in this graph")
        return node

    def frame(self, frame_id: str) -> GraphFrame:
        """The frame whose id is `frame_id`."""
        return self._frames_by_id[frame_id]

    def skip_of(self, node_id: str) -> GraphSkip:
        """The skip that the save or read `node_id` belongs to (a read of several values:
        that of its first)."""
        return self._skips_by_node[node_id]

    def read_of(self, node_id: str) -> SkipRead:
        """The read drawn at the merge node `node_id` (of several values: its first)."""
        return self._reads_by_node[node_id]

    def order(self, node_id: str) -> int:
        """Where the node `node_id` comes in drawing order (0 for the first)."""
        return self._order[node_id]

    @property
    def flow(self) -> tuple[GraphNode, ...]:
        """The nodes the main flow runs through, in order: all but the entries."""
        return self._flow

    # Indexes, built once on first use: every lookup above is constant time.

    @functools.cached_property
    def _nodes_by_id(self) -> dict[str, GraphNode]:
        return {node.id: node for node in self.nodes}

    @functools.cached_property
    def _order(self) -> dict[str, int]:
        return {node.id: index for index, node in enumerate(self.nodes)}

    @functools.cached_property
    def _flow(self) -> tuple[GraphNode, ...]:
        return tuple(node for node in self.nodes if node.kind != "entry")

    @functools.cached_property
    def _frames_by_id(self) -> dict[str, GraphFrame]:
        return {frame.id: frame for frame in self.frames}

    @functools.cached_property
    def _skips_by_node(self) -> dict[str, GraphSkip]:
        index: dict[str, GraphSkip] = {}
        for skip in self.skips:
            index.setdefault(skip.save, skip)
            for read in skip.reads:
                if read.slot == 0:
                    index.setdefault(read.node, skip)
        return index

    @functools.cached_property
    def _reads_by_node(self) -> dict[str, SkipRead]:
        return {read.node: read for skip in self.skips for read in skip.reads if read.slot == 0}


def circuit_graph(
    circuit: Scope,
    show_repeats: bool | None = None,
    input_shape: Sequence[int] | Tensor | None = None,
    *,
    expanded: bool | None = None,
    view: Expand | None = None,
    trace: ShapeTrace | None = None,
    input_shapes: InputShapes | None = None,
) -> Graph:
    """What a diagram of `circuit` shows, before any position is chosen.

    Args:
        circuit: a `Circuit`.
        show_repeats: `True` shows each block once (folded, framed `name ×N`); `False`
            shows every repeat in its own frame. The seed's spelling of `not expanded`.
        input_shape: an input shape (or example tensor) to put tensor shapes on the edges.
        expanded: `True` shows every repeat, `False` (the default) each block once.
        view: which blocks to expand, by their `StartBlock` positions (see `view.Expand`);
            overrides `show_repeats` and `expanded`.
        trace: shapes already traced (`shapes.trace_shapes`), instead of `input_shape`.
        input_shapes: a shape or example tensor for each named input, with `input_shape`.

    Raises:
        ValueError: the view would draw more than `view.MAX_DRAWN` nodes, `show_repeats`
            and `expanded` contradict each other, or `input_shapes` comes without
            `input_shape` (or leaves out a required input).

    Examples:
        >>> [n.kind for n in circuit_graph(Circuit(nn.ReLU())).nodes]
        ['input', 'layer', 'output']
    """
    if view is None:
        view = resolve_expanded(show_repeats, expanded)
    check_drawable(circuit.nodes, view)
    if trace is None:
        trace = trace_for(circuit, input_shape, input_shapes)
    return _GraphBuilder(circuit, view, trace).build()


def graph_of_text(
    circuit: Scope,
    show_repeats: bool | None,
    expanded: bool | None,
    input_shape: Sequence[int] | Tensor | None,
    input_shapes: InputShapes | None,
    limit: int,
) -> Graph:
    """The graph that a text diagram (DOT, Mermaid) writes: as `circuit_graph`, refused past
    `limit` nodes rather than `view.MAX_DRAWN` (text stays cheap where a drawing would not)."""
    view = resolve_expanded(show_repeats, expanded)
    check_drawable(circuit.nodes, view, limit)
    trace = trace_for(circuit, input_shape, input_shapes)
    return _GraphBuilder(circuit, view, trace).build()


def trace_for(
    circuit: Scope,
    input_shape: Sequence[int] | Tensor | None,
    input_shapes: InputShapes | None = None,
) -> ShapeTrace | None:
    """The shapes of `circuit` for `input_shape` (and `input_shapes`), or `None` without one.

    Raises:
        ValueError: `input_shapes` without `input_shape`, or one that `trace_shapes` refuses.
    """
    if input_shape is None:
        if input_shapes:
            raise ValueError(
                "input_shapes gives the named inputs' shapes, but input_shape (the main "
                "input's) is missing; pass both, e.g. input_shape=(1, 16), "
                "input_shapes={'mask': (1, 16)}."
            )
        return None
    return trace_shapes(circuit, input_shape, input_shapes)


@dataclass
class _OpenSkip:
    """A skip while the graph is built: its readers are appended as they are met."""

    name: str
    save: str
    label: str
    transform: str | None
    transform_layers: tuple[str, ...]
    reads: list[SkipRead] = field(default_factory=list)

    def finish(self) -> GraphSkip:
        reads = tuple(self.reads)
        return GraphSkip(
            f"skip:{self.save}",
            self.name,
            self.save,
            self.label,
            self.transform,
            reads,
            self.transform_layers,
        )


@dataclass
class _GraphBuilder:
    circuit: Scope
    view: Expand
    trace: ShapeTrace | None
    nodes: list[GraphNode] = field(default_factory=list)
    frames: list[GraphFrame] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    skips: dict[str, _OpenSkip] = field(default_factory=dict)  # by the save's path
    shape: Shape | None = None
    started: bool = False  # whether the main input is drawn (after the named inputs)
    outputs: dict[int, int] = field(default_factory=dict)  # runs so far, by Output position

    def build(self) -> Graph:
        self.shape = None if self.trace is None else self.trace.input
        for event in view_walk(self.circuit, self.view):
            if isinstance(event, Input):
                self.entry(event)
                continue
            self.start()
            if isinstance(event, Enter):
                self.enter(event.frame)
            elif isinstance(event, Exit):
                self.items.append(("close", event.frame.id))
                if event.last:
                    self.shape_after(event.frame.path)
            else:
                self.visit(event)
                self.shape_after(event.path)
                self.nodes[-1] = replace(self.nodes[-1], out_shape=self.shape)
        self.start()
        if not self.outputs:  # a circuit that names its outputs returns those alone
            self.add(GraphNode("output", "output", ("output",), "io", 0, "", ()))
        skips = tuple(skip.finish() for skip in self.skips.values())
        folded = self.view is False
        items = tuple(self.items)
        return Graph(tuple(self.nodes), tuple(self.frames), skips, items, folded, self.view)

    def add(self, node: GraphNode) -> None:
        node = replace(node, in_shape=self.shape)
        self.nodes.append(node)
        self.items.append(("node", node.id))

    def start(self) -> None:
        """The main input, once, after the named inputs."""
        if not self.started:
            self.started = True
            input_node = GraphNode("input", "input", ("input",), "io", 0, "", ())
            self.add(replace(input_node, out_shape=self.shape))

    def shape_after(self, path: str) -> None:
        """The value after `path` becomes the flow's: its shape, or none if not a tensor."""
        if self.trace is not None:
            self.shape = self.trace.outputs.get(path)

    def saved_shape(self, path: str) -> Shape | None:
        return None if self.trace is None else self.trace.saved.get(path)

    def entry(self, event: Input) -> None:
        """A named input: an entry node of its own, whose lane runs to its readers."""
        name, path = event.node.name, event.path
        shape = self.saved_shape(path)
        lines = (name,) if shape is None else (name, format_shape(shape))
        self.nodes.append(GraphNode(path, "entry", lines, "io", 0, "", (), out_shape=shape))
        self.items.append(("node", path))
        label = name if shape is None else f"{name} {format_shape(shape)}"
        self.skips[path] = _OpenSkip(name, path, label, None, ())

    def enter(self, frame: Frame) -> None:
        self.frames.append(
            GraphFrame(
                id=frame.id,
                label=frame_label(frame.node, frame.repeat),
                parent=frame.parent,
                depth=frame.depth,
                block=frame.node.name,
                repeat=frame.repeat,
                position=frame.node.position,
                num_repeats=frame.node.num_repeats,
            )
        )
        self.items.append(("open", frame.id))

    def visit(self, visit: Visit) -> None:
        node, module = visit.node, visit.module
        params = count_params(module)
        frames = tuple(frame.id for frame in visit.frames)
        folded = represented(visit) > 1
        if isinstance(node, SaveNode):
            self.add(GraphNode(visit.path, "save", (node.name,), "skip", params, visit.key, frames))
            label = save_label(node, self.saved_shape(visit.path), folded)
            transform = transform_text(module)
            layers = transform_layers(module)
            self.skips[visit.path] = _OpenSkip(node.name, visit.path, label, transform, layers)
        elif isinstance(node, ReadNode):
            symbol = OP_SYMBOLS.get(node.op, "f")
            self.add(GraphNode(visit.path, "merge", (symbol,), "skip", params, visit.key, frames))
            label = read_label(node, getattr(module, "op_name", node.op), folded)
            transform, layers = transform_text(module), transform_layers(module)
            names = node.names if len(node.names) == len(visit.sources) else (node.name,)
            for slot, source in enumerate(visit.sources):
                name = names[slot] if len(names) > 1 else names[0]
                read = SkipRead(
                    visit.path, label, transform, layers, name, slot, len(visit.sources)
                )
                self.skips[source].reads.append(read)
        elif isinstance(node, OutputNode):
            first = self.outputs.get(node.position, 0)
            self.outputs[node.position] = first + represented(visit)
            lines = (output_label(node, visit, first),)
            self.add(GraphNode(visit.path, "tap", lines, "io", 0, visit.key, frames))
        else:
            self.layer(visit, node, params, frames)

    def layer(self, visit: Visit, node: LayerNode, params: int, frames: tuple[str, ...]) -> None:
        module = visit.module
        modules = [module]
        if node.per_repeat is not None and represented(visit) > 1:
            modules = represented_modules(self.circuit, visit)
        lines = layer_lines(visit, modules)
        family = layer_family(module)
        self.add(GraphNode(visit.path, "layer", lines, family, params, visit.key, frames))
