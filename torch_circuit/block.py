"""Repeated blocks: `Block`, the module that holds a block's repeats and runs them in turn.

A block's repeats hand values to each other besides the current tensor: tensors pushed onto
a stack in one repeat and popped in a later one, and named outputs recorded in each. How a
block passes them along is fixed by the plan (`Exchange`); a block without stacks or outputs
runs its repeats on `x` alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .nodes import BlockNode, Immutable, Source
from .plan import BlockPlan, Port
from .program import add_context, give, plain, run, spread, take
from .scope import Repeat, describe_needs, layered_repr

__all__ = ["Block", "Exchange", "exchange_of"]


@dataclass(frozen=True)
class Exchange(Immutable):
    """How a block passes stacks and outputs between its repeats and the scope around it.

    The block keeps one list per stack of its port, then one per output. `fill` places the
    tensors the block is handed into its stacks; `takes` and `gives` are what each repeat is
    handed from them and gives back (index of the list, count, in order); `returns` are the
    lists whose values follow `x` in the block's result.
    """

    lists: int
    fill: tuple[tuple[int, int], ...]
    takes: tuple[tuple[int, int], ...]
    gives: tuple[tuple[int, int], ...]
    returns: tuple[int, ...]


def exchange_of(plan: BlockPlan) -> Exchange | None:
    """The exchange of a block, or `None` if its repeats neither push, pop nor output."""
    body, block = plan.body.port, plan.port
    if not body.stacks and not body.outputs:
        return None
    stacks = len(body.stacks)
    return Exchange(
        lists=stacks + len(body.outputs),
        fill=tuple((i, k) for i, (_, k, _) in enumerate(block.stacks) if k),
        takes=tuple((i, k) for i, (_, k, _) in enumerate(body.stacks) if k),
        gives=tuple(
            [(i, m) for i, (_, _, m) in enumerate(body.stacks) if m]
            + [(stacks + i, n) for i, (_, n) in enumerate(body.outputs)]
        ),
        returns=tuple(
            [i for i, (_, _, m) in enumerate(block.stacks) if m]
            + [stacks + i for i in range(len(body.outputs))]
        ),
    )


class Block(nn.Module):
    """A block of repeats, independent or sharing one set of weights.

    Repeats are registered as children `"0"`, `"1"`, ... (only `"0"` when shared), so a
    layer of repeat 1 has a key like `stage.1.5.weight`. A `Block` indexes, iterates and
    slices like an `nn.ModuleList` of the repeats it runs: `model.stage[1]` is the module
    of repeat 1 (the one shared module for every index when weights are tied).

    A `Circuit` builds its blocks with `build_block`; a pipeline stage builds one holding
    only the repeats that stage runs.

    Args:
        node: the block's declaration.
        children: the modules to register, by key (repeat modules, or parts of repeats that
            a pipeline stage runs step by step).
        runs: the repeats `forward` runs, in order, as `(repeat index, child key)`.
        exchange: how the repeats pass stacks and outputs along (`exchange_of`), if they do.
        captured: the outer skips the body reads (name, source), the first arguments after
            `x`.
        port: what the block as a whole exchanges with the scope around it.
    """

    def __init__(
        self,
        node: BlockNode,
        children: Mapping[str, nn.Module],
        runs: Sequence[tuple[int, str]],
        exchange: Exchange | None = None,
        captured: Sequence[tuple[str, Source]] = (),
        port: Port | None = None,
    ) -> None:
        super().__init__()
        for key, module in children.items():
            self.add_module(key, module)
        missing = [key for _, key in runs if key not in children]
        if missing:
            raise ValueError(f"Block {node.name!r} runs repeats {missing} it does not hold.")
        self._node = node
        self._runs = tuple(runs)
        self._index = {index: position for position, (index, _) in enumerate(self._runs)}
        self._exchange = exchange
        self._captured = tuple(captured)
        self._num_captures = len(self._captured)
        self._port = Port() if port is None else port

    @property
    def node(self) -> BlockNode:
        """The block's declaration: name, positions, repeats, body."""
        return self._node

    @property
    def name(self) -> str:
        return self._node.name

    @property
    def num_repeats(self) -> int:
        """The declared number of repeats (a pipeline stage may run only some of them)."""
        return self._node.num_repeats

    @property
    def share_weights(self) -> bool:
        return self._node.share_weights

    @property
    def exchange(self) -> Exchange | None:
        """How the repeats pass stacks and outputs along, if they do."""
        return self._exchange

    @property
    def captured(self) -> tuple[tuple[str, Source], ...]:
        """The outer skips the body reads, by name and source, in argument order."""
        return self._captured

    @property
    def port(self) -> Port:
        """What the block as a whole exchanges with the scope around it."""
        return self._port

    @property
    def indices(self) -> tuple[int, ...]:
        """The repeats `forward` runs: `0 .. num_repeats - 1`, or a pipeline stage's."""
        return tuple(index for index, _ in self._runs)

    def __len__(self) -> int:
        return len(self._runs)

    def __iter__(self) -> Iterator[nn.Module]:
        """The module of each repeat in turn (the one shared module N times if tied)."""
        modules = self._modules
        return (modules[key] for _, key in self._runs)  # type: ignore[misc]

    @overload
    def __getitem__(self, index: int) -> nn.Module: ...

    @overload
    def __getitem__(self, index: slice) -> nn.ModuleList: ...

    def __getitem__(self, index: int | slice) -> nn.Module | nn.ModuleList:
        """The module that runs repeat `index`; a slice gives an `nn.ModuleList` of them."""
        if isinstance(index, slice):
            return nn.ModuleList(list(self)[index])
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(
                f"block {self.name!r} is indexed by repeat (an int) or a slice, got "
                f"{index!r} ({type(index).__name__}); e.g. model.{self.name}[0]."
            )
        indices = self.indices
        if indices == tuple(range(self.num_repeats)):
            if not -len(indices) <= index < len(indices):
                raise IndexError(
                    f"block {self.name!r} has repeats 0 to {len(indices) - 1}; "
                    f"repeat {index} does not exist."
                )
            return self._module(self._runs[index][1])
        position = self._index.get(index)
        if position is None:  # a pipeline stage's block, indexed by the declared repeat
            raise IndexError(
                f"repeat {index} of block {self.name!r} does not run here; this stage runs "
                f"repeats {list(indices)} of its {self.num_repeats}."
            )
        return self._module(self._runs[position][1])

    def _module(self, key: str) -> nn.Module:
        module = self._modules[key]
        if module is None:  # pragma: no cover - children are never set to None
            raise KeyError(key)
        return module

    def forward(self, x: Any, *args: Any) -> Any:
        """Run the repeats in turn on `x`; `args` are the outer skips the body reads, then
        (if the block pops from outside) one list of the tensors it takes."""
        if self._exchange is not None or len(args) != self._num_captures:
            return self._exchanging(x, args)
        modules = self._modules
        checkpointed = self._node.checkpoint
        for index, key in self._runs:
            repeat: Any = modules[key]
            try:
                if checkpointed:
                    x = checkpoint(repeat, x, *args, use_reentrant=False, **_recompute(repeat))
                elif type(repeat) is Repeat and not repeat._lists and plain(repeat):
                    # What repeat(x, *args) would do, three frames shallower.
                    frame = [*args, *([None] * repeat._num_locals)]
                    x = run(repeat._steps, repeat._modules, x, frame)
                else:
                    x = repeat(x, *args)
            except Exception as error:
                add_context(error, self._where(index))
                raise
        return x

    def _exchanging(self, x: Any, args: tuple[Any, ...]) -> Any:
        """`forward` for a block whose repeats push, pop or output."""
        exchange = self._exchange
        if exchange is None or len(args) != self._num_captures + bool(exchange.fill):
            raise TypeError(self._needs_message(f"got {len(args)} argument(s) after x"))
        captured = args[: self._num_captures]
        lists: list[Any] = [[] for _ in range(exchange.lists)]
        if exchange.fill:
            spread(lists, exchange.fill, args[self._num_captures])
            args[self._num_captures].clear()  # the stacks hold them now
        for index, key in self._runs:
            handed = [*captured, take(lists, exchange.takes)] if exchange.takes else captured
            result = self._run(index, key, x, handed)
            if exchange.gives:
                give(lists, exchange.gives, result)
                result = result[0]
            x = result
        if not exchange.returns:
            return x
        return (x, *(value for i in exchange.returns for value in lists[i]))

    def _run(self, index: int, key: str, x: Any, args: Sequence[Any]) -> Any:
        """Run one repeat, noting which one on any error it raises."""
        repeat: Any = self._modules[key]
        try:
            if self._node.checkpoint:
                function = _with_list(repeat, self._num_captures, args)
                flat = (*args[: self._num_captures], *_handed(args, self._num_captures))
                return checkpoint(function, x, *flat, use_reentrant=False, **_recompute(repeat))
            if type(repeat) is Repeat and plain(repeat):  # as repeat(x, *args), shallower
                frame = repeat.open_frame(args)
                return repeat.close_frame(run(repeat._steps, repeat._modules, x, frame), frame)
            return repeat(x, *args)
        except Exception as error:
            add_context(error, self._where(index))
            raise

    def check_runs_alone(self, where: str) -> None:
        """Raise `TypeError` if the block reads skips saved outside it (then it runs only in
        the circuit it was built in); `where` says where it was found."""
        if self._captured or (self._exchange and self._exchange.fill):
            raise TypeError(self._needs_message(f"{where} holds it alone"))

    def _needs_message(self, problem: str) -> str:
        pops = [name for name, takes, _ in self._port.stacks if takes]
        return (
            f"Block {self.name!r} reads {describe_needs(self._captured, pops)}, saved outside "
            f"it in the circuit it was built in (StartBlock at position {self._node.position}), "
            f"but {problem}; it runs only there. Build the block anew from its layers to use "
            "it elsewhere."
        )

    def _where(self, index: int) -> str:
        node = self._node
        return (
            f"in repeat {index} of {node.num_repeats} of block {node.name!r} "
            f"(StartBlock at position {node.position})"
        )

    def __repr__(self) -> str:
        return layered_repr(self)

    def repr_with(self, children: Mapping[str, str]) -> str:
        """The block's repr, given its repeats': alike neighbours folded, `(0-2): 3 x Repeat(`."""
        shared = ", shared weights" if self.share_weights else ""
        held = ""
        if self.indices != tuple(range(self.num_repeats)):
            held = f", this stage: {_ranges(self.indices) or 'none'}"
        items = list(children.items())
        lines = []
        start = 0
        while start < len(items):
            end = start
            while end + 1 < len(items) and items[end + 1][1] == items[start][1]:
                end += 1
            body = items[start][1].replace("\n", "\n  ")
            if end == start:
                lines.append(f"({items[start][0]}): {body}")
            else:
                count = end - start + 1
                lines.append(f"({items[start][0]}-{items[end][0]}): {count} x {body}")
            start = end + 1
        inner = "\n  ".join(lines)
        return f"Block({self.name!r} ×{self.num_repeats}{shared}{held})(\n  {inner}\n)"


def _ranges(indices: Sequence[int]) -> str:
    """`[2, 3]` -> `"repeats 2-3"`; `[1]` -> `"repeat 1"`."""
    if not indices:
        return ""
    if len(indices) == 1:
        return f"repeat {indices[0]}"
    return f"repeats {indices[0]}-{indices[-1]}"


def _recompute(module: nn.Module) -> dict[str, Any]:
    """Checkpoint options that undo a recompute's buffer updates (BatchNorm statistics).

    The forward pass already updated the buffers once; the recompute during backward must not
    update them again. Under `torch.compile` the recompute is functional and leaves them be.
    """
    if torch.compiler.is_compiling() or next(module.buffers(), None) is None:
        return {}

    def contexts() -> tuple[contextlib.AbstractContextManager[None], ...]:
        return contextlib.nullcontext(), _restoring_buffers(module)

    return {"context_fn": contexts}


@contextlib.contextmanager
def _restoring_buffers(module: nn.Module) -> Iterator[None]:
    saved = [(buffer, buffer.clone()) for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def _handed(args: Sequence[Any], num_captures: int) -> list[Any]:
    """The tensors handed to a repeat, as separate arguments (checkpoint keeps them)."""
    return list(args[num_captures]) if len(args) > num_captures else []


def _with_list(repeat: nn.Module, num_captures: int, args: Sequence[Any]) -> Callable[..., Any]:
    """The repeat as checkpoint calls it: every tensor a separate argument. The tensors it
    takes off stacks are handed back as a fresh list at each call, the recompute included."""
    if len(args) == num_captures:
        return repeat

    def call(x: Any, *flat: Any) -> Any:
        return repeat(x, *flat[:num_captures], list(flat[num_captures:]))

    return call
