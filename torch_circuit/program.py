"""The steps a scope runs at every forward, and the loop that runs them.

A scope is the top level of a `Circuit` or one repeat of a block. `plan.py` compiles each
scope's part of the layer list into a tuple of steps once; `run` only executes it. Steps look
modules up by key in the scope's `_modules` at every call, so a module swapped in after
construction (quantisation, LoRA injection) is the one that runs. Saved tensors live in a
list local to the call (never on `self`), and each is dropped right after its last read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["CallLayer", "ReadSkip", "RunBlock", "SaveSkip", "Step", "add_context", "run"]

Modules = dict[str, nn.Module | None]


@dataclass(frozen=True)
class CallLayer:
    """`x = layer(x)`."""

    key: str

    def run(self, modules: Modules, x: Any, slots: list[Any]) -> Any:
        return modules[self.key](x)  # type: ignore[misc]

    def context(self, modules: Modules) -> str:
        return f"in the layer at position {self.key} ({type(modules[self.key]).__name__})"


@dataclass(frozen=True)
class SaveSkip:
    """`slots[slot] = save.capture(x)`; `x` passes through."""

    key: str
    slot: int

    def run(self, modules: Modules, x: Any, slots: list[Any]) -> Any:
        slots[self.slot] = modules[self.key].capture(x)  # type: ignore[union-attr, operator]
        return x

    def context(self, modules: Modules) -> str:
        return _marker_context(modules, self.key)


@dataclass(frozen=True)
class ReadSkip:
    """`x = read.combine(x, slots[slot])`, dropping the slot when this is its last read."""

    key: str
    slot: int
    release: bool

    def run(self, modules: Modules, x: Any, slots: list[Any]) -> Any:
        saved = slots[self.slot]
        if self.release:
            slots[self.slot] = None
        return modules[self.key].combine(x, saved)  # type: ignore[union-attr, operator]

    def context(self, modules: Modules) -> str:
        return _marker_context(modules, self.key)


@dataclass(frozen=True)
class RunBlock:
    """`x = block(x, *captured)`: a block receives the outer skips its body reads."""

    key: str
    slots: tuple[int, ...]
    releases: tuple[int, ...]  # the slots this block reads last

    def run(self, modules: Modules, x: Any, slots: list[Any]) -> Any:
        captured = [slots[slot] for slot in self.slots]
        for slot in self.releases:
            slots[slot] = None
        return modules[self.key](x, *captured)  # type: ignore[misc]

    def context(self, modules: Modules) -> None:
        return None  # the block names itself and the failing repeat


Step = CallLayer | SaveSkip | ReadSkip | RunBlock


def _marker_context(modules: Modules, key: str) -> str:
    marker = modules[key]
    # One line, even when the marker holds a transform module.
    return f"in {type(marker).__name__}({marker.extra_repr()}) at position {key}"  # type: ignore[union-attr]


def add_context(error: BaseException, where: str) -> None:
    """Append where an error happened as a note, keeping the error's type and message."""
    error.add_note(f"torch_circuit: {where}")


def run(steps: Sequence[Step], modules: Modules, x: Any, slots: list[Any]) -> Any:
    """Run `steps` on `x`; `slots` holds the captured skips followed by empty local slots."""
    for step in steps:
        try:
            x = step.run(modules, x, slots)
        except Exception as error:
            where = step.context(modules)
            if where is not None:
                add_context(error, where)
            raise
    return x
