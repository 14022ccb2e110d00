"""What a diagram of a `Circuit` shows, before any position is chosen: `circuit_graph`.

The graph is built from one `walk` of the declared structure: a node per layer, save and
read (plus the input and the output), a frame per block (folded) or per repeat, and a skip per
save with every read that reads it. Every renderer draws from this graph, through the layout
(`layout.py`) or directly (`text.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from torch import Tensor, nn

from ..nodes import BlockNode, Enter, Exit, Frame, Input, ReadNode, SaveNode, Visit
from ..scope import Scope
from ..shapes import Shape, ShapeTrace, trace_shapes
from .describe import OP_SYMBOLS, count_params, describe_layer, format_shape, layer_family
from .view import Expand, check_drawable, resolve_expanded, view_walk

__all__ = [
    "Graph",
    "GraphFrame",
    "GraphNode",
    "GraphSkip",
    "Item",
    "ItemKind",
    "NodeKind",
    "SkipRead",
    "circuit_graph",
]

NodeKind = Literal["input", "layer", "save", "merge", "output"]
"""What a graph node is: the input, a layer, a save (a dot), a read (a merge), the output."""

ItemKind = Literal["node", "open", "close"]
"""A graph item: a node, or the opening or closing of a frame."""

Item = tuple[ItemKind, str]
"""`("node", node id)`, `("open", frame id)` or `("close", frame id)`."""

GLYPHS: tuple[NodeKind, ...] = ("save", "merge")
"""Node kinds drawn as a small glyph on the flow rather than as a box."""


@dataclass(frozen=True)
class GraphNode:
    """A drawn node.

    `id` is the occurrence path (`"resnet.1.5"` is position 5 in repeat 1 of `resnet`);
    `key` the path of the module that runs there (`get_submodule(key)`), empty for
    input and output; `frames` the frame ids that hold it, outermost first; `in_shape`
    and `out_shape` the tensor shapes on the edges into and out of it, when an input shape
    was given (`None` where the value there is not a tensor).
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
    has a line per layer of it with its parameter count, or one line for a long one.
    """

    node: str
    label: str
    transform: str | None
    transform_layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class GraphSkip:
    """A `SaveInput` and every `GetInput` that reads it, in order (`transform` as in
    `SkipRead`, for the save's transform)."""

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
            raise KeyError(f"no node {node_id!r} in this graph; ids: {list(self._nodes_by_id)}")
        return node

    def frame(self, frame_id: str) -> GraphFrame:
        """The frame whose id is `frame_id`."""
        return self._frames_by_id[frame_id]

    def skip_of(self, node_id: str) -> GraphSkip:
        """The skip that the save or read `node_id` belongs to."""
        return self._skips_by_node[node_id]

    def read_of(self, node_id: str) -> SkipRead:
        """The read drawn at the merge node `node_id`."""
        return self._reads_by_node[node_id]

    def order(self, node_id: str) -> int:
        """Where the node `node_id` comes in drawing order (0 for the input)."""
        return self._order[node_id]

    # Indexes, built once on first use: every lookup above is constant time.

    @functools.cached_property
    def _nodes_by_id(self) -> dict[str, GraphNode]:
        return {node.id: node for node in self.nodes}

    @functools.cached_property
    def _order(self) -> dict[str, int]:
        return {node.id: index for index, node in enumerate(self.nodes)}

    @functools.cached_property
    def _frames_by_id(self) -> dict[str, GraphFrame]:
        return {frame.id: frame for frame in self.frames}

    @functools.cached_property
    def _skips_by_node(self) -> dict[str, GraphSkip]:
        index = {skip.save: skip for skip in self.skips}
        index.update((read.node, skip) for skip in self.skips for read in skip.reads)
        return index

    @functools.cached_property
    def _reads_by_node(self) -> dict[str, SkipRead]:
        return {read.node: read for skip in self.skips for read in skip.reads}


def circuit_graph(
    circuit: Scope,
    show_repeats: bool | None = None,
    input_shape: Sequence[int] | Tensor | None = None,
    *,
    expanded: bool | None = None,
    view: Expand | None = None,
    trace: ShapeTrace | None = None,
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

    Raises:
        ValueError: the view would draw more than `view.MAX_DRAWN` nodes, or `show_repeats`
            and `expanded` contradict each other.

    Examples:
        >>> [n.kind for n in circuit_graph(Circuit(nn.ReLU())).nodes]
        ['input', 'layer', 'output']
    """
    if view is None:
        view = resolve_expanded(show_repeats, expanded)
    check_drawable(circuit.nodes, view)
    if trace is None and input_shape is not None:
        trace = trace_shapes(circuit, input_shape)
    return _GraphBuilder(view, trace).build(circuit)


def _transform_text(module: nn.Module) -> str | None:
    transform = getattr(module, "transform", None)
    return None if transform is None else describe_layer(transform)


MAX_TRANSFORM_LINES = 3
"""A transform of more layers is drawn as one line: its class, layer count and parameters."""


def transform_layers(module: nn.Module) -> tuple[str, ...]:
    """A marker's transform as drawn: a line per layer with its parameter count
    (`Conv2d 32→64, k1, s2 · 2,048 params`), or one line when it has more than
    `MAX_TRANSFORM_LINES` layers; empty without a transform."""
    transform = getattr(module, "transform", None)
    if not isinstance(transform, nn.Module):
        return ()
    leaves = [m for m in transform.modules() if not any(True for _ in m.children())]
    if len(leaves) > MAX_TRANSFORM_LINES:
        total = count_params(transform)
        return (f"{type(transform).__name__}: {len(leaves)} layers · {total:,} params",)
    return tuple(_with_params(leaf) for leaf in leaves)


def _with_params(module: nn.Module) -> str:
    params = count_params(module)
    name = describe_layer(module)
    return f"{name} · {params:,} params" if params else name


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
    view: Expand
    trace: ShapeTrace | None
    nodes: list[GraphNode] = field(default_factory=list)
    frames: list[GraphFrame] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    skips: dict[str, _OpenSkip] = field(default_factory=dict)  # by the save's path
    shape: Shape | None = None

    def build(self, circuit: Scope) -> Graph:
        self.shape = None if self.trace is None else self.trace.input
        self.add(GraphNode("input", "input", ("input",), "io", 0, "", (), out_shape=self.shape))
        for event in view_walk(circuit, self.view):
            if isinstance(event, Input):
                self.named_input(event)
            elif isinstance(event, Enter):
                self.enter(event.frame)
            elif isinstance(event, Exit):
                self.items.append(("close", event.frame.id))
                if event.last:
                    self.shape_after(event.frame.path)
            else:
                self.visit(event)
                self.shape_after(event.path)
                self.nodes[-1] = replace(self.nodes[-1], out_shape=self.shape)
        self.add(GraphNode("output", "output", ("output",), "io", 0, "", ()))
        skips = tuple(skip.finish() for skip in self.skips.values())
        folded = self.view is False
        items = tuple(self.items)
        return Graph(tuple(self.nodes), tuple(self.frames), skips, items, folded, self.view)

    def add(self, node: GraphNode) -> None:
        node = replace(node, in_shape=self.shape)
        self.nodes.append(node)
        self.items.append(("node", node.id))

    def shape_after(self, path: str) -> None:
        """The value after `path` becomes the flow's: its shape, or none if not a tensor."""
        if self.trace is not None:
            self.shape = self.trace.outputs.get(path)

    def named_input(self, event: Input) -> None:
        """A named input, for now drawn as a save just after the input (an entry of its own
        with a lane to its readers is the diagram issue's)."""
        name = event.node.name
        self.add(GraphNode(event.path, "save", (name,), "skip", 0, "", (), out_shape=self.shape))
        label = name
        if self.trace is not None and event.path in self.trace.saved:
            label = f"{name} {format_shape(self.trace.saved[event.path])}"
        self.skips[event.path] = _OpenSkip(name, event.path, f"input {label}", None, ())

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
        if isinstance(node, SaveNode):
            self.add(GraphNode(visit.path, "save", (node.name,), "skip", params, visit.key, frames))
            label = node.name
            if self.trace is not None and visit.path in self.trace.saved:
                label = f"{node.name} {format_shape(self.trace.saved[visit.path])}"
            transform = _transform_text(module)
            layers = transform_layers(module)
            self.skips[visit.path] = _OpenSkip(node.name, visit.path, label, transform, layers)
        elif isinstance(node, ReadNode):
            symbol = OP_SYMBOLS.get(node.op, "f")
            self.add(GraphNode(visit.path, "merge", (symbol,), "skip", params, visit.key, frames))
            label = f"{node.name} · {node.op}"
            read = SkipRead(visit.path, label, _transform_text(module), transform_layers(module))
            for source in visit.sources:
                self.skips[source].reads.append(read)
        else:
            lines = (describe_layer(module),) + ((f"{params:,} params",) if params else ())
            family = layer_family(module)
            self.add(GraphNode(visit.path, "layer", lines, family, params, visit.key, frames))


def frame_label(node: BlockNode, repeat: int | None) -> str:
    """`name ×N` for a folded block, `name [r/N]` for one repeat (`· shared` if tied)."""
    shared = " · shared" if node.share_weights else ""
    if repeat is None:
        return f"{node.name} ×{node.num_repeats}{shared}"
    return f"{node.name} [{repeat + 1}/{node.num_repeats}]{shared}"
