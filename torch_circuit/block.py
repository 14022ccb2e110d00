"""Repeated blocks: the modules that hold each repeat, and fresh copies of a block body."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

from torch import nn

from .nodes import BlockNode, Node
from .plan import BlockPlan, ScopePlan
from .program import Step, run
from .repeats import run_repeats

__all__ = ["Block", "Repeat", "Scope", "build_block", "fresh_copy", "structural_copy"]


class Scope(nn.Module):
    """A module that runs a compiled scope: the top level of a `Circuit`, or one repeat.

    Its children are the scope's layers, markers and blocks, registered in forward order under
    their argument positions (blocks under their names).
    """

    _steps: tuple[Step, ...]
    _num_captures: int
    _num_locals: int
    _nodes: tuple[Node, ...]

    def _build(self, plan: ScopePlan) -> None:
        for key, entry in plan.entries:
            self.add_module(key, build_block(entry) if isinstance(entry, BlockPlan) else entry)
        self._steps = plan.steps
        self._num_captures = plan.num_captures
        self._num_locals = plan.num_slots - plan.num_captures
        self._nodes = plan.nodes

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The declared structure of this scope, as plain data (see `torch_circuit.nodes`)."""
        return self._nodes

    @property
    def steps(self) -> tuple[Step, ...]:
        """The steps `forward` runs, in order (see `torch_circuit.program`)."""
        return self._steps

    @property
    def num_captures(self) -> int:
        """How many outer skips this scope receives: the first slots of its frame."""
        return self._num_captures

    @property
    def num_slots(self) -> int:
        """The size of this scope's frame: its captured skips, then its own saves."""
        return self._num_captures + self._num_locals

    def run_steps(self, steps: Sequence[Step], x: Any, frame: list[Any]) -> Any:
        """Run `steps` (some of `self.steps`) on `x` with the skips in `frame`."""
        return run(steps, self._modules, x, frame)


class Repeat(Scope):
    """One repeat of a block body; `forward` takes the outer skips the body reads."""

    def __init__(self, plan: ScopePlan) -> None:
        super().__init__()
        self._build(plan)

    def forward(self, x: Any, *captured: Any) -> Any:
        """Run the body on `x`; `captured` are the outer skips it reads, in plan order."""
        return run(self._steps, self._modules, x, [*captured, *([None] * self._num_locals)])


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
    """

    def __init__(
        self,
        node: BlockNode,
        children: Mapping[str, nn.Module],
        runs: Sequence[tuple[int, str]],
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

    def forward(self, x: Any, *captured: Any) -> Any:
        """Run the repeats in turn on `x`; `captured` are the outer skips the body reads."""
        # The loop is `regions.run_repeats` (issue 13): checkpoint segments, compile regions.
        modules = self._modules
        repeats = [(index, modules[key]) for index, key in self._runs]
        return run_repeats(self._node, repeats, x, captured, self._where)  # type: ignore[arg-type]

    def _where(self, index: int) -> str:
        node = self._node
        return (
            f"in repeat {index} of {node.num_repeats} of block {node.name!r} "
            f"(StartBlock at position {node.position})"
        )

    def __repr__(self) -> str:
        shared = ", shared weights" if self.share_weights else ""
        held = ""
        if self.indices != tuple(range(self.num_repeats)):
            held = f", this stage: {_ranges(self.indices) or 'none'}"
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
        return f"Block({self.name!r} ×{self.num_repeats}{shared}{held})(\n  {inner}\n)"


def build_block(plan: BlockPlan) -> Block:
    """The `Block` a circuit holds for `plan`: repeat 0 built from the modules passed in,
    the others fresh copies of it (or repeat 0 alone, run every time, if weights are shared)."""
    node = plan.node
    first = Repeat(plan.body)
    children: dict[str, nn.Module] = {"0": first}
    if not node.share_weights:
        for index in range(1, node.num_repeats):
            children[str(index)] = fresh_copy(first)
    runs = [(index, node.repeat_key(index)) for index in range(node.num_repeats)]
    return Block(node, children, runs)


def _ranges(indices: Sequence[int]) -> str:
    """`[2, 3]` -> `"repeats 2-3"`; `[1]` -> `"repeat 1"`."""
    if not indices:
        return ""
    if len(indices) == 1:
        return f"repeat {indices[0]}"
    return f"repeats {indices[0]}-{indices[-1]}"


def fresh_copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module` with every submodule re-initialised, as if built anew.

    Modules are reset children first, the order in which `__init__` methods initialise them,
    so a parent's own initialisation (`nn.MultiheadAttention` zeroing `out_proj.bias`)
    has the last word. A parameter owned by a module with neither `reset_parameters` nor
    `_reset_parameters` keeps the values it was copied with.
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
    """`copy.deepcopy(module, memo)`, several times faster on plain modules.

    `deepcopy` rebuilds each of a module's dozen (mostly empty) hook dictionaries through the
    pickle protocol, which makes building many repeats slow. Here each submodule's attribute
    dictionary is copied entry by entry: scalars are shared, empty containers made anew, and
    everything else (parameters, buffers, non-empty hooks, other state) goes to `deepcopy`
    with the same `memo`, so sharing within the module is kept. A class that customises how
    it is copied or pickled, or uses `__slots__`, is handed to `deepcopy` whole.
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
