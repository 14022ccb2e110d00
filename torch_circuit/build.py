"""Build a circuit's modules from its plan: blocks of fresh repeats, and per-repeat layers.

`build_entries` turns a scope's plan entries into the modules it registers: layers as passed
in, each block a `Block` whose repeat 0 holds the modules passed in and whose other repeats
are fresh copies. A `PerRepeat` holds a placeholder until `build_per_repeat` calls its factory
for each occurrence, in forward order, once the whole circuit exists.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from .block import Block, exchange_of
from .copying import fresh_copy
from .markers import PerRepeat
from .nodes import LayerNode, PerRepeatSpec, Visit, walk
from .plan import BlockPlan, ScopePlan
from .scope import Repeat, Scope

__all__ = ["build_block", "build_entries", "build_per_repeat"]


class Unbuilt(nn.Module):
    """Where a `PerRepeat` layer goes until its factory has built it."""

    def __init__(self, marker: PerRepeat) -> None:
        super().__init__()
        self.marker = marker

    def forward(self, x: Any) -> Any:  # pragma: no cover - replaced during construction
        raise RuntimeError(f"{self.marker!r} was never built.")


def build_entries(plan: ScopePlan) -> dict[str, nn.Module]:
    """The modules a scope registers, by key, in forward order."""
    entries: dict[str, nn.Module] = {}
    for key, entry in plan.entries:
        if isinstance(entry, BlockPlan):
            entries[key] = build_block(entry)
        elif isinstance(entry, PerRepeat):
            entries[key] = Unbuilt(entry)
        else:
            entries[key] = entry
    return entries


def build_block(plan: BlockPlan) -> Block:
    """The `Block` a circuit holds for `plan`: repeat 0 built from the modules passed in,
    the others fresh copies of it (or repeat 0 alone, run every time, if weights are shared)."""
    node = plan.node
    first = Repeat(plan.body, build_entries(plan.body))
    children: dict[str, nn.Module] = {"0": first}
    if not node.share_weights:
        for index in range(1, node.num_repeats):
            children[str(index)] = fresh_copy(first)
    runs = [(index, node.repeat_key(index)) for index in range(node.num_repeats)]
    return Block(node, children, runs, exchange_of(plan), plan.body.captured, plan.port)


def build_per_repeat(circuit: Scope) -> None:
    """Build every `PerRepeat` layer: `factory(index, count)` for each occurrence in forward
    order, its module put in place of the placeholder.

    Raises `TypeError` for a factory that returns something other than a module; an error
    the factory raises keeps its type and gains a note naming the position and index.
    """
    counts: dict[tuple[int, str], int] = {}
    for event in walk(circuit):
        if not isinstance(event, Visit):
            continue
        for attribute, marker in _per_repeat_parts(event):
            position = event.node.position
            index = counts.get((position, attribute), 0)
            counts[position, attribute] = index + 1
            total = math.prod(frame.node.num_repeats for frame in event.frames)
            where = _where(marker, position, index, total, event)
            try:
                module = marker.factory(index, total)
            except Exception as error:
                error.add_note(f"torch_circuit: {where}")
                raise
            if not isinstance(module, nn.Module):
                raise TypeError(
                    f"{where}, returned {module!r} ({type(module).__name__}); the factory "
                    "must return an nn.Module, e.g. PerRepeat(lambda i, n: nn.Dropout(i / n))."
                )
            _put(circuit, event, attribute, module)


def _per_repeat_parts(visit: Visit) -> list[tuple[str, PerRepeat]]:
    """The `PerRepeat`s of one occurrence: the layer itself (`""`), or a marker's `transform`
    or `op`, in the order they run."""
    if isinstance(visit.node, LayerNode):
        marker = visit.node.per_repeat
        return [] if not isinstance(marker, PerRepeat) else [("", marker)]
    parts = []
    for attribute in ("transform", "op"):
        value = getattr(visit.module, attribute, None)
        if isinstance(value, PerRepeat):
            parts.append((attribute, value))
    return parts


def _put(circuit: Scope, visit: Visit, attribute: str, module: nn.Module) -> None:
    """Put a built module in place: the layer at the visit's key, or a marker's part."""
    if not attribute:
        parent_key = visit.key.rpartition(".")[0]
        parent = circuit.get_submodule(parent_key) if parent_key else circuit
        parent.add_module(visit.node.key, module)
        return
    marker = visit.module
    delattr(marker, attribute)  # a plain attribute until now
    marker.add_module(attribute, module)
    # parameters() follow forward order: the transform runs before the op.
    for later in ("op",) if attribute == "transform" else ():
        moved = marker._modules.pop(later, None)
        if moved is not None:
            marker._modules[later] = moved


def _where(marker: PerRepeatSpec, position: int, index: int, total: int, visit: Visit) -> str:
    places = "".join(
        f" in repeat {frame.repeat} of {frame.node.num_repeats} of block {frame.node.name!r}"
        for frame in reversed(visit.frames)
    )
    return f"{marker!r} at position {position}, building index {index} of {total}{places}"
