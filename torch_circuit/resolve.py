"""Resolve a parsed layer list into the plan a `Circuit` is built from: `plan_circuit`.

`parse.py` has checked every item and nested the blocks. Here every `GetInput` is bound to the
`SaveInput` (or named input) it reads under the scoping rules, every pop to the push it takes
(`stacks.py`), and each scope is compiled into the steps of `program.py` and a frame layout:
captured skips, its own saves, its stacks and its output lists. Pure, like parsing: it raises
or warns and registers no module anywhere.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from .hints import fix_for_unknown
from .markers import GetInput, Output, PerRepeat, SaveInput
from .nodes import BlockNode, InputNode, LayerNode, Node, OutputNode, ReadNode, SaveNode, Source
from .parse import RawBlock, RawItem, RawLayer, parse, parse_inputs
from .plan import BlockPlan, CircuitPlan, Entry, Port, ScopePlan, UnusedSaveWarning
from .program import (
    CallLayer,
    PopSkip,
    PushSkip,
    ReadSkip,
    ReadSkips,
    RunBlock,
    SaveOutput,
    SaveSkip,
    Step,
)
from .stacks import StackPairs, pair_stacks

__all__ = ["plan_circuit"]


def plan_circuit(
    layers: Sequence[Any],
    reserved: Collection[str] = (),
    opaque: tuple[type[nn.Module], ...] = (),
    inputs: Any = None,
) -> CircuitPlan:
    """Validate `layers` and compile them into the plan of the circuit.

    Args:
        layers: the layer list as given to `Circuit`.
        reserved: names a block or named layer may not take: attributes of the modules
            that hold them.
        opaque: module types whose markers are their own (a `Circuit` inside the circuit):
            markers found in any other layer are an error.
        inputs: the named inputs, as `Circuit(..., inputs=...)` takes them.

    Raises `TypeError`/`ValueError` naming the offending item, its position and the fix;
    emits `UnusedSaveWarning` only once the whole list is known to be valid.
    """
    declared = parse_inputs(inputs)
    tree = parse(layers, frozenset(reserved), opaque)
    _check_input_names(declared, tree)
    unused: list[str] = []
    pairs = pair_stacks(tree, unused)
    resolver = _Resolver(unused, layers, pairs)
    top = _Scope(None)
    input_slots = [resolver.declare_input(top, name) for name, _, _ in declared]
    scope, _ = resolver.scope(tree, top, None)
    for message in unused:
        warnings.warn(message, UnusedSaveWarning, stacklevel=3)
    input_nodes = tuple(
        InputNode(index, name, required, default, tuple(slot.binding.readers))
        for index, ((name, required, default), slot) in enumerate(
            zip(declared, input_slots, strict=True)
        )
    )
    outputs = tuple(
        (name, not any(o.name == name for o in scope.nodes if isinstance(o, OutputNode)))
        for name, _ in scope.port.outputs
    )
    return CircuitPlan(scope, input_nodes, outputs)


def _check_input_names(declared: Sequence[tuple[str, bool, Any]], tree: list[RawItem]) -> None:
    blocks: dict[str, int] = {}
    stack = list(tree)
    while stack:
        item = stack.pop()
        if isinstance(item, RawBlock):
            blocks[item.marker.name] = item.position
            stack.extend(item.body)
    for index, (name, _, _) in enumerate(declared):
        if name in blocks:
            raise ValueError(
                f"inputs[{index}] is named {name!r}, like the block at position "
                f"{blocks[name]}; rename the input or the block."
            )


# --- Scopes while they are resolved ---


@dataclass
class _Binding:
    """One `SaveInput` or named input (`position is None`): its value lives in one slot."""

    name: str
    position: int | None
    readers: list[int] = field(default_factory=list)

    @property
    def source(self) -> Source:
        return self.name if self.position is None else self.position


@dataclass(eq=False)
class _Slot:
    """A place in a scope's frame; its index is fixed when the scope is finished."""

    binding: _Binding
    index: int = -1
    last_use: object = None  # the pending step that reads it last in its scope


@dataclass(eq=False)
class _Stack:
    """A stack as one scope sees it: the running count of its tensors, from the top the
    scope found, and the lowest that count went (minus what the scope takes)."""

    name: str
    level: int = 0
    lowest: int = 0
    index: int = -1

    def move(self, takes: int, gives: int) -> None:
        self.level -= takes
        self.lowest = min(self.lowest, self.level)
        self.level += gives


@dataclass(eq=False)
class _Output:
    name: str
    count: int = 0
    index: int = -1


@dataclass
class _Scope:
    parent: _Scope | None
    bindings: dict[str, _Slot] = field(default_factory=dict)
    captures: dict[str, _Slot] = field(default_factory=dict)
    capture_sources: list[_Slot] = field(default_factory=list)
    locals: list[_Slot] = field(default_factory=list)
    stacks: dict[str, _Stack] = field(default_factory=dict)
    outputs: dict[str, _Output] = field(default_factory=dict)

    def lookup(self, name: str) -> _Slot | None:
        """The slot holding `name` here, capturing it from enclosing scopes if needed."""
        if name in self.bindings:
            return self.bindings[name]
        if name in self.captures:
            return self.captures[name]
        if self.parent is None:
            return None
        outer = self.parent.lookup(name)
        if outer is None:
            return None
        slot = _Slot(outer.binding)
        self.captures[name] = slot
        self.capture_sources.append(outer)
        return slot

    def visible_names(self) -> list[str]:
        names: set[str] = set()
        scope: _Scope | None = self
        while scope is not None:
            names.update(scope.bindings)
            scope = scope.parent
        return sorted(names)

    def stack(self, name: str) -> _Stack:
        return self.stacks.setdefault(name, _Stack(name))

    def output(self, name: str) -> _Output:
        return self.outputs.setdefault(name, _Output(name))


StepKind = Literal["call", "save", "push", "read", "pop", "output", "block"]


@dataclass(eq=False)
class _Pending:
    """A step before slot indices are known."""

    kind: StepKind
    key: str
    position: int
    slots: tuple[_Slot, ...] = ()
    stack: _Stack | None = None
    output: _Output | None = None
    takes: tuple[tuple[_Stack, int], ...] = ()
    gives: tuple[tuple[_Stack | _Output, int], ...] = ()


class _Resolver:
    """Walks the parsed tree scope by scope; collects unused-save messages in `unused`."""

    def __init__(self, unused: list[str], layers: Sequence[Any], pairs: StackPairs) -> None:
        self.unused = unused
        self.layers = layers
        self.pairs = pairs

    def declare_input(self, top: _Scope, name: str) -> _Slot:
        slot = _Slot(_Binding(name, None))
        top.bindings[name] = slot
        top.locals.append(slot)
        return slot

    def scope(
        self, body: list[RawItem], scope: _Scope, block: RawBlock | None, runs: int = 1
    ) -> tuple[ScopePlan, tuple[_Slot, ...]]:
        """Compile one scope, which runs `runs` times per forward; also return the enclosing
        scope's slots it captures, in order."""
        entries: list[tuple[str, Entry | BlockPlan]] = []
        pending: list[_Pending] = []
        nodes_of: dict[str, BlockPlan | RawLayer] = {}
        for item in body:
            if isinstance(item, RawBlock):
                block_plan, step = self.block(item, scope, runs)
                entries.append((block_plan.node.key, block_plan))
                nodes_of[block_plan.node.key] = block_plan
            else:
                entries.append((item.key, item.item))
                nodes_of[item.key] = item
                step = self.pending_step(scope, item)
            if step.kind not in ("save", "push"):
                for slot in step.slots:
                    slot.last_use = step
            pending.append(step)
        for slot in scope.bindings.values():
            self.check_used(slot, self.scope_end(block))
        plan = self.finish(scope, entries, pending, nodes_of, runs)
        return plan, tuple(scope.capture_sources)

    def pending_step(self, scope: _Scope, raw: RawLayer) -> _Pending:
        item, key, position = raw.item, raw.key, raw.position
        if isinstance(item, SaveInput):
            if item.push:
                stack = scope.stack(item.name)
                stack.move(0, 1)
                return _Pending("push", key, position, stack=stack)
            return _Pending("save", key, position, (self.bind(scope, item, position),))
        if isinstance(item, GetInput):
            if item.pop:
                stack = scope.stack(item.names[0])
                stack.move(1, 0)
                return _Pending("pop", key, position, stack=stack)
            slots = tuple(self.read(scope, item, name, position) for name in item.names)
            return _Pending("read", key, position, slots)
        if isinstance(item, Output):
            output = scope.output(item.name)
            output.count += 1
            return _Pending("output", key, position, output=output)
        return _Pending("call", key, position)

    def block(self, raw: RawBlock, parent: _Scope, runs: int) -> tuple[BlockPlan, _Pending]:
        body, sources = self.scope(raw.body, _Scope(parent), raw, runs * raw.marker.num_repeats)
        marker = raw.marker
        node = BlockNode(
            position=raw.position,
            end=raw.end,
            key=marker.name,
            name=marker.name,
            num_repeats=marker.num_repeats,
            share_weights=marker.share_weights,
            checkpoint=marker.checkpoint,
            body=body.nodes,
        )
        port = _chain(body.port, marker.num_repeats)
        takes, gives = [], []
        for name, count_in, count_out in port.stacks:
            stack = parent.stack(name)
            stack.move(count_in, count_out)
            takes.append((stack, count_in))
            gives.append((stack, count_out))
        outputs: list[tuple[_Stack | _Output, int]] = []
        for name, count in port.outputs:
            output = parent.output(name)
            output.count += count
            outputs.append((output, count))
        step = _Pending(
            "block",
            node.key,
            raw.position,
            sources,
            takes=tuple((s, n) for s, n in takes if n),
            gives=tuple([*((s, n) for s, n in gives if n), *outputs]),
        )
        return BlockPlan(node, body, port), step

    def bind(self, scope: _Scope, save: SaveInput, position: int) -> _Slot:
        previous = scope.bindings.get(save.name)
        if previous is not None:
            self.check_used(previous, f"it is rebound by the SaveInput at position {position}")
        slot = _Slot(_Binding(save.name, position))
        scope.bindings[save.name] = slot
        scope.locals.append(slot)
        return slot

    def read(self, scope: _Scope, get: GetInput, name: str, position: int) -> _Slot:
        slot = scope.lookup(name)
        if slot is None:
            raise ValueError(self.unknown_name(scope, get, name, position))
        if position not in slot.binding.readers:
            slot.binding.readers.append(position)
        return slot

    def check_used(self, slot: _Slot, fate: str) -> None:
        binding = slot.binding
        if binding.readers:
            return
        if binding.position is None:
            self.unused.append(
                f"input {binding.name!r} is never read: {fate} before any "
                f"GetInput({binding.name!r}). Remove it from inputs=, or add a GetInput that "
                "reads it."
            )
            return
        self.unused.append(
            f"SaveInput({binding.name!r}) at position {binding.position} is never read: "
            f"{fate} before any GetInput({binding.name!r}). Remove it, or add a "
            "GetInput that reads it; it is skipped at run time."
        )

    @staticmethod
    def scope_end(block: RawBlock | None) -> str:
        if block is None:
            return "the Circuit ends"
        return f"it falls out of scope at EndBlock({block.marker.name!r}) at position {block.end}"

    def unknown_name(self, scope: _Scope, get: GetInput, name: str, position: int) -> str:
        visible = scope.visible_names()
        message = (
            f"GetInput({get.name!r}) at position {position} reads a name no earlier visible "
            f"SaveInput provides"
            + (f" ({name!r})" if isinstance(get.name, tuple) else "")
            + f"; visible here: {visible}."
        )
        close = difflib.get_close_matches(name, visible, n=1)
        if close:
            return f"{message} Did you mean {close[0]!r}?"
        return f"{message} {fix_for_unknown(self.layers, name, position)}"

    def finish(
        self,
        scope: _Scope,
        entries: list[tuple[str, Entry | BlockPlan]],
        pending: list[_Pending],
        nodes_of: dict[str, BlockPlan | RawLayer],
        runs: int,
    ) -> ScopePlan:
        # Frame layout: captured skips first (passed in by the caller), then the scope's own
        # saves (named inputs first at the top level), then its stacks and output lists.
        used_locals = [slot for slot in scope.locals if slot.binding.readers]
        layout: list[_Slot | _Stack | _Output] = [
            *scope.captures.values(),
            *used_locals,
            *scope.stacks.values(),
            *scope.outputs.values(),
        ]
        for index, place in enumerate(layout):
            place.index = index
        steps = [_step(step) for step in pending]
        port = Port(
            tuple((s.name, -s.lowest, s.level - s.lowest) for s in scope.stacks.values()),
            tuple((o.name, o.count) for o in scope.outputs.values()),
        )
        # Named inputs are handed in by the caller, like captured skips.
        handed = len(scope.captures) + sum(s.binding.position is None for s in used_locals)
        return ScopePlan(
            entries=tuple(entries),
            steps=tuple(steps),
            num_captures=handed,
            num_slots=len(layout),
            nodes=tuple(self.node(key, nodes_of[key], scope, runs) for key, _ in entries),
            port=port,
            stack_slots=tuple(s.index for s in scope.stacks.values()),
            output_slots=tuple(o.index for o in scope.outputs.values()),
            captured=tuple((s.binding.name, s.binding.source) for s in scope.captures.values()),
        )

    def node(self, key: str, entry: BlockPlan | RawLayer, scope: _Scope, runs: int) -> Node:
        if isinstance(entry, BlockPlan):
            return entry.node
        item, position = entry.item, entry.position
        if isinstance(item, SaveInput):
            parts = _per_repeat_parts(item)
            if item.push:
                readers = self.pairs.readers.get(position, ())
                return SaveNode(position, key, item.name, readers, True, parts)
            binding = next(s.binding for s in scope.locals if s.binding.position == position)
            return SaveNode(position, key, item.name, tuple(binding.readers), False, parts)
        if isinstance(item, GetInput):
            if item.pop:
                sources: tuple[Source, ...] = self.pairs.sources[position]
            else:
                sources = tuple(_source_of(scope, position, name) for name in item.names)
            name = ", ".join(item.names)
            op = item.op_name
            return ReadNode(
                position,
                key,
                name,
                sources[0],
                op,
                item.pop,
                item.names,
                sources,
                _per_repeat_parts(item),
            )
        if isinstance(item, Output):
            return OutputNode(position, key, item.name, runs)
        per_repeat = item if isinstance(item, PerRepeat) else None
        return LayerNode(position, key, per_repeat)


def _per_repeat_parts(marker: SaveInput | GetInput) -> tuple[tuple[str, PerRepeat], ...]:
    """The parts of a marker that a `PerRepeat` builds per repeat, in the order they run."""
    parts = [(name, getattr(marker, name, None)) for name in ("transform", "op")]
    return tuple((name, value) for name, value in parts if isinstance(value, PerRepeat))


def _step(step: _Pending) -> Step:
    """The final step of a pending one, now that every slot has its index."""
    key, position = step.key, step.position
    if step.kind == "call":
        return CallLayer(key, position)
    if step.kind == "save":
        slot = step.slots[0]
        if not slot.binding.readers:  # never read: the marker only passes x on
            return CallLayer(key, position)
        return SaveSkip(key, position, slot.index)
    if step.output is not None:
        return SaveOutput(key, position, step.output.index)
    if step.stack is not None:
        kind = PushSkip if step.kind == "push" else PopSkip
        return kind(key, position, step.stack.index)
    releases = tuple(dict.fromkeys(s.index for s in step.slots if s.last_use is step))
    indices = tuple(slot.index for slot in step.slots)
    if step.kind == "read" and len(indices) == 1:
        return ReadSkip(key, position, indices[0], bool(releases))
    if step.kind == "read":
        return ReadSkips(key, position, indices, releases)
    takes = tuple((stack.index, count) for stack, count in step.takes)
    gives = tuple((place.index, count) for place, count in step.gives)
    return RunBlock(key, indices, releases, takes, gives)


def _chain(port: Port, repeats: int) -> Port:
    """The port of `repeats` runs of a scope with `port`, one after the other.

    A run takes `k` tensors off the top of a stack and leaves `m`: over the runs the stack
    dips lowest on the first run if `m >= k`, else on the last.
    """
    stacks = []
    for name, k, m in port.stacks:
        takes = k + max(0, (repeats - 1) * (k - m))
        stacks.append((name, takes, takes + repeats * (m - k)))
    return Port(tuple(stacks), tuple((name, count * repeats) for name, count in port.outputs))


def _source_of(scope: _Scope, position: int, name: str) -> Source:
    slots = [*scope.locals, *scope.captures.values()]
    return next(
        s.binding.source for s in slots if s.binding.name == name and position in s.binding.readers
    )
