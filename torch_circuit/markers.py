"""The markers that structure a `Circuit`'s flat layer list, and `LambdaLayer`.

Markers record intent only; `Circuit` validates them (so an error can name the marker's
position in the argument list) and turns them into a plan when it is built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .ops import op_name, resolve_op

__all__ = ["EndBlock", "GetInput", "LambdaLayer", "SaveInput", "StartBlock"]


def _marker_forward_error(marker: nn.Module) -> RuntimeError:
    return RuntimeError(
        f"{marker!r} was called directly; markers only work inside a Circuit: "
        "pass it in the layer list of Circuit(...)."
    )


class SaveInput(nn.Module):
    """Remember the current tensor under `name` for a later `GetInput(name)`.

    Args:
        name: the skip's name; scoped like a variable (see `GetInput`).
        transform: an optional module applied to the tensor at save time, e.g. a 1x1 conv
            projection. It is a real submodule: trained, saved and copied per repeat.

    Example:

        >>> Circuit(SaveInput("x"), nn.Linear(8, 8), GetInput("x"))
    """

    def __init__(self, name: str, transform: nn.Module | None = None) -> None:
        super().__init__()
        self.name = name
        self.transform = transform

    def capture(self, x: Tensor) -> Tensor:
        """The value this save stores: `transform(x)`, or `x` itself."""
        transform = self.transform
        return x if transform is None else transform(x)

    def forward(self, x: Tensor) -> Tensor:
        raise _marker_forward_error(self)

    def extra_repr(self) -> str:
        return repr(self.name)


class GetInput(nn.Module):
    """Combine the current tensor with the one saved under `name`: `op(x, transform(saved))`.

    The name resolves to the nearest earlier `SaveInput(name)` in the same repeat of the same
    block, else in the enclosing block, out to the top level.

    Args:
        name: the name of an earlier `SaveInput`.
        op: any callable `(current, saved) -> Tensor` (a function, a lambda, an
            `nn.Module`), `torch.cat`, or one of `"add"`, `"mul"`, `"cat"`. `cat`
            concatenates on dim 1, current first.
        transform: an optional module applied to the saved tensor before `op`.

    Example:

        >>> GetInput("residual")                 # x + residual
        >>> GetInput("enc1", op="cat")           # U-Net: torch.cat((x, enc1), dim=1)
    """

    def __init__(
        self,
        name: str,
        op: Callable[..., Tensor] | str = torch.add,
        transform: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.transform = transform  # assigned before op: parameters() follow forward order
        self.op = resolve_op(op)

    @property
    def op_name(self) -> str:
        """`add`, `mul`, `cat`, or the name of the function or module used as op."""
        return op_name(self.op)

    def combine(self, x: Tensor, saved: Tensor) -> Tensor:
        """Apply this read to the current tensor `x` and the saved value."""
        transform = self.transform
        if transform is not None:
            saved = transform(saved)
        result: Tensor = self.op(x, saved)
        return result

    def forward(self, x: Tensor) -> Tensor:
        raise _marker_forward_error(self)

    def extra_repr(self) -> str:
        return f"{self.name!r}, op={self.op_name}"


def _show_default(function: Callable[..., Any], name: str, text: str) -> None:
    """Show the default of `name` in `function`'s signature as `text` (in `help()`),
    instead of the default's own repr (`<built-in method add ...>`)."""

    class Shown:
        def __repr__(self) -> str:
            return text

    signature = inspect.signature(function)
    parameters = [
        parameter.replace(default=Shown()) if parameter.name == name else parameter
        for parameter in signature.parameters.values()
    ]
    function.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]


_show_default(GetInput.__init__, "op", "torch.add")


class StartBlock:
    """Open a block that ends at the matching `EndBlock(name)` and runs `num_repeats` times.

    Args:
        name: the block's name; it keys the block's parameters in the `state_dict`, so it
            must be a Python identifier, distinct from its sibling blocks' names.
        num_repeats: how many times the block body runs.
        share_weights: if `False` (default) each repeat is an independent, freshly
            initialised copy of the body; if `True` one set of modules runs every repeat.
        checkpoint: if `True`, each repeat's activations are recomputed during backward
            instead of kept (`torch.utils.checkpoint` with `use_reentrant=False`),
            trading compute for memory; BatchNorm running statistics are updated once.
            An int `k` checkpoints segments of `k` repeats instead (the last one may be
            shorter): only each segment's input is kept, and one segment is recomputed at a
            time. `True` is `k=1`; gradients are those of the unchecked block either way.

    Example:

        >>> StartBlock("stage", num_repeats=3)
        >>> StartBlock("layer", num_repeats=12, checkpoint=True)
        >>> StartBlock("layer", num_repeats=12, checkpoint=2)  # 6 segments of 2 repeats
    """

    def __init__(
        self,
        name: str,
        num_repeats: int = 1,
        share_weights: bool = False,
        checkpoint: bool | int = False,
    ) -> None:
        self.name = name
        self.num_repeats = num_repeats
        self.share_weights = share_weights
        self.checkpoint = checkpoint

    def __repr__(self) -> str:
        extra = ", share_weights=True" if self.share_weights is True else ""
        if self.checkpoint is not False:
            extra += f", checkpoint={self.checkpoint!r}"
        return f"StartBlock({self.name!r}, num_repeats={self.num_repeats!r}{extra})"


class EndBlock:
    """Close the block opened by `StartBlock(name)`.

    Example:

        >>> EndBlock("stage")
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"EndBlock({self.name!r})"


class LambdaLayer(nn.Module):
    """Wrap a plain function of one tensor as a layer.

    `Circuit` wraps plain callables in its layer list this way by itself.

    Args:
        fn: a callable taking the current tensor and returning the next one.

    Example:

        >>> LambdaLayer(torch.flatten)
    """

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        super().__init__()
        if isinstance(fn, type) or not callable(fn):
            raise TypeError(
                f"LambdaLayer needs a function of one tensor, got {fn!r}; "
                "pass e.g. torch.relu or lambda x: x * 2."
            )
        self.fn = fn

    def forward(self, x: Any) -> Any:
        return self.fn(x)

    def extra_repr(self) -> str:
        return op_name(self.fn)
