"""The diagram of a ``Circuit`` as plain data: what is drawn (``circuit_graph``) and where
(``layout_circuit``).

Both are pure functions of the circuit: no drawing library is imported here, so the layout is
tested as data (boxes never overlap, frames contain their boxes, overlapping skips get their
own lanes) and every renderer (``render.py``, ``text_diagrams.py``) only draws it.

Coordinates are in inches, ``x`` to the right and ``y`` downwards from the top-left corner, so
a renderer at 1:1 scale gets text of the size the layout measured.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn

from .plan import BlockNode, LayerNode, Node, ReadNode, SaveNode
from .shapes import Shape, ShapeTrace, trace_shapes

__all__ = [
    "COLOR_KEYS",
    "DEFAULT_COLORS",
    "FAMILIES",
    "Box",
    "Edge",
    "Frame",
    "Graph",
    "GraphFrame",
    "GraphNode",
    "GraphSkip",
    "Label",
    "Layout",
    "Mark",
    "SkipRead",
    "circuit_graph",
    "describe_layer",
    "format_shape",
    "layer_family",
    "layout_circuit",
    "layout_graph",
    "text_width",
]

FAMILIES = ("conv", "linear", "norm", "activation", "pooling", "attention", "dropout", "other")
"""Layer families, each drawn in its own colour."""

COLOR_KEYS = (*FAMILIES, "skip", "io")
"""The keys a ``color_map`` may set: the families, skip edges, and the input/output boxes."""

DEFAULT_COLORS: dict[str, str] = {
    "conv": "#9ecae1",
    "linear": "#fdd49e",
    "norm": "#c7e9c0",
    "activation": "#fcbba1",
    "pooling": "#dadaeb",
    "attention": "#fdae6b",
    "dropout": "#e5e5e5",
    "other": "#f0f0f0",
    "skip": "#c0392b",
    "io": "#ffffff",
}
"""Colours by layer family, plus ``skip`` (skip edges and merges) and ``io`` (input/output)."""

OP_SYMBOLS = {"add": "+", "mul": "×", "cat": "cat"}


# --- What a layer is called and how it is coloured ---


def layer_family(module: nn.Module) -> str:
    """The family of ``module`` (one of ``FAMILIES``), which picks its colour."""
    name = type(module).__name__
    origin = type(module).__module__
    if isinstance(module, nn.MultiheadAttention) or "Attention" in name or "Transformer" in name:
        return "attention"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear | nn.Bilinear):
        return "linear"
    if "Norm" in name:
        return "norm"
    if origin == "torch.nn.modules.activation":
        return "activation"
    if origin == "torch.nn.modules.pooling":
        return "pooling"
    if origin == "torch.nn.modules.dropout":
        return "dropout"
    return "other"


def _size(value: object) -> str:
    """``3`` for ``3`` or ``(3, 3)``; ``3×1`` for ``(3, 1)``."""
    if isinstance(value, tuple | list):
        items = [str(v) for v in value]
        return items[0] if len(set(items)) == 1 else "×".join(items)
    return str(value)


def _is_zero(value: object) -> bool:
    if isinstance(value, tuple | list):
        return all(v == 0 for v in value)
    return value == 0


def _is_one(value: object) -> bool:
    if isinstance(value, tuple | list):
        return all(v == 1 for v in value)
    return value == 1


def _conv_detail(module: nn.modules.conv._ConvNd) -> str:
    parts = [f"{module.in_channels}→{module.out_channels}", f"k{_size(module.kernel_size)}"]
    if not _is_one(module.stride):
        parts.append(f"s{_size(module.stride)}")
    if isinstance(module.padding, str):
        parts.append(f"p={module.padding}")
    elif not _is_zero(module.padding):
        parts.append(f"p{_size(module.padding)}")
    if module.groups != 1:
        parts.append(f"g{module.groups}")
    return ", ".join(parts)


def _pool_detail(module: nn.Module) -> str:
    if hasattr(module, "output_size"):
        return f"→{_size(module.output_size)}"
    kernel = getattr(module, "kernel_size", None)
    if kernel is None:
        return ""
    parts = [f"k{_size(kernel)}"]
    stride = getattr(module, "stride", None)
    if stride is not None and stride != kernel and not _is_one(stride):
        parts.append(f"s{_size(stride)}")
    return ", ".join(parts)


def _norm_detail(module: nn.Module) -> str:
    if isinstance(module, nn.GroupNorm):
        return f"{module.num_groups} groups, {module.num_channels}"
    shape = getattr(module, "normalized_shape", None)
    if shape is not None:
        return _size(tuple(shape))
    features = getattr(module, "num_features", None)
    return "" if features is None else str(features)


def _detail(module: nn.Module) -> str:
    """The settings that tell one layer of a class from another: channels, kernel, stride."""
    from .circuit import Circuit
    from .markers import LambdaLayer

    if isinstance(module, Circuit):
        count = sum(1 for _ in module.children())
        return f"{count} layers"
    if isinstance(module, LambdaLayer):
        return module.extra_repr()
    if isinstance(module, nn.modules.conv._ConvNd):
        return _conv_detail(module)
    if isinstance(module, nn.Linear):
        return f"{module.in_features}→{module.out_features}"
    if isinstance(module, nn.MultiheadAttention):
        return f"d{module.embed_dim}, {module.num_heads} heads"
    if isinstance(module, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer):
        attention = module.self_attn
        return f"d{attention.embed_dim}, {attention.num_heads} heads"
    if isinstance(module, nn.Embedding):
        return f"{module.num_embeddings}×{module.embedding_dim}"
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return f"p={module.p:g}"
    family = layer_family(module)
    if family == "norm":
        return _norm_detail(module)
    if family == "pooling":
        return _pool_detail(module)
    return ""


def describe_layer(module: nn.Module) -> str:
    """One line naming ``module``'s class and key settings, e.g. ``Conv2d 3→64, k3, p1``."""
    detail = _detail(module)
    return f"{type(module).__name__} {detail}" if detail else type(module).__name__


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def format_shape(shape: Sequence[int] | None) -> str:
    """``(1, 64, 32, 32)``, or an empty string when no shape is known."""
    if shape is None:
        return ""
    return "(" + ", ".join(str(d) for d in shape) + ")"


def text_width(text: str, size: float) -> float:
    """An upper estimate, in inches, of ``text``'s width at ``size`` points (DejaVu Sans)."""
    return len(text) * size * 0.6 / 72


# --- The graph: what is drawn, in drawing order ---


@dataclass(frozen=True)
class GraphNode:
    """A drawn node: ``kind`` is ``input``, ``layer``, ``save``, ``merge`` or ``output``.

    ``id`` is the occurrence path (``"resnet.1.5"`` is position 5 in repeat 1 of ``resnet``);
    ``key`` the path of the module that runs there (``get_submodule(key)``), empty for
    input and output; ``frames`` the frame ids that hold it, outermost first; ``in_shape``
    the tensor shape arriving on the edge into it, when an input shape was given.
    """

    id: str
    kind: str
    lines: tuple[str, ...]
    family: str
    params: int
    key: str
    frames: tuple[str, ...]
    in_shape: Shape | None = None


@dataclass(frozen=True)
class GraphFrame:
    """A drawn block: folded (``repeat is None``) or one repeat of it."""

    id: str
    label: str
    parent: str | None
    depth: int
    block: str
    repeat: int | None


@dataclass(frozen=True)
class SkipRead:
    """One ``GetInput`` reading a skip: the merge node and its ``name · op`` label."""

    node: str
    label: str
    transform: str | None


@dataclass(frozen=True)
class GraphSkip:
    """A ``SaveInput`` and every ``GetInput`` that reads it, in order."""

    id: str
    name: str
    save: str
    label: str
    transform: str | None
    reads: tuple[SkipRead, ...]


@dataclass(frozen=True)
class Graph:
    """Nodes in drawing order with ``items`` interleaving frame openings and closings.

    ``items`` holds ``("node", id)``, ``("open", frame id)`` and ``("close", frame id)``.
    """

    nodes: tuple[GraphNode, ...]
    frames: tuple[GraphFrame, ...]
    skips: tuple[GraphSkip, ...]
    items: tuple[tuple[str, str], ...]
    folded: bool

    def node(self, node_id: str) -> GraphNode:
        """The node whose occurrence path is ``node_id``."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(f"no node {node_id!r} in this graph; ids: {[n.id for n in self.nodes]}")


def circuit_graph(
    circuit: nn.Module,
    show_repeats: bool = True,
    input_shape: Sequence[int] | Tensor | None = None,
) -> Graph:
    """What a diagram of ``circuit`` shows, before any position is chosen.

    Args:
        circuit: a ``Circuit``.
        show_repeats: ``True`` shows each block once (folded, framed ``name ×N``); ``False``
            shows every repeat in its own frame.
        input_shape: an input shape (or example tensor) to put tensor shapes on the edges.

    Example::

        >>> [n.kind for n in circuit_graph(Circuit(nn.ReLU())).nodes]
        ['input', 'layer', 'output']
    """
    trace = None if input_shape is None else trace_shapes(circuit, input_shape)
    return _GraphBuilder(circuit, show_repeats, trace).build()


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
        return GraphSkip(
            f"skip:{self.save}",
            self.name,
            self.save,
            self.label,
            self.transform,
            tuple(self.reads),
        )


@dataclass
class _GraphBuilder:
    circuit: nn.Module
    folded: bool
    trace: ShapeTrace | None
    nodes: list[GraphNode] = field(default_factory=list)
    frames: list[GraphFrame] = field(default_factory=list)
    items: list[tuple[str, str]] = field(default_factory=list)
    skips: list[_OpenSkip] = field(default_factory=list)
    save_by_position: dict[int, _OpenSkip] = field(default_factory=dict)
    shape: Shape | None = None

    def build(self) -> Graph:
        self.shape = None if self.trace is None else self.trace.input
        self.add(GraphNode("input", "input", ("input",), "io", 0, "", ()))
        nodes: tuple[Node, ...] = self.circuit.nodes  # type: ignore[assignment]
        self.scope(nodes, "", "", ())
        self.add(GraphNode("output", "output", ("output",), "io", 0, "", ()))
        skips = tuple(skip.finish() for skip in self.skips)
        return Graph(tuple(self.nodes), tuple(self.frames), skips, tuple(self.items), self.folded)

    def add(self, node: GraphNode) -> None:
        node = GraphNode(**{**node.__dict__, "in_shape": self.shape})
        self.nodes.append(node)
        self.items.append(("node", node.id))

    def shape_after(self, path: str) -> None:
        if self.trace is not None:
            self.shape = self.trace.outputs.get(path, self.shape)

    def scope(
        self, nodes: tuple[Node, ...], prefix: str, module_prefix: str, frames: tuple[str, ...]
    ) -> None:
        for node in nodes:
            path = f"{prefix}{node.key}"
            if isinstance(node, BlockNode):
                self.block(node, path, f"{module_prefix}{node.key}", frames)
                continue
            module = self.circuit.get_submodule(f"{module_prefix}{node.key}")
            key = f"{module_prefix}{node.key}"
            if isinstance(node, SaveNode):
                self.save(node, module, path, key, frames)
            elif isinstance(node, ReadNode):
                self.read(node, module, path, key, frames)
            else:
                self.layer(node, module, path, key, frames)
            self.shape_after(path)

    def layer(
        self, node: LayerNode, module: nn.Module, path: str, key: str, frames: tuple[str, ...]
    ) -> None:
        params = count_params(module)
        lines = (describe_layer(module),) + ((f"{params:,} params",) if params else ())
        self.add(GraphNode(path, "layer", lines, layer_family(module), params, key, frames))

    def save(
        self, node: SaveNode, module: nn.Module, path: str, key: str, frames: tuple[str, ...]
    ) -> None:
        params = count_params(module)
        self.add(GraphNode(path, "save", (node.name,), "skip", params, key, frames))
        label = node.name
        if self.trace is not None and path in self.trace.saved:
            label = f"{node.name} {format_shape(self.trace.saved[path])}"
        skip = _OpenSkip(node.name, path, label, _transform_text(module))
        self.skips.append(skip)
        self.save_by_position[node.position] = skip  # later repeats rebind the position

    def read(
        self, node: ReadNode, module: nn.Module, path: str, key: str, frames: tuple[str, ...]
    ) -> None:
        params = count_params(module)
        symbol = OP_SYMBOLS.get(node.op, "f")
        self.add(GraphNode(path, "merge", (symbol,), "skip", params, key, frames))
        read = SkipRead(path, f"{node.name} · {node.op}", _transform_text(module))
        self.save_by_position[node.source].reads.append(read)

    def block(self, node: BlockNode, path: str, module_path: str, frames: tuple[str, ...]) -> None:
        repeats = [0] if self.folded else list(range(node.num_repeats))
        for repeat in repeats:
            module_repeat = node.repeat_key(repeat)
            frame_id = path if self.folded else f"{path}.{repeat}"
            self.frames.append(
                GraphFrame(
                    id=frame_id,
                    label=self.frame_label(node, None if self.folded else repeat),
                    parent=frames[-1] if frames else None,
                    depth=len(frames) + 1,
                    block=node.name,
                    repeat=None if self.folded else repeat,
                )
            )
            self.items.append(("open", frame_id))
            self.scope(
                node.body,
                f"{path}.{repeat}.",
                f"{module_path}.{module_repeat}.",
                (*frames, frame_id),
            )
            self.items.append(("close", frame_id))
        self.shape_after(path)

    @staticmethod
    def frame_label(node: BlockNode, repeat: int | None) -> str:
        shared = " · shared" if node.share_weights else ""
        if repeat is None:
            return f"{node.name} ×{node.num_repeats}{shared}"
        return f"{node.name} [{repeat + 1}/{node.num_repeats}]{shared}"


# --- The layout: where everything goes ---

Point = tuple[float, float]

BOX_FONT = 8.0  # points: layer text
SMALL_FONT = 7.0  # points: parameter counts, skip labels, frame labels, transforms
SHAPE_FONT = 6.5  # points: tensor shapes on edges
LINE_H = 0.14  # inches per text line in a box
BOX_PAD_X = 0.12
BOX_PAD_Y = 0.09
MIN_BOX_W = 1.7
MAX_BOX_W = 3.6
GLYPH = 0.3  # save dots and merge circles sit in a GLYPH × GLYPH box
DOT_R = 0.06
MERGE_R = 0.14
LABEL_INSET = 0.07  # from a glyph's edge to its skip label
LABEL_CLEARANCE = 0.04  # between a skip label's end and lane 0
MARK_CLEARANCE = 0.05  # between a transform mark and the glyph or lane beside it
MARK_H = 0.18
TRANSFORM_ROW = 0.56  # height of a save/merge row whose skip has a transform
GAP = 0.34  # vertical room for an edge (and its shape label) between two rows
FRAME_HEADER = 0.24
FRAME_FOOTER = 0.14
FRAME_PAD = 0.14  # horizontal room between nested frame borders
LANE_MARGIN = 0.24  # from the right side of the boxes to the first lane
LANE_GAP = 0.16
TOP = 0.36  # room above the first row, for edges that wrap to the next column
BOTTOM = 0.3
COLUMN_GUTTER = 0.5
RIGHT_PAD = 0.2
WRAP_Y = 0.16  # the height of the edges that wrap to the next column
MIN_WRAP_HEIGHT = 14.0  # inches: a diagram shorter than this stays in one column


@dataclass(frozen=True)
class Box:
    """A node's rectangle (top-left ``x``, ``y``), its text lines and colour family."""

    id: str
    kind: str
    x: float
    y: float
    w: float
    h: float
    lines: tuple[str, ...]
    family: str
    column: int

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass(frozen=True)
class Frame:
    """A block's frame; ``label`` sits in its header, inside its top-left corner."""

    id: str
    label: str
    x: float
    y: float
    w: float
    h: float
    depth: int
    parent: str | None
    column: int


@dataclass(frozen=True)
class Label:
    """Text placed at (``x``, ``y``); ``ha``/``va`` as in matplotlib; ``kind`` styles it."""

    x: float
    y: float
    text: str
    kind: str
    size: float
    ha: str = "left"
    va: str = "center"

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """An estimated ``(x0, y0, x1, y1)`` of the text."""
        w = text_width(self.text, self.size)
        h = self.size / 72 * 1.25
        x0 = {"left": self.x, "center": self.x - w / 2, "right": self.x - w}[self.ha]
        y0 = {"top": self.y, "center": self.y - h / 2, "bottom": self.y - h}[self.va]
        return (x0, y0, x0 + w, y0 + h)


@dataclass(frozen=True)
class Mark:
    """A transform drawn on a skip edge: a small box centred on the edge's line."""

    x: float
    y: float
    w: float
    h: float
    text: str


@dataclass(frozen=True)
class Edge:
    """A flow edge (``kind="flow"``) or a skip (``kind="skip"``).

    ``paths`` are polylines of axis-aligned segments, each ending at a target with an arrow;
    a skip's first path runs from its save through its lane to its last reader, the others
    branch off the lane to earlier readers. ``lane`` is the skip's lane (``None`` for flow).
    """

    id: str
    kind: str
    source: str
    targets: tuple[str, ...]
    paths: tuple[tuple[Point, ...], ...]
    lane: int | None
    labels: tuple[Label, ...]
    marks: tuple[Mark, ...]

    def segments(self) -> list[tuple[Point, Point]]:
        return [(a, b) for path in self.paths for a, b in itertools.pairwise(path)]


@dataclass(frozen=True)
class Layout:
    """Everything a renderer draws, in inches; ``width`` × ``height`` is the natural size."""

    width: float
    height: float
    boxes: tuple[Box, ...]
    frames: tuple[Frame, ...]
    edges: tuple[Edge, ...]
    labels: tuple[Label, ...]
    columns: int
    graph: Graph

    def box(self, box_id: str) -> Box:
        """The box of the node whose occurrence path is ``box_id``."""
        for box in self.boxes:
            if box.id == box_id:
                return box
        raise KeyError(f"no box {box_id!r} in this layout")


def layout_circuit(
    circuit: nn.Module,
    *,
    show_repeats: bool = True,
    input_shape: Sequence[int] | Tensor | None = None,
    max_column_height: float | None = None,
) -> Layout:
    """Place every box, frame, lane and edge of ``circuit``'s diagram.

    Args:
        circuit: a ``Circuit``.
        show_repeats: ``True`` folds each block into one framed copy; ``False`` draws every
            repeat.
        input_shape: an input shape (or example tensor) to label every edge with its shape.
        max_column_height: wrap into columns no taller than this (inches) where the flow
            allows; by default chosen so that the diagram is about as wide as it is tall.

    Example::

        >>> layout = layout_circuit(model, show_repeats=False)
        >>> layout.width, layout.height  # inches, the figure's natural size
    """
    graph = circuit_graph(circuit, show_repeats, input_shape)
    return layout_graph(graph, max_column_height=max_column_height)


def layout_graph(graph: Graph, *, max_column_height: float | None = None) -> Layout:
    """Place ``graph`` (see ``layout_circuit``)."""
    return _Placer(graph).place(max_column_height)


def _scope_depth(nodes: dict[str, GraphNode], skip: GraphSkip) -> int:
    """How many frames hold the save and all the readers of ``skip``."""
    paths = [nodes[skip.save].frames, *(nodes[r.node].frames for r in skip.reads)]
    depth = 0
    while all(len(p) > depth for p in paths) and len({p[depth] for p in paths}) == 1:
        depth += 1
    return depth


def _mark_width(text: str) -> float:
    return text_width(text, SMALL_FONT) + 0.1


def _glyph_radius(box: Box) -> float | None:
    return {"save": DOT_R, "merge": MERGE_R}.get(box.kind)


def _outline_top(box: Box) -> float:
    """Where an edge arriving from above meets ``box``'s drawn outline."""
    radius = _glyph_radius(box)
    return box.y if radius is None else box.cy - radius


def _outline_bottom(box: Box) -> float:
    """Where an edge leaves ``box``'s drawn outline downwards."""
    radius = _glyph_radius(box)
    return box.y + box.h if radius is None else box.cy + radius


def _next_fit(heights: list[float], limit: float) -> list[int]:
    """The column of each chunk when a column is closed as soon as the next would overflow."""
    groups: list[int] = []
    column, used = 0, 0.0
    for height in heights:
        if groups and used + height > limit + 1e-9:
            column, used = column + 1, 0.0
        groups.append(column)
        used += height
    return groups


def _least_height(heights: list[float], columns: int) -> float:
    """The least column height at which ``_next_fit`` needs at most ``columns`` columns."""
    low, high = max(heights), sum(heights)
    for _ in range(40):  # bisection: next-fit needs more columns as the height shrinks
        middle = (low + high) / 2
        if max(_next_fit(heights, middle)) + 1 <= columns:
            high = middle
        else:
            low = middle
    return high


def _overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


@dataclass
class _Column:
    items: list[tuple[str, str]]
    index: int
    x: float = 0.0
    width: float = 0.0
    bottom: float = 0.0


class _Placer:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.nodes = {node.id: node for node in graph.nodes}
        self.frame_info = {frame.id: frame for frame in graph.frames}
        self.skip_of_node: dict[str, GraphSkip] = {}
        for skip in graph.skips:
            self.skip_of_node[skip.save] = skip
            for read in skip.reads:
                self.skip_of_node[read.node] = skip
        self.read_of_node = {r.node: r for s in graph.skips for r in s.reads}
        self.box_w = self.measure_width()
        self.wrapped = False

    # -- sizes --

    def measure_width(self) -> float:
        """One width for every layer box: the widest text, and room for skip labels."""
        need = MIN_BOX_W
        for node in self.graph.nodes:
            if node.kind in ("layer", "input", "output"):
                widest = max(text_width(line, BOX_FONT) for line in node.lines)
                need = max(need, widest + 2 * BOX_PAD_X)
        # Skip labels and transform marks sit right of a glyph and left of lane 0.
        for skip in self.graph.skips:
            for text in [skip.label, *(r.label for r in skip.reads)]:
                room = text_width(text, SMALL_FONT) + LABEL_INSET + LABEL_CLEARANCE
                need = max(need, 2 * (MERGE_R + room - LANE_MARGIN))
            for transform in [skip.transform, *(r.transform for r in skip.reads)]:
                if transform:
                    room = _mark_width(transform) + 2 * MARK_CLEARANCE
                    need = max(need, 2 * (MERGE_R + room - LANE_MARGIN))
        for frame in self.graph.frames:
            need = max(need, 2 * (text_width(frame.label, SMALL_FONT) + 0.1))
        return min(MAX_BOX_W, need)

    def fit(self, text: str, kind: str, name: int | None = None) -> str:
        """``text`` cut short with an ellipsis where even the widest box leaves no room.

        With ``name``, only ``text[:name]`` (a name) is cut and the rest is kept whole.
        """
        half = self.box_w / 2 + LANE_MARGIN - MERGE_R
        room = {
            "box": (self.box_w - 2 * BOX_PAD_X, BOX_FONT),
            "skip": (half - LABEL_INSET - LABEL_CLEARANCE, SMALL_FONT),
            "mark": (half - 2 * MARK_CLEARANCE - 0.1, SMALL_FONT),
            "frame": (self.box_w / 2 - 0.1, SMALL_FONT),
        }
        width, size = room[kind]
        if text_width(text, size) <= width + 1e-9:
            return text
        keep = max(1, int(width / text_width("x", size)) - 1)
        if name is None:
            return text[:keep] + "…"
        tail = text[name:]
        return text[: max(1, min(name, keep - len(tail)))] + "…" + tail

    def box_lines(self, node: GraphNode) -> tuple[str, ...]:
        if node.kind in ("save", "merge"):
            return node.lines
        return tuple(self.fit(line, "box") for line in node.lines)

    def node_height(self, node: GraphNode) -> float:
        if node.kind in ("save", "merge"):
            transform = self.transform_of(node)
            return TRANSFORM_ROW if transform else GLYPH
        return len(node.lines) * LINE_H + 2 * BOX_PAD_Y

    def node_width(self, node: GraphNode) -> float:
        return GLYPH if node.kind in ("save", "merge") else self.box_w

    def transform_of(self, node: GraphNode) -> str | None:
        if node.kind == "save":
            return self.skip_of_node[node.id].transform
        if node.kind == "merge":
            return self.read_of_node[node.id].transform
        return None

    # -- columns --

    def chunks(self) -> list[list[tuple[str, str]]]:
        """The items split where a column may wrap: between top-level nodes, no skip live."""
        order = {item_id: i for i, (kind, item_id) in enumerate(self.graph.items) if kind == "node"}
        live_until: dict[int, int] = {}
        for skip in self.graph.skips:
            start = order[skip.save]
            end = max(order[r.node] for r in skip.reads) if skip.reads else start
            live_until[start] = max(live_until.get(start, start), end)
        chunks: list[list[tuple[str, str]]] = [[]]
        depth = 0
        live_end = -1
        items = self.graph.items
        for index, item in enumerate(items):
            kind = item[0]
            chunks[-1].append(item)
            depth += {"open": 1, "close": -1}.get(kind, 0)
            live_end = max(live_end, live_until.get(index, -1))
            following = items[index + 1] if index + 1 < len(items) else None
            if (
                kind != "open"
                and depth == 0
                and live_end <= index
                and following is not None
                and following[0] != "close"
            ):
                chunks.append([])
        return [chunk for chunk in chunks if chunk]

    def chunk_height(self, chunk: list[tuple[str, str]]) -> float:
        height = 0.0
        for kind, item_id in chunk:
            if kind == "node":
                height += GAP + self.node_height(self.nodes[item_id])
            elif kind == "open":
                height += GAP / 2 + FRAME_HEADER
            else:
                height += FRAME_FOOTER
        return height

    def columns(self, max_height: float | None) -> list[_Column]:
        chunks = self.chunks()
        heights = [self.chunk_height(chunk) for chunk in chunks]
        if max_height is None:
            max_height = self.balanced_height(heights)
        groups = _next_fit(heights, max(max_height, *heights))
        columns = [_Column([], index) for index in range(max(groups, default=0) + 1)]
        for chunk, group in zip(chunks, groups, strict=True):
            columns[group].items.extend(chunk)
        return columns

    def balanced_height(self, heights: list[float]) -> float:
        """The column height that makes the diagram's width plus height least: as square as
        the content allows, without a column that would only shave a few rows off the
        others. Diagrams shorter than ``MIN_WRAP_HEIGHT`` stay in one column."""
        total = sum(heights)
        if total <= MIN_WRAP_HEIGHT:
            return total
        column_width = self.box_w + 1.4  # with frames, lanes and the gutter
        most = 2 * math.ceil(math.sqrt(total / column_width))
        options = [(_least_height(heights, c), c) for c in range(1, most + 1)]
        height, _ = min(options, key=lambda option: option[0] + option[1] * column_width)
        return height

    # -- placing --

    def place(self, max_column_height: float | None) -> Layout:
        boxes: list[Box] = []
        frames: list[Frame] = []
        edges: list[Edge] = []
        labels: list[Label] = []
        columns = self.columns(max_column_height)
        self.wrapped = len(columns) > 1
        x = 0.0
        for column in columns:
            column.x = x
            placed = self.place_column(column)
            boxes += placed[0]
            frames += placed[1]
            edges += placed[2]
            labels += placed[3]
            x += column.width + COLUMN_GUTTER
        edges += self.flow_edges(boxes, columns)
        width = x - COLUMN_GUTTER
        height = max(column.bottom for column in columns) + BOTTOM
        return Layout(
            width=width,
            height=height,
            boxes=tuple(boxes),
            frames=tuple(frames),
            edges=tuple(edges),
            labels=tuple(labels),
            columns=len(columns),
            graph=self.graph,
        )

    def place_column(
        self, column: _Column
    ) -> tuple[list[Box], list[Frame], list[Edge], list[Label]]:
        frame_ids = [item_id for kind, item_id in column.items if kind == "open"]
        max_depth = max((self.frame_info[f].depth for f in frame_ids), default=0)
        left = column.x + FRAME_PAD * (max_depth + 1) if frame_ids else column.x + 0.15
        right = left + self.box_w
        boxes, spans = self.stack(column, left + self.box_w / 2)
        by_id = {box.id: box for box in boxes}
        skips = [s for s in self.graph.skips if s.save in by_id]
        level = self.levels(skips, by_id, spans)

        def lane_x(lane: int) -> float:
            return right + LANE_MARGIN + lane * LANE_GAP

        nesting = self.nesting(frame_ids)
        frames = []
        for fid in frame_ids:
            info = self.frame_info[fid]
            x = left - FRAME_PAD * (1 + nesting[fid])
            top, bottom = spans[fid]
            frames.append(
                Frame(
                    fid,
                    info.label,
                    x,
                    top,
                    lane_x(level[fid]) - x,
                    bottom - top,
                    info.depth,
                    info.parent,
                    column.index,
                )
            )
        labels = [self.frame_label(frame) for frame in frames]
        edges = [
            self.skip_edge(skip, by_id, lane_x(level[skip.id]), level[skip.id]) for skip in skips
        ]
        widest = max([right, *(lane_x(lane) for lane in level.values())])
        column.width = widest + RIGHT_PAD - column.x
        return boxes, frames, edges, labels

    def stack(self, column: _Column, cx: float) -> tuple[list[Box], dict[str, tuple[float, float]]]:
        """Place the column's nodes top to bottom; also return each frame's top and bottom."""
        y = TOP if self.wrapped else BOTTOM / 2  # room at the top for edges wrapping in
        boxes: list[Box] = []
        spans: dict[str, tuple[float, float]] = {}
        for kind, item_id in column.items:
            if kind == "node":
                node = self.nodes[item_id]
                y += GAP
                w, h = self.node_width(node), self.node_height(node)
                lines = self.box_lines(node)
                boxes.append(
                    Box(node.id, node.kind, cx - w / 2, y, w, h, lines, node.family, column.index)
                )
                y += h
            elif kind == "open":
                y += GAP / 2
                spans[item_id] = (y, y)
                y += FRAME_HEADER
            else:
                y += FRAME_FOOTER
                spans[item_id] = (spans[item_id][0], y)
        column.bottom = y
        return boxes, spans

    def levels(
        self,
        skips: list[GraphSkip],
        by_id: dict[str, Box],
        frame_spans: dict[str, tuple[float, float]],
    ) -> dict[str, int]:
        """The lane of every skip and the right border of every frame, counted outwards.

        Skips and frame borders share one set of levels. Deeper scopes come first: a skip
        inside a frame runs inside its border, and a skip passing or entering a frame runs
        outside it. Each object takes the level just outside every earlier one it overlaps
        vertically, so skips with overlapping spans never share a lane.
        """
        objects: list[tuple[tuple[float, float, float], str, tuple[float, float]]] = []
        for skip in skips:
            ys = [by_id[skip.save].cy, *(by_id[r.node].cy for r in skip.reads)]
            span = (min(ys), max(ys))
            key = (-2.0 * _scope_depth(self.nodes, skip), span[1] - span[0], span[0])
            objects.append((key, skip.id, span))
        for fid, span in frame_spans.items():
            key = (-2.0 * self.frame_info[fid].depth + 1, span[1] - span[0], span[0])
            objects.append((key, fid, span))
        objects.sort(key=lambda item: item[0])
        level: dict[str, int] = {}
        for index, (_, obj_id, span) in enumerate(objects):
            below = [level[o[1]] for o in objects[:index] if _overlaps(o[2], span)]
            level[obj_id] = 1 + max(below) if below else 0
        return level

    def nesting(self, frame_ids: list[str]) -> dict[str, int]:
        """How many levels of frames each frame holds inside it (0 for the innermost)."""
        nesting = dict.fromkeys(frame_ids, 0)
        for fid in frame_ids:
            parent, height = self.frame_info[fid].parent, 1
            while parent is not None and parent in nesting:
                nesting[parent] = max(nesting[parent], height)
                parent, height = self.frame_info[parent].parent, height + 1
        return nesting

    def frame_label(self, frame: Frame) -> Label:
        text = self.fit(frame.label, "frame", len(self.frame_info[frame.id].block))
        return Label(frame.x + 0.07, frame.y + 0.05, text, "frame", SMALL_FONT, "left", "top")

    def skip_edge(self, skip: GraphSkip, by_id: dict[str, Box], lane: float, level: int) -> Edge:
        save = by_id[skip.save]
        name = len(skip.name)
        labels = [self.line_label(save, skip.label, skip.transform is not None, name)]
        marks = self.marks(save, skip.transform, lane)
        if not skip.reads:
            return Edge(skip.id, "skip", skip.save, (), (), level, tuple(labels), tuple(marks))
        start = (save.cx + DOT_R, save.cy)
        readers = [by_id[r.node] for r in skip.reads]
        last = max(readers, key=lambda box: box.cy)
        paths: list[tuple[Point, ...]] = [
            (start, (lane, save.cy), (lane, last.cy), (last.cx + MERGE_R, last.cy))
        ]
        for read, box in zip(skip.reads, readers, strict=True):
            if box is not last:
                paths.append(((lane, box.cy), (box.cx + MERGE_R, box.cy)))
            labels.append(self.line_label(box, read.label, read.transform is not None, name))
            marks += self.marks(box, read.transform, lane)
        return Edge(
            skip.id,
            "skip",
            skip.save,
            tuple(r.node for r in skip.reads),
            tuple(paths),
            level,
            tuple(labels),
            tuple(marks),
        )

    def line_label(self, box: Box, text: str, raised: bool, name: int) -> Label:
        """A skip's text just above its horizontal line, right of the node's glyph; a name
        too long is cut, keeping what follows it (the op, the shape)."""
        y = box.cy - (0.17 if raised else 0.075)
        x = box.cx + MERGE_R + LABEL_INSET
        return Label(x, y, self.fit(text, "skip", name), "skip", SMALL_FONT, "left", "center")

    def marks(self, box: Box, transform: str | None, lane: float) -> list[Mark]:
        """A transform as a box on the skip's horizontal line, next to the lane."""
        if transform is None:
            return []
        transform = self.fit(transform, "mark")
        w = _mark_width(transform)
        x = max(box.cx + MERGE_R + MARK_CLEARANCE, lane - MARK_CLEARANCE - w)
        return [Mark(x, box.cy - MARK_H / 2, w, MARK_H, transform)]

    def flow_edges(self, boxes: list[Box], columns: list[_Column]) -> list[Edge]:
        edges: list[Edge] = []
        for previous, box in itertools.pairwise(boxes):
            leave = (previous.cx, _outline_bottom(previous))
            arrive = (box.cx, _outline_top(box))
            if previous.column == box.column:
                path: tuple[Point, ...] = (leave, arrive)
            else:
                gutter = columns[previous.column].x + columns[previous.column].width
                gutter += COLUMN_GUTTER / 2
                below = columns[previous.column].bottom + GAP / 2  # under any frame
                path = (
                    leave,
                    (previous.cx, below),
                    (gutter, below),
                    (gutter, WRAP_Y),
                    (box.cx, WRAP_Y),
                    arrive,
                )
            shape = self.nodes[box.id].in_shape
            edge_labels: tuple[Label, ...] = ()
            if shape is not None:
                edge_labels = (
                    Label(
                        box.cx + 0.07,
                        box.y - GAP / 2,
                        format_shape(shape),
                        "shape",
                        SHAPE_FONT,
                        "left",
                        "center",
                    ),
                )
            edges.append(
                Edge(
                    f"flow:{previous.id}->{box.id}",
                    "flow",
                    previous.id,
                    (box.id,),
                    (path,),
                    None,
                    edge_labels,
                    (),
                )
            )
        return edges
