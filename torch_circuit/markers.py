"""The markers that structure a `Circuit`'s flat layer list, and `LambdaLayer`.

Markers record intent only; `Circuit` validates them (so an error can name the marker's
position in the argument list) and turns them into a plan when it is built. `SaveInput`,
`GetInput` and `Output` are modules: they are registered at their position, their hooks fire
like any module's, and their `forward` is what the circuit runs there. `StartBlock`,
`EndBlock` and `PerRepeat` are plain objects: they never run.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .ops import op_name, resolve_op

__all__ = [
    "EndBlock",
    "GetInput",
    "LambdaLayer",
    "Output",
    "PerRepeat",
    "SaveInput",
    "StartBlock",
]


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


def _transform_alias(kind: str, transform: Any, transformation: Any) -> Any:
    """`transformation=` is the upstream project's spelling of `transform=`."""
    if transformation is _UNSET:
        return transform
    if transform is not None:
        raise TypeError(
            f"{kind} got both transform= and transformation=; pass only transform=, the "
            "current spelling."
        )
    warnings.warn(
        f"{kind}(transformation=...) is the old spelling; use {kind}(transform=...).",
        FutureWarning,
        stacklevel=3,
    )
    return transformation


class _Marker(nn.Module):
    """A marker module: its `forward` is what the circuit runs there, hooks included.

    Registering a hook sets `hooked`, so that the circuit calls the marker through
    `nn.Module.__call__` (and the hook fires); a marker without hooks is run directly, at no
    cost. (A hook put into the hook dictionaries by hand, bypassing `register_*`, is missed.)
    """

    hooked = False

    def register_forward_pre_hook(self, *args: Any, **kwargs: Any) -> Any:
        self.hooked = True
        return super().register_forward_pre_hook(*args, **kwargs)

    def register_forward_hook(self, *args: Any, **kwargs: Any) -> Any:
        self.hooked = True
        return super().register_forward_hook(*args, **kwargs)

    def register_full_backward_pre_hook(self, *args: Any, **kwargs: Any) -> Any:
        self.hooked = True
        return super().register_full_backward_pre_hook(*args, **kwargs)

    def register_full_backward_hook(self, *args: Any, **kwargs: Any) -> Any:
        self.hooked = True
        return super().register_full_backward_hook(*args, **kwargs)


class SaveInput(_Marker):
    """Remember the current tensor under `name` for a later `GetInput(name)`.

    The current tensor passes on unchanged; what is saved is `transform(x)`, or `x` itself.

    Args:
        name: the skip's name; scoped like a variable (see `GetInput`).
        transform: an optional module applied to the tensor at save time, e.g. a 1x1 conv
            projection. It is a real submodule: trained, saved and copied per repeat.
        push: push the tensor onto a stack called `name` that stays visible after the block
            ends, for a later `GetInput(name, pop=True)` (a U-Net's encoder and decoder).
        transformation: the old spelling of `transform` (warns).

    Examples:
        >>> Circuit(SaveInput("x"), nn.Linear(8, 8), GetInput("x"))
    """

    def __init__(
        self,
        name: str,
        transform: nn.Module | None = None,
        *,
        push: bool = False,
        transformation: nn.Module | None = _UNSET,
    ) -> None:
        super().__init__()
        self.name = name
        self.transform = _transform_alias("SaveInput", transform, transformation)
        self.push = push

    def forward(self, x: Any) -> Any:
        """The tensor passes through; hooks on the save see it here."""
        return x

    def capture(self, x: Any) -> Any:
        """The value this save stores: `transform(x)`, or `x` itself."""
        transform = self.transform
        return x if transform is None else transform(x)

    def extra_repr(self) -> str:
        return repr(self.name) + (", push=True" if self.push is True else "")


class GetInput(_Marker):
    """Combine the current tensor with what was saved: `op(x, transform(saved))`.

    A name resolves to the nearest earlier `SaveInput(name)` in the same repeat of the same
    block, else in the enclosing block, out to the top level (or to a named input of the
    circuit).

    Args:
        name: the name of an earlier `SaveInput` or named input, or a tuple of names:
            `GetInput(("k", "v"), op=f)` computes `f(x, k, v)`.
        op: any callable `(current, saved) -> Tensor` (a function, a lambda, an `nn.Module`),
            `torch.cat`, or one of `"add"`, `"mul"`, `"cat"`. `cat` concatenates on dim 1,
            current first. With several names, `op` takes the current tensor and one value
            per name.
        transform: an optional module applied to the saved tensor before `op` (one name only).
        pop: take the most recent tensor off the stack `name` (see `SaveInput(push=True)`).
        transformation: the old spelling of `transform` (warns).

    Examples:
        >>> GetInput("residual")                 # x + residual
        >>> GetInput("enc1", op="cat")           # U-Net: torch.cat((x, enc1), dim=1)
        >>> GetInput(("memory", "mask"), op=cross_attention)
    """

    def __init__(
        self,
        name: str | tuple[str, ...],
        op: Callable[..., Tensor] | str = torch.add,
        transform: nn.Module | None = None,
        *,
        pop: bool = False,
        transformation: nn.Module | None = _UNSET,
    ) -> None:
        super().__init__()
        self.name = name
        # Assigned before op: parameters() follow forward order (transform runs first).
        self.transform = _transform_alias("GetInput", transform, transformation)
        self.op = resolve_op(op)
        self.pop = pop

    @property
    def names(self) -> tuple[str, ...]:
        """The names read, in the order `op` receives them."""
        return self.name if isinstance(self.name, tuple) else (self.name,)

    @property
    def op_name(self) -> str:
        """`add`, `mul`, `cat`, or the name of the function or module used as op."""
        return op_name(self.op)

    def forward(self, x: Any, *saved: Any) -> Any:
        """`op(x, *saved)`, the single saved value transformed first; hooks see it here."""
        if not saved:
            raise RuntimeError(
                f"{self!r} was called directly; markers only work inside a Circuit: pass it "
                "in the layer list of Circuit(...)."
            )
        transform = self.transform
        if transform is not None:
            saved = (transform(saved[0]),)
        return self.op(x, *saved)

    def combine(self, x: Any, saved: Any) -> Any:
        """`forward` for a read of one name: `op(x, transform(saved))`."""
        transform = self.transform
        if transform is not None:
            saved = transform(saved)
        return self.op(x, saved)

    def extra_repr(self) -> str:
        pop = ", pop=True" if self.pop is True else ""
        return f"{self.name!r}, op={self.op_name}{pop}"


class Output(_Marker):
    """Return the current tensor under `name`, and pass it on unchanged.

    A circuit with any `Output` returns a `dict` of its outputs in declaration order (and
    nothing else: end with an `Output` to return the final tensor too). Inside a block an
    output holds one tensor per execution, as a tuple in execution order.

    Args:
        name: the output's key in the returned dict; distinct among the circuit's outputs.

    Examples:
        >>> model = Circuit(nn.Linear(8, 8), Output("hidden"), nn.Linear(8, 2), Output("logits"))
        >>> model(torch.randn(1, 8)).keys()
        dict_keys(['hidden', 'logits'])
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, x: Any) -> Any:
        """The tensor passes through; hooks on the output see it here."""
        return x

    def extra_repr(self) -> str:
        return repr(self.name)


class PerRepeat:
    """A layer built anew for each repeat: `factory(index, count)` at construction.

    `index` counts this layer's occurrences in forward order across every repeat of every
    enclosing block (0-based), and `count` is their total; outside any block the factory is
    called once, with `(0, 1)`. The modules it returns are used as built: not copied, not
    re-initialised. It cannot be used inside a block with `share_weights=True`.

    Besides a layer of the list, it may be a read's `op` or a save's or read's `transform`,
    where that module's width changes per repeat: `GetInput("t", op=PerRepeat(make_block))`.

    Args:
        factory: a callable `(index, count) -> nn.Module`.

    Examples:
        >>> StartBlock("layer", num_repeats=12),
        >>> ...
        >>> PerRepeat(lambda i, n: DropPath(0.1 * i / (n - 1))),   # stochastic depth
        >>> PerRepeat(lambda i, n: nn.Conv2d(32 * 2**i, 32 * 2 ** (i + 1), 3)),  # widening
    """

    def __init__(self, factory: Callable[[int, int], nn.Module]) -> None:
        self.factory = factory

    def __repr__(self) -> str:
        return f"PerRepeat({op_name(self.factory)})"

    def __deepcopy__(self, memo: dict[int, Any]) -> PerRepeat:
        # A recipe, shared by every copy: copying it would copy the modules its factory hands
        # out (a factory that returns one module on purpose, to tie it, would stop tying it).
        return self


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
_show_default(SaveInput.__init__, "transformation", "None")
_show_default(GetInput.__init__, "transformation", "None")


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

    Examples:
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

    Examples:
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

    Examples:
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
