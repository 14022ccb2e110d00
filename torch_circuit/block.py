"""Repeated blocks: the modules that hold each repeat, and fresh copies of a block body."""

from __future__ import annotations

import contextlib
import copy
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .plan import BlockNode, BlockPlan, Node, ScopePlan
from .program import Step, add_context, run

__all__ = ["Block", "Repeat", "fresh_copy", "structural_copy"]


class Scope(nn.Module):
    """A module that runs a compiled scope: the top level of a ``Circuit``, or one repeat.

    Its children are the scope's layers, markers and blocks, registered in forward order under
    their argument positions (blocks under their names).
    """

    _steps: tuple[Step, ...]
    _num_captures: int
    _num_locals: int
    _nodes: tuple[Node, ...]

    def _build(self, plan: ScopePlan) -> None:
        for key, entry in plan.entries:
            self.add_module(key, Block(entry) if isinstance(entry, BlockPlan) else entry)
        self._steps = plan.steps
        self._num_captures = plan.num_captures
        self._num_locals = plan.num_slots - plan.num_captures
        self._nodes = plan.nodes

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The declared structure of this scope, as plain data (see ``torch_circuit.plan``)."""
        return self._nodes


class Repeat(Scope):
    """One repeat of a block body; ``forward`` takes the outer skips the body reads."""

    def __init__(self, plan: ScopePlan) -> None:
        super().__init__()
        self._build(plan)

    def forward(self, x: Any, *captured: Any) -> Any:
        return run(self._steps, self._modules, x, [*captured, *([None] * self._num_locals)])


class Block(nn.Module):
    """A block of ``num_repeats`` repeats, independent or sharing one set of weights.

    Repeats are registered as children ``"0"``, ``"1"``, ... (only ``"0"`` when shared), so a
    layer of repeat 1 has a key like ``stage.1.5.weight``.
    """

    def __init__(self, plan: BlockPlan) -> None:
        super().__init__()
        node = plan.node
        first = Repeat(plan.body)
        self.add_module("0", first)
        if not node.share_weights:
            for index in range(1, node.num_repeats):
                self.add_module(str(index), fresh_copy(first))
        self._order = tuple(node.repeat_key(i) for i in range(node.num_repeats))
        self._node = node

    @property
    def node(self) -> BlockNode:
        """The block's declaration: name, positions, repeats, body."""
        return self._node

    @property
    def name(self) -> str:
        return self._node.name

    @property
    def num_repeats(self) -> int:
        return self._node.num_repeats

    @property
    def share_weights(self) -> bool:
        return self._node.share_weights

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[Repeat]:
        """The module of each repeat in turn (the one shared module N times if tied)."""
        return (self[index] for index in range(len(self)))

    def __getitem__(self, index: int) -> Repeat:
        """The module that runs repeat ``index`` (the single shared one if weights are tied)."""
        return self._modules[self._order[index]]  # type: ignore[return-value]

    def forward(self, x: Any, *captured: Any) -> Any:
        modules = self._modules
        checkpointed = self._node.checkpoint
        for index, key in enumerate(self._order):
            repeat: nn.Module = modules[key]  # type: ignore[assignment]
            try:
                if checkpointed:
                    x = checkpoint(repeat, x, *captured, use_reentrant=False, **_recompute(repeat))
                else:
                    x = repeat(x, *captured)
            except Exception as error:
                add_context(error, self._where(index))
                raise
        return x

    def _where(self, index: int) -> str:
        node = self._node
        return (
            f"in repeat {index} of {node.num_repeats} of block {node.name!r} "
            f"(StartBlock at position {node.position})"
        )

    def __repr__(self) -> str:
        shared = ", shared weights" if self.share_weights else ""
        lines = []
        children = [(key, repr(module)) for key, module in self._modules.items()]
        start = 0
        while start < len(children):
            end = start
            while end + 1 < len(children) and children[end + 1][1] == children[start][1]:
                end += 1
            body = children[start][1].replace("\n", "\n  ")
            if end == start:
                lines.append(f"({children[start][0]}): {body}")
            else:
                count = end - start + 1
                lines.append(f"({children[start][0]}-{children[end][0]}): {count} x {body}")
            start = end + 1
        inner = "\n  ".join(lines)
        return f"Block({self.name!r} ×{self.num_repeats}{shared})(\n  {inner}\n)"


def _recompute(module: nn.Module) -> dict[str, Any]:
    """Checkpoint options that undo a recompute's buffer updates (BatchNorm statistics).

    The forward pass already updated the buffers once; the recompute during backward must not
    update them again. Under ``torch.compile`` the recompute is functional and leaves them be.
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


def fresh_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with every submodule re-initialised, as if built anew.

    Modules are reset children first, the order in which ``__init__`` methods initialise them,
    so a parent's own initialisation (``nn.MultiheadAttention`` zeroing ``out_proj.bias``)
    has the last word. A parameter owned by a module with neither ``reset_parameters`` nor
    ``_reset_parameters`` keeps the values it was copied with.
    """
    # Plans are immutable: share them, so every repeat runs the very same steps (and
    # regional compilation reuses one compiled body for all of them).
    memo: dict[int, Any] = {}
    for scope in module.modules():
        if isinstance(scope, Scope):
            memo[id(scope._steps)] = scope._steps
            memo[id(scope._nodes)] = scope._nodes
    clone = structural_copy(module, memo)
    _reinitialise(clone, seen=set())
    return clone


_SCALARS = (int, float, bool, str, bytes, type(None))
_EMPTY_CONTAINERS = (dict, OrderedDict, list, set)
_COPY_PROTOCOL = ("__getstate__", "__setstate__", "__reduce_ex__", "__reduce__", "__deepcopy__")


def structural_copy(module: nn.Module, memo: dict[int, Any] | None = None) -> nn.Module:
    """``copy.deepcopy(module, memo)``, several times faster on plain modules.

    ``deepcopy`` rebuilds each of a module's dozen (mostly empty) hook dictionaries through the
    pickle protocol, which makes building many repeats slow. Here each submodule's attribute
    dictionary is copied entry by entry: scalars are shared, empty containers made anew, and
    everything else (parameters, buffers, non-empty hooks, other state) goes to ``deepcopy``
    with the same ``memo``, so sharing within the module is kept. A class that customises how
    it is copied or pickled, or uses ``__slots__``, is handed to ``deepcopy`` whole.
    """
    memo = {} if memo is None else memo
    if id(module) in memo:
        return memo[id(module)]  # type: ignore[no-any-return]
    cls = type(module)
    customised = any(
        getattr(cls, name, None) is not getattr(nn.Module, name, None) for name in _COPY_PROTOCOL
    )
    if customised or any("__slots__" in vars(base) for base in cls.__mro__):
        return copy.deepcopy(module, memo)
    clone = cls.__new__(cls)
    memo[id(module)] = clone
    state: dict[str, Any] = {}
    for key, value in module.__dict__.items():
        if key == "_compiled_call_impl":
            continue  # nn.Module's own pickling drops it too: a copy starts uncompiled
        if key == "_modules":
            state[key] = {
                name: None if child is None else structural_copy(child, memo)
                for name, child in value.items()
            }
        elif type(value) in _SCALARS:
            state[key] = value
        elif type(value) in _EMPTY_CONTAINERS and not value:
            state[key] = type(value)()
        else:
            state[key] = copy.deepcopy(value, memo)
    clone.__dict__.update(state)
    return clone


def _reinitialise(module: nn.Module, seen: set[int]) -> None:
    if id(module) in seen:
        return
    seen.add(id(module))
    for child in module.children():
        _reinitialise(child, seen)
    reset = getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)
    if callable(reset):
        reset()
