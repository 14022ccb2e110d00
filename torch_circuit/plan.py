"""The plan a `Circuit` is built from: per scope, what to register, the steps to run and
the layout of its frame.

`parse.py` checks the layer list and `resolve.py` compiles it into these records (see
`resolve.plan_circuit`); `build.py` turns them into modules. They are frozen: every repeat of
a block runs the very same plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .markers import PerRepeat
from .nodes import (
    BlockNode,
    Immutable,
    InputNode,
    LayerNode,
    Node,
    OutputNode,
    ReadNode,
    SaveNode,
    Source,
)
from .program import Step

__all__ = [
    "BlockNode",
    "BlockPlan",
    "CircuitPlan",
    "Entry",
    "LayerNode",
    "Node",
    "OutputNode",
    "Port",
    "ReadNode",
    "SaveNode",
    "ScopePlan",
    "UnusedSaveWarning",
]


class UnusedSaveWarning(UserWarning):
    """A `SaveInput` (or named input) is rebound or falls out of scope before any `GetInput`
    reads it, or pushes tensors that no pop takes."""


Entry = nn.Module | PerRepeat


@dataclass(frozen=True)
class Port(Immutable):
    """What one run of a scope exchanges with the scope around it, besides `x` and the
    skips it captures: per stack, how many tensors it takes off the top and how many it
    leaves there; per output, how many tensors it records. Counts are fixed by the plan."""

    stacks: tuple[tuple[str, int, int], ...] = ()  # (name, takes, gives)
    outputs: tuple[tuple[str, int], ...] = ()  # (name, count)

    @property
    def takes(self) -> bool:
        """Whether a run is handed tensors popped from the scope around it."""
        return any(takes for _, takes, _ in self.stacks)

    @property
    def gives(self) -> bool:
        """Whether a run returns `(x, *values)` rather than `x`."""
        return bool(self.outputs) or any(gives for _, _, gives in self.stacks)


@dataclass(frozen=True)
class ScopePlan(Immutable):
    """One scope: the entries to register (in forward order), the steps to run, the frame
    layout, and the nodes.

    The frame holds the captured skips (`num_captures`), the scope's own saves, then one list
    per stack of `port` (`stack_slots`) and one per output (`output_slots`).
    """

    entries: tuple[tuple[str, Entry | BlockPlan], ...]
    steps: tuple[Step, ...]
    num_captures: int
    num_slots: int
    nodes: tuple[Node, ...]
    port: Port = Port()
    stack_slots: tuple[int, ...] = ()
    output_slots: tuple[int, ...] = ()
    captured: tuple[tuple[str, Source], ...] = ()  # the outer skips read: name, source


@dataclass(frozen=True)
class BlockPlan(Immutable):
    """A block: its declaration, the plan of its body (the same for every repeat), and its
    port as a whole (its repeats' ports chained `num_repeats` times)."""

    node: BlockNode
    body: ScopePlan
    port: Port


@dataclass(frozen=True)
class CircuitPlan(Immutable):
    """The whole circuit: the top-level scope, the named inputs (those read fill the first
    slots of the top frame, as captured skips fill a repeat's) and the outputs in
    declaration order (`True` where one is in a block, so that it returns a tuple)."""

    scope: ScopePlan
    inputs: tuple[InputNode, ...]
    outputs: tuple[tuple[str, bool], ...]

    @property
    def read_inputs(self) -> tuple[int, ...]:
        """The inputs that something reads, by index: their values fill the first slots."""
        return tuple(node.index for node in self.inputs if node.readers)
