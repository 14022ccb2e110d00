"""`summary`: a text table of a `Circuit`, a row per layer grouped by block and repeat."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from .diagram.describe import describe_layer, format_shape
from .nodes import Enter, Frame, Input, LeafNode, OutputNode, ReadNode, SaveNode, Visit, walk
from .scope import Scope
from .shapes import ShapeTrace, trace_shapes

__all__ = ["format_bytes", "summary"]


@dataclass(frozen=True)
class _Row:
    depth: int
    layer: str
    key: str = ""
    shape: str = ""
    params: str = ""


def summary(
    circuit: Scope,
    input_shape: Sequence[int] | Tensor | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int] | Tensor | None] | None = None,
) -> str:
    """A text table of `circuit`: a row per layer, grouped by block and repeat.

    Each row gives the layer (class and key settings; skips with their name and op), its
    `state_dict` key, its output shape (with `input_shape`) and its parameter count.
    Parameters a row shares with an earlier row (`share_weights=True` blocks, a module
    passed twice) are marked `shared` and counted once in the totals. The totals give
    trainable and non-trainable counts, the memory of parameters and buffers, and with
    `input_shape` an estimate of the forward activations (the sum of every row's output).

    Args:
        circuit: a `Circuit`.
        input_shape: an input shape including the batch dimension (or an example tensor);
            shapes are computed on the `meta` device, without real data.
        input_shapes: a shape or example tensor for each named input (see `trace_shapes`).

    Examples:
        >>> print(model.summary(input_shape=(1, 3, 32, 32)))
    """
    trace = None if input_shape is None else trace_shapes(circuit, input_shape, input_shapes)
    builder = _Rows(circuit, trace)
    if trace is not None:
        builder.rows.append(_Row(0, "input", shape=format_shape(trace.input)))
    for event in walk(circuit):
        if isinstance(event, Input):
            builder.named_input(event)
        elif isinstance(event, Enter):
            builder.enter(event.frame)
        elif isinstance(event, Visit):
            builder.visit(event)
    table = _table(builder.rows, with_shapes=trace is not None)
    return "\n".join([*_title(circuit, trace), *table, *_totals(circuit, trace, builder)])


def format_bytes(size: float) -> str:
    """`1.50 MiB`: bytes in binary units."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


class _Rows:
    """Walks every repeat of every block, collecting rows and counting parameters once."""

    def __init__(self, circuit: Scope, trace: ShapeTrace | None) -> None:
        self.circuit = circuit
        self.trace = trace
        self.rows: list[_Row] = []
        self.seen: set[int] = set()
        self.activation_bytes = 0 if trace is None else _numel(trace.input) * 4

    def named_input(self, event: Input) -> None:
        shape = ""
        if self.trace is not None and event.path in self.trace.saved:
            shape = format_shape(self.trace.saved[event.path])
        self.rows.append(_Row(0, f"input {event.node.name!r}", shape=shape))

    def enter(self, frame: Frame) -> None:
        """A block's row (before its first repeat), then the repeat's own row."""
        node, depth = frame.node, 2 * frame.depth - 2
        repeat = frame.repeat or 0
        if repeat == 0:
            shared = ", shared weights" if node.share_weights else ""
            block = self.circuit.get_submodule(frame.key)
            total = sum(p.numel() for p in block.parameters())
            label = f"{node.name} ×{node.num_repeats}{shared}"
            self.rows.append(_Row(depth, label, frame.key, params=f"{total:,}"))
        self.rows.append(_Row(depth + 1, f"repeat {repeat + 1}/{node.num_repeats}"))

    def visit(self, visit: Visit) -> None:
        node, module = visit.node, visit.module
        self.rows.append(
            _Row(
                2 * len(visit.frames),
                self.describe(node, module),
                visit.key,
                self.shape(node, module, visit.path),
                self.params(module),
            )
        )

    @staticmethod
    def describe(node: LeafNode, module: nn.Module) -> str:
        transform = getattr(module, "transform", None)
        via = "" if transform is None else f" via {describe_layer(transform)}"
        if isinstance(node, SaveNode):
            return f"SaveInput {node.name!r}{' (push)' if node.push else ''}{via}"
        if isinstance(node, ReadNode):
            names = repr(node.name) if len(node.names) == 1 else repr(node.names)
            return f"GetInput {names} · {node.op}{' (pop)' if node.pop else ''}{via}"
        if isinstance(node, OutputNode):
            return f"Output {node.name!r}"
        return describe_layer(module)

    def shape(self, node: LeafNode, module: nn.Module, path: str) -> str:
        """The row's output shape; counts the new tensors it makes towards activations."""
        if self.trace is None or path not in self.trace.outputs:
            return ""
        shape = self.trace.outputs[path]
        itemsize = self.trace.itemsize.get(path, 4)
        if not isinstance(node, SaveNode):
            self.activation_bytes += _numel(shape) * itemsize
        elif getattr(module, "transform", None) is not None:  # only a transform makes one
            self.activation_bytes += _numel(self.trace.saved[path]) * itemsize
        return format_shape(shape)

    def params(self, module: nn.Module) -> str:
        parameters = list(module.parameters())
        total = sum(p.numel() for p in parameters)
        new = sum(p.numel() for p in parameters if id(p) not in self.seen)
        self.seen.update(id(p) for p in parameters)
        if new == total:
            return f"{total:,}"
        if new == 0:
            return f"{total:,} shared"
        return f"{new:,} (+{total - new:,} shared)"


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _title(circuit: Scope, trace: ShapeTrace | None) -> list[str]:
    name = type(circuit).__name__
    if trace is None:
        return [f"{name} summary"]
    return [f"{name} summary · input {format_shape(trace.input)}"]


_HEADERS = ("Layer", "Key", "Output shape", "Param #")


def _table(rows: list[_Row], with_shapes: bool) -> list[str]:
    columns = [0, 1, 2, 3] if with_shapes else [0, 1, 3]
    headers = [_HEADERS[i] for i in columns]
    cells = [
        [(("  " * row.depth) + row.layer, row.key, row.shape, row.params)[i] for i in columns]
        for row in rows
    ]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        left = [v.ljust(w) for v, w in zip(values[:-1], widths[:-1], strict=True)]
        return "  ".join([*left, values[-1].rjust(widths[-1])]).rstrip()

    rule_width = sum(widths) + 2 * (len(widths) - 1)
    return [
        "═" * rule_width,
        line(headers),
        "─" * rule_width,
        *map(line, cells),
        "═" * rule_width,
    ]


def _totals(circuit: Scope, trace: ShapeTrace | None, rows: _Rows) -> list[str]:
    parameters = list(circuit.parameters())
    total = sum(p.numel() for p in parameters)
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    buffers = list(circuit.buffers())
    buffer_count = sum(b.numel() for b in buffers)
    parameter_bytes = sum(p.numel() * p.element_size() for p in parameters)
    parameter_bytes += sum(b.numel() * b.element_size() for b in buffers)
    lines = [
        f"Total params: {total:,} (shared parameters counted once)",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        f"Buffers: {buffer_count:,} values",
        f"Parameter memory: {format_bytes(parameter_bytes)} (parameters and buffers)",
    ]
    if trace is None:
        lines.append("Activation memory: pass input_shape to estimate it")
    else:
        lines.append(
            f"Activation memory: {format_bytes(rows.activation_bytes)} (forward, estimated "
            "as the input plus every row's output)"
        )
    return lines
