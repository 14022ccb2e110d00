"""The steps a scope runs at every forward, and the loop that runs them.

A scope is the top level of a `Circuit` or one repeat of a block. `plan.py` compiles each
scope's part of the layer list into a tuple of steps once; `run` only executes it. Steps look
modules up by key in the scope's `_modules` at every call, so a module swapped in after
construction (quantisation, LoRA injection) is the one that runs.

Everything a forward keeps lives in the scope's frame, a list local to the call (never on
`self`): the skips saved (each dropped right after its last read), the stacks of pushed
skips (a tensor leaves its stack when it is popped), and the lists of named outputs.

A marker runs through `nn.Module.__call__` when hooks could see it (its `hooked` flag, set
when a hook is registered on it, or a global module hook: the `_g*` dictionaries, torch's own,
tested inline because this is the forward path), and directly otherwise, so that
hooks on markers fire at no cost to a model without any. Blocks and repeats are called
directly when `nn.Module.__call__` would do nothing else (see `plain`): nested blocks then
cost two frames of the stack each, not five.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.nn.modules.module import (
    _global_backward_hooks as _gb,
)
from torch.nn.modules.module import (
    _global_backward_pre_hooks as _gbp,
)
from torch.nn.modules.module import (
    _global_forward_hooks as _gf,
)
from torch.nn.modules.module import (
    _global_forward_pre_hooks as _gfp,
)

from .nodes import Immutable

__all__ = [
    "CallLayer",
    "PopSkip",
    "PushSkip",
    "ReadSkip",
    "ReadSkips",
    "RunBlock",
    "SaveOutput",
    "SaveSkip",
    "Step",
    "add_context",
    "give",
    "plain",
    "run",
    "spread",
    "take",
]

Modules = dict[str, nn.Module | None]


def plain(module: nn.Module) -> bool:
    """Whether `module(...)` would only call `module.forward(...)`: no hook of any kind on
    it or globally, and not compiled in place. `nn.Module.__call__` makes the same test."""
    return not (
        module._forward_pre_hooks
        or module._forward_hooks
        or module._backward_pre_hooks
        or module._backward_hooks
        or module._compiled_call_impl is not None
        or _gfp
        or _gf
        or _gbp
        or _gb
    )


@dataclass(frozen=True)
class CallLayer(Immutable):
    """`x = layer(x)`."""

    key: str
    position: int

    def run(self, modules: Modules, x: Any, frame: list[Any]) -> Any:
        return modules[self.key](x)  # type: ignore[misc]

    def context(self, modules: Modules) -> str:
        layer = type(modules[self.key]).__name__
        if self.key.isdigit():
            return f"in the layer at position {self.key} ({layer})"
        return f"in the layer {self.key!r} at position {self.position} ({layer})"


@dataclass(frozen=True)
class MarkerStep(Immutable):
    """A step at a marker: its key and position, and the note an error there gets."""

    key: str
    position: int

    def context(self, modules: Modules) -> str:
        return _marker_context(modules, self.key, self.position)


@dataclass(frozen=True)
class SaveSkip(MarkerStep):
    """`frame[slot] = save.capture(x)`; `x` passes through."""

    slot: int

    def run(self, modules: Modules, x: Any, frame: list[Any]) -> Any:
        save: Any = modules[self.key]
        if save.hooked or _gfp or _gf or _gbp or _gb:
            x = save(x)
        frame[self.slot] = save.capture(x)
        return x


@dataclass(frozen=True)
class PushSkip(MarkerStep):
    """`frame[stack].append(save.capture(x))`; `x` passes through."""

    stack: int

    def run(self, modules: Modules, x: Any, frame: list[Any]) -> Any:
        save: Any = modules[self.key]
        if save.hooked or _gfp or _gf or _gbp or _gb:
            x = save(x)
        frame[self.stack].append(save.capture(x))
        return x


@dataclass(frozen=True)
class ReadSkip(MarkerStep):
    """`x = read(x, frame[slot])`, dropping the slot when this is its last read."""

    slot: int
    release: bool

    @property
    def slots(self) -> tuple[int, ...]:
        return (self.slot,)

    def run(self, modules: Modules, x: Any, frame: list[Any]) -> Any:
        saved = frame[self.slot]
        if self.release:
            frame[self.slot] = None
        read: Any = modules[self.key]
        if read.hooked or _gfp or _gf or _gbp or _gb:
            return read(x, saved)
        return read.combine(x, saved)


@dataclass(frozen=True)
class ReadSkips(MarkerStep):
    """`x = read(x, *saved)`: a read of several names, dropping each slot read last here."""

    slots: tuple[int, ...]
    releases: tuple[int, ...]

    def run(self, modules: Modules, x: Any, frame: list[Any]) -> Any:
        saved = [frame[slot] for slot in self.slots]
        for slot in self.releases:
            frame[slot] = None
        return modules[self.key](x, *saved)  # type: ignore[misc]


@dataclass(frozen=True)
class PopSkip(MarkerStep):
    """`x = read(x, frame[stack].pop())`: the pushed tensor leaves its stack here."""

    stack: int

    def run(self, modules: Modules, x: Any, frame: list[Any]) -> Any:
        saved = frame[self.stack].pop()
        read: Any = modules[self.key]
        if read.hooked or _gfp or _gf or _gbp or _gb:
            return read(x, saved)
        return read.combine(x, saved)


@dataclass(frozen=True)
class SaveOutput(MarkerStep):
    """`frame[slot].append(x)`: a named output; `x` passes through."""

    slot: int

    def run(self, modules: Modules, x: Any, frame: list[Any]) -> Any:
        output: Any = modules[self.key]
        if output.hooked or _gfp or _gf or _gbp or _gb:
            x = output(x)
        frame[self.slot].append(x)
        return x


@dataclass(frozen=True)
class RunBlock(Immutable):
    """`x = block(x, *captured)`: a block receives the outer skips its body reads.

    A block whose repeats pop from a stack of this scope is handed the tensors they take
    (`takes`: stack slot and count, top of each stack, in order); a block whose repeats push
    or emit outputs returns `(x, *values)`, appended to this scope's stacks and output lists
    (`gives`: slot and count, in order).
    """

    key: str
    slots: tuple[int, ...]
    releases: tuple[int, ...]  # the slots this block reads last
    takes: tuple[tuple[int, int], ...] = ()
    gives: tuple[tuple[int, int], ...] = ()

    def run(self, modules: Modules, x: Any, frame: list[Any]) -> Any:
        args = [frame[slot] for slot in self.slots]
        for slot in self.releases:
            frame[slot] = None
        if self.takes:
            args.append(take(frame, self.takes))
        block: Any = modules[self.key]
        result = block.forward(x, *args) if plain(block) else block(x, *args)
        if not self.gives:
            return result
        give(frame, self.gives, result)
        return result[0]

    def context(self, modules: Modules) -> None:
        return None  # the block names itself and the failing repeat


Step = CallLayer | SaveSkip | PushSkip | ReadSkip | ReadSkips | PopSkip | SaveOutput | RunBlock


def take(frame: list[Any], takes: Sequence[tuple[int, int]]) -> list[Any]:
    """Take the top `count` tensors off each stack `frame[slot]`, in order, as one list."""
    handed: list[Any] = []
    for slot, count in takes:
        stack = frame[slot]
        handed += stack[len(stack) - count :]
        del stack[len(stack) - count :]
    return handed


def spread(frame: list[Any], places: Sequence[tuple[int, int]], values: Sequence[Any]) -> None:
    """Append `values` to the lists `frame[slot]`, `count` values each, in order."""
    start = 0
    for slot, count in places:
        frame[slot] += values[start : start + count]
        start += count


def give(frame: list[Any], gives: Sequence[tuple[int, int]], result: Sequence[Any]) -> None:
    """Append the values after `x` in a block's or repeat's `result` to the lists of `frame`."""
    spread(frame, gives, result[1:])


def _marker_context(modules: Modules, key: str, position: int) -> str:
    marker = modules[key]
    place = f"at position {key}" if key.isdigit() else f"{key!r} at position {position}"
    # One line, even when the marker holds a transform module.
    return f"in {type(marker).__name__}({marker.extra_repr()}) {place}"  # type: ignore[union-attr]


def add_context(error: BaseException, where: str) -> None:
    """Note where an error happened, keeping its type and message; once per place, however
    often the same exception object is raised."""
    note = f"torch_circuit: {where}"
    if note not in getattr(error, "__notes__", ()):
        error.add_note(note)


def run(steps: Sequence[Step], modules: Modules, x: Any, frame: list[Any]) -> Any:
    """Run `steps` on `x`; `frame` holds the captured skips, then the scope's own slots."""
    for step in steps:
        try:
            x = step.run(modules, x, frame)
        except Exception as error:
            where = step.context(modules)
            if where is not None:
                add_context(error, where)
            raise
    return x
