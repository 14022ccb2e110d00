"""Ways of combining the current tensor with a saved one at a `GetInput`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["BINARY_OPS", "NAMED_OPS", "cat_channels", "op_name", "resolve_op"]


def cat_channels(current: Tensor, *saved: Tensor) -> Tensor:
    """Concatenate `current` and the saved tensors on the channel dimension (dim 1), current
    first; with several names, in the order they are named."""
    return torch.cat((current, *saved), dim=1)


BINARY_OPS = (torch.add, torch.mul)
"""Named ops that combine exactly two tensors (a read of several names cannot use them)."""

NAMED_OPS: dict[str, Callable[..., Tensor]] = {
    "add": torch.add,
    "mul": torch.mul,
    "cat": cat_channels,
}


def resolve_op(op: Any) -> Any:
    """Turn `"add"`/`"mul"`/`"cat"` and `torch.cat` into callables; pass the rest through.

    Unknown strings come back unchanged so that `Circuit` can report them with their position.
    """
    if isinstance(op, str):
        return NAMED_OPS.get(op, op)
    if op is torch.cat:
        return cat_channels
    return op


def op_name(op: Any) -> str:
    """A short name for an op: `add`, `mul`, `cat`, a function's or a class's name."""
    for known_name, known in NAMED_OPS.items():
        if op is known:
            return known_name
    if isinstance(op, nn.Module):
        return type(op).__name__
    name: object = getattr(op, "__name__", None)
    if name == "<lambda>":
        return "lambda"
    return name if isinstance(name, str) else type(op).__name__
