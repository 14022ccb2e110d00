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

from ..block import Scope
from ..nodes import BlockNode, Enter, Exit, Frame, ReadNode, SaveNode, Visit, walk
from ..shapes import Shape, ShapeTrace, trace_shapes
from .describe import OP_SYMBOLS, count_params, describe_layer, format_shape, layer_family

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
    the tensor shape arriving on the edge into it, when an input shape was given.
    """

    id: str
    kind: NodeKind
    lines: tuple[str, ...]
    family: str
    params: int
    key: str
    frames: tuple[str, ...]
    in_shape: Shape | None = None


@dataclass(frozen=True)
class GraphFrame:
    """A drawn block: folded (`repeat is None`) or one repeat of it."""

    id: str
    label: str
    parent: str | None
    depth: int
    block: str
    repeat: int | None


@dataclass(frozen=True)
class SkipRead:
    """One `GetInput` reading a skip: the merge node and its `name · op` label."""

    node: str
    label: str
    transform: str | None


@dataclass(frozen=True)
class GraphSkip:
    """A `SaveInput` and every `GetInput` that reads it, in order."""

    id: str
    name: str
    save: str
    label: str
    transform: str | None
    reads: tuple[SkipRead, ...]


@dataclass(frozen=True)
class Graph:
    """Nodes in drawing order, with `items` interleaving frame openings and closings."""

    nodes: tuple[GraphNode, ...]
    frames: tuple[GraphFrame, ...]
    skips: tuple[GraphSkip, ...]
    items: tuple[Item, ...]
    folded: bool

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

    # Indexes, built once on first use: every lookup above is constant time.

    @functools.cached_property
    def _nodes_by_id(self) -> dict[str, GraphNode]:
        return {node.id: node for node in self.nodes}

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
    show_repeats: bool = True,
    input_shape: Sequence[int] | Tensor | None = None,
) -> Graph:
    """What a diagram of `circuit` shows, before any position is chosen.

    Args:
        circuit: a `Circuit`.
        show_repeats: `True` shows each block once (folded, framed `name ×N`); `False`
            shows every repeat in its own frame.
        input_shape: an input shape (or example tensor) to put tensor shapes on the edges.

    Examples:
        >>> [n.kind for n in circuit_graph(Circuit(nn.ReLU())).nodes]
        ['input', 'layer', 'output']
    """
    trace = None if input_shape is None else trace_shapes(circuit, input_shape)
    builder = _GraphBuilder(show_repeats, trace)
    return builder.build(circuit)


def _transform_text(module: nn.Module) -> str | None:
    transform = getattr(module, "transform", None)
    return None if transform is None else describe_layer(transform)


@dataclass
class _OpenSkip:
    """A skip while the graph is built: its readers are appended as they are met."""

    name: str
    save: str
    label: str
    transform: str | None
    reads: list[SkipRead] = field(default_factory=list)

    def finish(self) -> GraphSkip:
        reads = tuple(self.reads)
        return GraphSkip(
            f"skip:{self.save}", self.name, self.save, self.label, self.transform, reads
        )


@dataclass
class _GraphBuilder:
    folded: bool
    trace: ShapeTrace | None
    nodes: list[GraphNode] = field(default_factory=list)
    frames: list[GraphFrame] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    skips: dict[str, _OpenSkip] = field(default_factory=dict)  # by the save's path
    shape: Shape | None = None

    def build(self, circuit: Scope) -> Graph:
        self.shape = None if self.trace is None else self.trace.input
        self.add(GraphNode("input", "input", ("input",), "io", 0, "", ()))
        for event in walk(circuit, folded=self.folded):
            if isinstance(event, Enter):
                self.enter(event.frame)
            elif isinstance(event, Exit):
                self.items.append(("close", event.frame.id))
                if event.last:
                    self.shape_after(event.frame.path)
            else:
                self.visit(event)
                self.shape_after(event.path)
        self.add(GraphNode("output", "output", ("output",), "io", 0, "", ()))
        skips = tuple(skip.finish() for skip in self.skips.values())
        return Graph(tuple(self.nodes), tuple(self.frames), skips, tuple(self.items), self.folded)

    def add(self, node: GraphNode) -> None:
        node = replace(node, in_shape=self.shape)
        self.nodes.append(node)
        self.items.append(("node", node.id))

    def shape_after(self, path: str) -> None:
        if self.trace is not None:
            self.shape = self.trace.outputs.get(path, self.shape)

    def enter(self, frame: Frame) -> None:
        self.frames.append(
            GraphFrame(
                id=frame.id,
                label=frame_label(frame.node, frame.repeat),
                parent=frame.parent,
                depth=frame.depth,
                block=frame.node.name,
                repeat=frame.repeat,
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
            self.skips[visit.path] = _OpenSkip(node.name, visit.path, label, transform)
        elif isinstance(node, ReadNode):
            symbol = OP_SYMBOLS.get(node.op, "f")
            self.add(GraphNode(visit.path, "merge", (symbol,), "skip", params, visit.key, frames))
            read = SkipRead(visit.path, f"{node.name} · {node.op}", _transform_text(module))
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
