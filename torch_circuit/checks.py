"""The checks of one marker's arguments, made while `parse.py` reads the layer list.

Each raises a `TypeError` or `ValueError` naming the marker, its position and the fix: names,
flags, a read's op (callable, right number of arguments), transforms and per-repeat factories,
checkpoint segments, and markers hidden inside other containers.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from .markers import EndBlock, GetInput, Output, PerRepeat, SaveInput, StartBlock
from .ops import BINARY_OPS, NAMED_OPS, op_name

__all__ = [
    "MARKERS",
    "check_flag",
    "check_module_arg",
    "check_name",
    "check_no_hidden_markers",
    "check_per_repeat",
    "check_read",
    "checkpoint_segment",
]

MARKERS = (SaveInput, GetInput, Output, StartBlock, EndBlock, PerRepeat)
_MODULE_MARKERS = (SaveInput, GetInput, Output)


def check_name(marker: Any, position: int) -> None:
    name = marker.name
    kind = type(marker).__name__
    if not isinstance(name, str):
        raise TypeError(
            f"{kind} at position {position} has the name {name!r} ({type(name).__name__}); "
            f"names must be strings, e.g. {kind}('residual')."
        )
    if not name:
        raise ValueError(
            f"{kind} at position {position} has an empty name; "
            f"give it one, e.g. {kind}('residual')."
        )


def checkpoint_segment(marker: Any, position: int) -> int:
    """The repeats per checkpoint segment that `marker.checkpoint` asks for (0: none).

    Raises:
        TypeError: `checkpoint` is neither a bool nor an int.
        ValueError: `checkpoint` is an int below 1.
    """
    value = marker.checkpoint
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int):
        raise TypeError(
            f"{marker!r} at position {position}: checkpoint must be True, False or a "
            f"positive int (repeats per segment), got {value!r} ({type(value).__name__}); "
            "e.g. checkpoint=True or checkpoint=2."
        )
    if value < 1:
        raise ValueError(
            f"{marker!r} at position {position}: checkpoint={value} must be a positive int "
            "(repeats per checkpoint segment); use checkpoint=False to keep every activation, "
            "or checkpoint=1 (or True) to recompute each repeat."
        )
    return value


def check_no_hidden_markers(
    module: nn.Module, position: int, opaque: tuple[type[nn.Module], ...]
) -> None:
    """Markers only work in a circuit's own list, not inside another container."""
    if isinstance(module, opaque):
        return
    stack = [("", module)]
    while stack:
        prefix, parent = stack.pop()
        for name, child in parent.named_children():
            if isinstance(child, _MODULE_MARKERS):
                kind = type(parent).__name__
                raise TypeError(
                    f"position {position} is a {type(module).__name__} holding "
                    f"{child!r} (as {prefix}{name}); markers only work in the Circuit's own "
                    f"list, not inside a {kind}. Splice the container's items in with *, "
                    f"e.g. Circuit(*{kind.lower()}), or pass the layers themselves."
                )
            if not isinstance(child, opaque):
                stack.append((f"{prefix}{name}.", child))


def check_flag(marker: Any, flag: str, position: int) -> None:
    value = getattr(marker, flag)
    if not isinstance(value, bool):
        raise TypeError(
            f"{type(marker).__name__}({marker.name!r}) at position {position}: {flag} must be "
            f"True or False, got {value!r}."
        )


def check_module_arg(
    marker: SaveInput | GetInput, argument: str, position: int, shared: str | None
) -> None:
    """`transform=` (or a module `op=`) must be a real layer: a module, not a marker; or a
    `PerRepeat` building one per repeat."""
    value = getattr(marker, argument)
    shown = f"{type(marker).__name__}({marker.name!r})"
    if isinstance(value, PerRepeat):
        check_per_repeat(value, position, shared)
        return
    if isinstance(value, MARKERS) or (isinstance(value, type) and issubclass(value, MARKERS)):
        raise TypeError(
            f"{shown} at position {position} has {argument}={value!r}, a marker; markers "
            "only work in the layer list. Pass a module (e.g. nn.Conv2d(64, 128, 1)) or a "
            "function instead."
        )
    if argument == "transform" and value is not None and not isinstance(value, nn.Module):
        raise TypeError(
            f"{shown} at position {position} has transform={value!r}, which is not an "
            "nn.Module; pass a module such as nn.Conv2d(64, 128, 1), or wrap a function as "
            "LambdaLayer(fn)."
        )


def check_read(marker: GetInput, position: int, shared: str | None) -> None:
    names = marker.name
    if isinstance(names, tuple):
        _check_names(marker, names, position)
    else:
        check_name(marker, position)
    check_flag(marker, "pop", position)
    check_module_arg(marker, "transform", position, shared)
    check_module_arg(marker, "op", position, shared)
    if not isinstance(marker.op, PerRepeat):
        _check_op(marker, position)


def _check_names(marker: GetInput, names: tuple[Any, ...], position: int) -> None:
    if not names:
        raise ValueError(
            f"GetInput(()) at position {position} reads no name; name one, "
            "GetInput('residual'), or several, GetInput(('k', 'v'), op=f)."
        )
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"GetInput({names!r}) at position {position} names {name!r}; names must be "
                "non-empty strings, e.g. GetInput(('k', 'v'), op=f)."
            )
    if len(names) > 1 and marker.transform is not None:
        raise ValueError(
            f"GetInput({names!r}) at position {position} has a transform, which applies to "
            "one saved tensor; read the name alone with its transform, or give the "
            "transform its own SaveInput(..., transform=...)."
        )
    if len(names) > 1 and marker.pop is True:
        raise ValueError(
            f"GetInput({names!r}, pop=True) at position {position} pops several stacks; "
            "a pop takes one tensor off one stack: pop each name with its own GetInput."
        )


def _check_op(marker: GetInput, position: int) -> None:
    op = marker.op
    shown = f"GetInput({marker.name!r})"
    if isinstance(op, str):
        raise ValueError(
            f"{shown} at position {position} has op={op!r}, which is not one of "
            f"{sorted(NAMED_OPS)}; pass one of those or a callable (current, saved) -> Tensor."
        )
    if isinstance(op, type) or not callable(op):
        raise TypeError(
            f"{shown} at position {position} has op={op!r}, which is not callable; pass a "
            "callable (current, saved) -> Tensor such as torch.add, or one of "
            f"{sorted(NAMED_OPS)}."
        )
    count = len(marker.names)
    if count > 1 and any(op is binary for binary in BINARY_OPS):
        raise ValueError(
            f"{shown} at position {position} reads {count} names with op={op_name(op)}, which "
            f"combines two tensors; pass an op taking the current tensor and {count} values, "
            "e.g. op=lambda x, k, v: attention(x, k, v)."
        )
    _check_arity(op, 1 + count, shown, position)


def _check_arity(op: Any, count: int, shown: str, position: int) -> None:
    """Refuse an op that can be seen to take a different number of positional arguments;
    silent where its signature cannot be read (built-in functions)."""
    target = op.forward if isinstance(op, nn.Module) else op
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*range(count))
    except TypeError:
        saved = "the saved tensor" if count == 2 else f"{count - 1} saved values"
        parameters = ", ".join(
            str(p.replace(annotation=inspect.Parameter.empty))
            for p in signature.parameters.values()
        )
        raise TypeError(
            f"{shown} at position {position} has op={op_name(op)}({parameters}), which cannot "
            f"take {count} arguments; an op receives the current tensor, then {saved}: "
            "e.g. lambda current, saved: current + saved."
        ) from None


def check_per_repeat(marker: PerRepeat, position: int, shared: str | None) -> None:
    """A factory must be callable, and its block (`shared`: the name of the block that shares
    weights around it, if any) must not share weights."""
    factory = marker.factory
    if not callable(factory):
        raise TypeError(
            f"PerRepeat at position {position} has the factory {factory!r}, which is not "
            "callable; pass a function (index, count) -> nn.Module, e.g. "
            "PerRepeat(lambda i, n: nn.Dropout(0.1 * i / n))."
        )
    if shared is not None:
        raise ValueError(
            f"{marker!r} at position {position} is inside a block whose repeats share weights "
            f"(block {shared!r} or one around it): one set of modules runs every "
            "repeat, so there is no per-repeat layer to build. Use share_weights=False, or "
            "move the layer out of the block."
        )
