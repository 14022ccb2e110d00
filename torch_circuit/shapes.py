"""Tensor shapes at every layer of a `Circuit`, traced from an input shape without real data.

`trace_shapes` walks the declared structure (`nodes.walk`) on a copy of the circuit whose
parameters and buffers live on the `meta` device: the copy is built without copying any
weight, and every call only computes shapes. A module the meta device cannot run is retried
once on the real circuit in `eval` mode under `no_grad` (training flags restored after).
An input the circuit cannot take raises `ShapeError` naming the layer where shapes stop
fitting.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .copying import structural_copy
from .nodes import Enter, Exit, Input, ReadNode, SaveNode, Visit, walk
from .scope import Scope

__all__ = ["Shape", "ShapeError", "ShapeTrace", "as_example_input", "trace_shapes"]

Shape = tuple[int, ...]


class ShapeError(ValueError):
    """An input shape that the circuit cannot take; the message names the failing layer."""


@dataclass
class ShapeTrace:
    """Shapes seen while running the circuit once, keyed by occurrence path.

    An occurrence path names one run of a node: `"3"` at the top level, `"stage.1.5"` for
    position 5 in repeat 1 of block `stage` (nested: `"outer.0.inner.2.7"`); a block's own
    path (`"stage"`) holds the output of its last repeat.
    """

    input: Shape
    outputs: dict[str, Shape] = field(default_factory=dict)
    saved: dict[str, Shape] = field(default_factory=dict)
    itemsize: dict[str, int] = field(default_factory=dict)

    @property
    def output(self) -> Shape:
        """The shape the circuit returns."""
        return self.outputs.get("output", self.input)


def as_example_input(input_shape: Sequence[int] | Tensor) -> Tensor:
    """A `meta` tensor for `input_shape` (a tensor's own shape and dtype are kept)."""
    if isinstance(input_shape, Tensor):
        return torch.empty_like(input_shape, device="meta")
    if isinstance(input_shape, str | bytes) or not isinstance(input_shape, Sequence):
        raise TypeError(
            f"input_shape must be a sequence of ints such as (1, 3, 32, 32) or an example "
            f"tensor, got {input_shape!r} ({type(input_shape).__name__})."
        )
    dims = tuple(input_shape)
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(
            f"input_shape must be a non-empty sequence of positive ints such as "
            f"(1, 3, 32, 32), including the batch dimension; got {input_shape!r}."
        )
    return torch.empty(dims, device="meta")


def trace_shapes(
    circuit: Scope,
    input_shape: Sequence[int] | Tensor,
    input_shapes: Mapping[str, Sequence[int] | Tensor | None] | None = None,
) -> ShapeTrace:
    """Run `circuit` on `input_shape` for shapes only and return every layer's output shape.

    Args:
        circuit: a `Circuit`.
        input_shape: the input's shape including the batch dimension, or an example tensor
            (whose shape and dtype are used, e.g. a `LongTensor` of token ids).
        input_shapes: a shape or example tensor for each named input of the circuit (a mask
            is best given as an example tensor, for its dtype); an input left out gets its
            default.

    Raises:
        ShapeError: naming the layer (position, class, block and repeat) whose input does not
            fit, with the shape it received.

    Examples:
        >>> trace_shapes(model, (1, 3, 32, 32)).output
        (1, 10)
    """
    example = as_example_input(input_shape)
    named = _named_examples(circuit, input_shapes)
    meta = _meta_copy(circuit)
    try:
        return _Tracer(meta, tuple(example.shape), named).run(example)
    except _LayerError as meta_failure:
        # Some modules cannot run on meta (data-dependent code); a real no-grad pass decides.
        real_input = (
            input_shape
            if isinstance(input_shape, Tensor)
            else torch.zeros(example.shape, dtype=example.dtype)
        )
        real_named = {name: _real(value) for name, value in named.items()}
        try:
            with _eval_mode(circuit), torch.no_grad():
                return _Tracer(circuit, tuple(example.shape), real_named).run(real_input)
        except _LayerError as failure:
            raise ShapeError(failure.message(example.shape)) from failure.error
        except Exception:
            raise ShapeError(meta_failure.message(example.shape)) from meta_failure.error


def _named_examples(
    circuit: Scope, shapes: Mapping[str, Sequence[int] | Tensor | None] | None
) -> dict[str, Any]:
    """A meta example (or the default) for each named input of `circuit`."""
    shapes = {} if shapes is None else shapes
    if not isinstance(shapes, Mapping):
        raise TypeError(
            f"input_shapes must map input names to shapes, got {type(shapes).__name__}; "
            "e.g. input_shapes={'mask': torch.zeros(1, 16, dtype=torch.bool)}."
        )
    declared = {node.name: node for node in circuit.input_nodes}
    unknown = sorted(set(shapes) - set(declared))
    if unknown:
        raise ShapeError(
            f"input_shapes names {unknown}, which the circuit does not take; its named inputs "
            f"are {list(declared)}."
        )
    examples: dict[str, Any] = {}
    for name, node in declared.items():
        if name in shapes and shapes[name] is not None:
            examples[name] = as_example_input(shapes[name])  # type: ignore[arg-type]
        elif node.required:
            raise ShapeError(
                f"input_shapes has no shape for the input {name!r}, which the circuit needs; "
                f"pass e.g. input_shapes={{{name!r}: (1, 16)}} or an example tensor."
            )
        else:
            examples[name] = node.default
    return examples


def _real(value: Any) -> Any:
    """A real tensor of zeros for a meta example; anything else as it is."""
    if isinstance(value, Tensor) and value.is_meta:
        return torch.zeros(value.shape, dtype=value.dtype)
    return value


def _meta_copy(module: Scope) -> Scope:
    """A deep copy of `module` whose parameters and buffers are empty `meta` tensors."""
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        if isinstance(tensor, nn.Parameter):
            meta = nn.Parameter(meta, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = meta
    copied = structural_copy(module, memo)
    if not isinstance(copied, Scope):  # pragma: no cover - a copy keeps its class
        raise TypeError(f"a copy of {type(module).__name__} is a {type(copied).__name__}")
    return copied


class _eval_mode:  # noqa: N801 - used like a function, as a context manager
    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.flags: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> None:
        self.flags = [(m, m.training) for m in self.module.modules()]
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        for module, training in self.flags:
            module.training = training


class _LayerError(Exception):
    """A layer raised; carries where, what it received, and the original error."""

    def __init__(self, where: str, received: Shape, error: Exception) -> None:
        super().__init__(where)
        self.where = where
        self.received = received
        self.error = error

    def message(self, input_shape: Sequence[int]) -> str:
        first_line = str(self.error).strip().splitlines()[0] if str(self.error).strip() else ""
        reason = f"{type(self.error).__name__}: {first_line}" if first_line else repr(self.error)
        return (
            f"input_shape {tuple(input_shape)} does not fit the circuit: {self.where} receives "
            f"a tensor of shape {self.received} and fails with {reason}. Shapes fit up to "
            "that layer; check input_shape, or the settings of that layer and the one before."
        )


class _Tracer:
    """Walks the circuit like `forward` does, recording shapes by occurrence path."""

    def __init__(self, circuit: Scope, input_shape: Shape, named: Mapping[str, Any]) -> None:
        self.circuit = circuit
        self.trace = ShapeTrace(input_shape)
        self.named = named
        self.saved: dict[str, Any] = {}  # by the save's occurrence path

    def run(self, x: Any) -> ShapeTrace:
        for event in walk(self.circuit):
            if isinstance(event, Enter):
                continue
            if isinstance(event, Input):
                value = self.named[event.node.name]
                self.saved[event.path] = value
                if isinstance(value, Tensor):
                    self.trace.saved[event.path] = tuple(value.shape)
                continue
            if isinstance(event, Exit):
                if event.last:
                    self.record(event.frame.path, x)
                continue
            try:
                x = self.step(event, x)
            except Exception as error:
                received = tuple(x.shape) if isinstance(x, Tensor) else ()
                raise _LayerError(_where(event), received, error) from error
            self.record(event.path, x)
        self.record("output", x)
        return self.trace

    def record(self, path: str, x: Any) -> None:
        if isinstance(x, Tensor):
            self.trace.outputs[path] = tuple(x.shape)
            self.trace.itemsize[path] = x.element_size()

    def step(self, visit: Visit, x: Any) -> Any:
        node, module = visit.node, visit.module
        if isinstance(node, SaveNode):
            x = module(x)  # hooks see the save, as in forward
            captured = module.capture(x)  # type: ignore[operator]
            self.saved[visit.path] = captured
            if isinstance(captured, Tensor):
                self.trace.saved[visit.path] = tuple(captured.shape)
            return x
        if isinstance(node, ReadNode):
            saved = [self.saved[source] for source in visit.sources]
            return module(x, *saved)
        return module(x)


def _where(visit: Visit) -> str:
    """`the layer at position 5 (Conv2d) in repeat 1 of 3 of block 'stage' (...)`."""
    node, module = visit.node, visit.module
    if isinstance(node, SaveNode | ReadNode):
        described = f"{module!r} at position {node.position}"
    else:
        described = f"the layer at position {node.position} ({type(module).__name__})"
    places = [
        f" in repeat {frame.repeat} of {frame.node.num_repeats} of block {frame.node.name!r}"
        f" (StartBlock at position {frame.node.position})"
        for frame in reversed(visit.frames)
    ]
    return described + ("".join(places) or " at the top level")
