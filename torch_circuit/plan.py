"""Analyse a `Circuit`'s layer list once, at construction.

`_parse` checks every item and nests the blocks; `_Resolver` binds every `GetInput` to
the `SaveInput` it reads under the scoping rules, and compiles each scope into the steps of
`program.py`. Both are pure: they raise or warn, and register no module anywhere, so a failed
construction leaves the user's objects untouched.
"""

from __future__ import annotations

import difflib
import keyword
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from .markers import EndBlock, GetInput, LambdaLayer, SaveInput, StartBlock
from .nodes import BlockNode, LayerNode, Node, ReadNode, SaveNode
from .ops import NAMED_OPS
from .program import CallLayer, ReadSkip, RunBlock, SaveSkip, Step
from .repeats import checkpoint_segment

__all__ = [
    "BlockNode",
    "BlockPlan",
    "LayerNode",
    "Node",
    "ReadNode",
    "SaveNode",
    "ScopePlan",
    "UnusedSaveWarning",
    "plan_circuit",
]

_MARKERS = (SaveInput, GetInput, StartBlock, EndBlock)


class UnusedSaveWarning(UserWarning):
    """A `SaveInput` is rebound or falls out of scope before any `GetInput` reads it."""


# --- What construction builds from: per scope, its modules, steps and nodes ---


@dataclass(frozen=True)
class ScopePlan:
    """One scope: the modules to register (in forward order), the steps to run, the nodes."""

    entries: tuple[tuple[str, nn.Module | BlockPlan], ...]
    steps: tuple[Step, ...]
    num_captures: int
    num_slots: int
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class BlockPlan:
    """A block: its declaration and the plan of its body (the same for every repeat)."""

    node: BlockNode
    body: ScopePlan


def plan_circuit(
    layers: Sequence[Any],
    reserved: Collection[str] = (),
    opaque: tuple[type[nn.Module], ...] = (),
) -> ScopePlan:
    """Validate `layers` and compile them into the plan of the top-level scope.

    `reserved` are names a block may not take: attributes of the modules that hold blocks.
    `opaque` are the module types whose markers are their own (a `Circuit` inside the
    circuit): markers found in any other layer are an error.

    Raises `TypeError`/`ValueError` naming the offending item, its position and the fix;
    emits `UnusedSaveWarning` only once the whole list is known to be valid.
    """
    tree = _parse(layers, frozenset(reserved), opaque)
    unused: list[str] = []
    plan, _ = _Resolver(unused, layers).scope(tree, parent=None, block=None)
    for message in unused:
        warnings.warn(message, UnusedSaveWarning, stacklevel=3)
    return plan


# --- Parsing: item checks and block nesting ---


@dataclass
class _RawBlock:
    position: int
    marker: StartBlock
    body: list[tuple[int, Any]] = field(default_factory=list)
    end: int = -1


def _parse(
    layers: Sequence[Any], reserved: frozenset[str], opaque: tuple[type[nn.Module], ...]
) -> list[tuple[int, Any]]:
    top: list[tuple[int, Any]] = []
    open_blocks: list[_RawBlock] = []
    sibling_names: list[dict[str, int]] = [{}]
    for position, item in enumerate(layers):
        body = open_blocks[-1].body if open_blocks else top
        if isinstance(item, StartBlock):
            _check_start(item, position, open_blocks, sibling_names[-1], reserved)
            block = _RawBlock(position, item)
            body.append((position, block))
            open_blocks.append(block)
            sibling_names.append({})
        elif isinstance(item, EndBlock):
            _check_end(item, position, open_blocks)
            open_blocks.pop().end = position
            sibling_names.pop()
        else:
            body.append((position, _check_item(item, position, opaque)))
    if open_blocks:
        block = open_blocks[-1]
        raise ValueError(
            f"{block.marker!r} at position {block.position} is never closed; "
            f"add EndBlock({block.marker.name!r}) after the block's last layer."
        )
    return top


def _check_item(item: Any, position: int, opaque: tuple[type[nn.Module], ...] = ()) -> nn.Module:
    if isinstance(item, list | tuple):
        raise TypeError(
            f"position {position} is a {type(item).__name__} of {len(item)} items, not a "
            "layer; pass the layers themselves, e.g. Circuit(*layers)."
        )
    if isinstance(item, type):
        if issubclass(item, _MARKERS):
            fix = f"{item.__name__}('name')"
            raise TypeError(
                f"position {position} is the class {item.__name__} itself, not a marker; "
                f"call it with a name, e.g. {fix}."
            )
        raise TypeError(
            f"position {position} is the class {item.__name__} itself, not a layer; "
            f"pass an instance, e.g. {item.__name__}(...)."
        )
    if isinstance(item, SaveInput):
        _check_name(item, position)
        _check_transform(item, position)
        return item
    if isinstance(item, GetInput):
        _check_name(item, position)
        _check_transform(item, position)
        _check_op(item, position)
        return item
    if isinstance(item, nn.Module):
        _check_no_hidden_markers(item, position, opaque)
        return item
    if callable(item):
        return LambdaLayer(item)
    raise TypeError(
        f"position {position} is {item!r} ({type(item).__name__}), which is neither an "
        "nn.Module, a marker nor a callable; pass a layer, a marker, or a function of one tensor."
    )


def _check_no_hidden_markers(
    module: nn.Module, position: int, opaque: tuple[type[nn.Module], ...]
) -> None:
    """Markers only work in a circuit's own list, not inside another container."""
    if isinstance(module, opaque):
        return
    stack = [("", module)]
    while stack:
        prefix, parent = stack.pop()
        for name, child in parent.named_children():
            if isinstance(child, SaveInput | GetInput):
                kind = type(parent).__name__
                raise TypeError(
                    f"position {position} is a {type(module).__name__} holding "
                    f"{child!r} (as {prefix}{name}); markers only work in the Circuit's own "
                    f"list, not inside a {kind}. Splice the container's items in with *, "
                    f"e.g. Circuit(*{kind.lower()}), or pass the layers themselves."
                )
            if not isinstance(child, opaque):
                stack.append((f"{prefix}{name}.", child))


def _check_name(marker: Any, position: int) -> None:
    name = marker.name
    kind = type(marker).__name__
    if not isinstance(name, str):
        raise TypeError(
            f"{kind} at position {position} has the name {name!r} ({type(name).__name__}); "
            f"names must be strings, e.g. {kind}('residual')."
        )
    if not name:
        raise ValueError(
            f"{kind} at position {position} has an empty name; "
            f"give it one, e.g. {kind}('residual')."
        )


def _check_transform(marker: SaveInput | GetInput, position: int) -> None:
    transform = marker.transform
    if transform is not None and not isinstance(transform, nn.Module):
        raise TypeError(
            f"{marker!r} at position {position} has transform={transform!r}, which is not an "
            "nn.Module; pass a module such as nn.Conv2d(64, 128, 1), or wrap a function as "
            "LambdaLayer(fn)."
        )


def _check_op(marker: GetInput, position: int) -> None:
    op = marker.op
    if isinstance(op, str):
        raise ValueError(
            f"GetInput({marker.name!r}) at position {position} has op={op!r}, which is not one "
            f"of {sorted(NAMED_OPS)}; pass one of those or a callable (current, saved) -> Tensor."
        )
    if isinstance(op, type) or not callable(op):
        raise TypeError(
            f"GetInput({marker.name!r}) at position {position} has op={op!r}, which is not "
            "callable; pass a callable (current, saved) -> Tensor such as torch.add, or one "
            f"of {sorted(NAMED_OPS)}."
        )


def _check_start(
    marker: StartBlock,
    position: int,
    open_blocks: list[_RawBlock],
    siblings: dict[str, int],
    reserved: frozenset[str],
) -> None:
    _check_name(marker, position)
    name = marker.name
    if not name.isidentifier() or name.startswith("_") or keyword.iskeyword(name):
        raise ValueError(
            f"{marker!r} at position {position}: block names key the state_dict and "
            "must be Python identifiers, not keywords, not starting with '_'; use e.g. "
            f"{_identifier_like(name)!r}."
        )
    if name in reserved or hasattr(nn.Module, name):
        raise ValueError(
            f"{marker!r} at position {position}: the name {name!r} is taken by a module "
            f"attribute (model.{name}); rename the block, e.g. {name + '_block'!r}."
        )
    repeats = marker.num_repeats
    if isinstance(repeats, bool) or not isinstance(repeats, int):
        raise TypeError(
            f"{marker!r} at position {position}: num_repeats must be a positive int, got "
            f"{repeats!r} ({type(repeats).__name__}); e.g. num_repeats=3."
        )
    if repeats < 1:
        raise ValueError(
            f"{marker!r} at position {position}: num_repeats must be a positive int, got "
            f"{repeats}; use num_repeats=1 for a block that runs once, or remove the block."
        )
    for flag in ("share_weights",):  # checkpoint: repeats.checkpoint_segment (issue 13)
        value = getattr(marker, flag)
        if not isinstance(value, bool):
            raise TypeError(
                f"{marker!r} at position {position}: {flag} must be True or False, got {value!r}."
            )
    for block in open_blocks:
        if block.marker.name == name:
            raise ValueError(
                f"{marker!r} at position {position} reuses the name of the open block "
                f"{block.marker!r} at position {block.position}; give the inner block "
                "a name of its own."
            )
    if name in siblings:
        raise ValueError(
            f"{marker!r} at position {position} reuses the name of the block at position "
            f"{siblings[name]} in the same scope; block names key the state_dict, so give "
            f"each its own, e.g. {name + '2'!r}."
        )
    siblings[name] = position


def _identifier_like(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name).strip("_")
    if not cleaned or cleaned[0].isdigit() or keyword.iskeyword(cleaned):
        cleaned = "block_" + cleaned
    return cleaned


def _check_end(marker: EndBlock, position: int, open_blocks: list[_RawBlock]) -> None:
    _check_name(marker, position)
    if not open_blocks:
        raise ValueError(
            f"{marker!r} at position {position} closes no open block; add "
            f"StartBlock({marker.name!r}, num_repeats=...) before it, or remove it."
        )
    innermost = open_blocks[-1].marker
    if marker.name != innermost.name:
        raise ValueError(
            f"{marker!r} at position {position} does not match the innermost open block "
            f"{innermost!r} at position {open_blocks[-1].position}; blocks close innermost "
            f"first: add EndBlock({innermost.name!r}) before it, or fix the name."
        )


# --- Resolution: scoped skip names, slots and last reads ---


@dataclass
class _Binding:
    """One `SaveInput`: the value it stores lives in one slot of its scope."""

    name: str
    position: int
    readers: list[int] = field(default_factory=list)


@dataclass(eq=False)
class _Slot:
    """A place in a scope's frame; its index is fixed when the scope is finished."""

    binding: _Binding
    index: int = -1
    last_use: object = None  # the pending step that reads it last in its scope


@dataclass
class _Scope:
    parent: _Scope | None
    bindings: dict[str, _Slot] = field(default_factory=dict)
    captures: dict[str, _Slot] = field(default_factory=dict)
    capture_sources: list[_Slot] = field(default_factory=list)
    locals: list[_Slot] = field(default_factory=list)

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


@dataclass(eq=False)
class _Pending:
    """A step before slot indices are known."""

    kind: Literal["call", "save", "read", "block"]
    key: str
    slots: tuple[_Slot, ...] = ()


class _Resolver:
    """Walks the parsed tree scope by scope; collects unused-save messages in `unused`."""

    def __init__(self, unused: list[str], layers: Sequence[Any]) -> None:
        self.unused = unused
        self.layers = layers

    def scope(
        self, body: list[tuple[int, Any]], parent: _Scope | None, block: _RawBlock | None
    ) -> tuple[ScopePlan, tuple[_Slot, ...]]:
        """Compile one scope; also return the enclosing scope's slots it captures, in order."""
        scope = _Scope(parent)
        entries: list[tuple[str, nn.Module | BlockPlan]] = []
        pending: list[_Pending] = []
        for position, item in body:
            if isinstance(item, _RawBlock):
                plan, sources = self.block(item, scope)
                entries.append((plan.node.key, plan))
                step = _Pending("block", plan.node.key, sources)
            else:
                entries.append((str(position), item))
                step = self.pending_step(scope, item, position)
            if step.kind != "save":
                for slot in step.slots:
                    slot.last_use = step
            pending.append(step)
        for slot in scope.bindings.values():
            self.check_used(slot, self.scope_end(block))
        return self.finish(scope, entries, pending), tuple(scope.capture_sources)

    def pending_step(self, scope: _Scope, item: nn.Module, position: int) -> _Pending:
        key = str(position)
        if isinstance(item, SaveInput):
            return _Pending("save", key, (self.bind(scope, item, position),))
        if isinstance(item, GetInput):
            return _Pending("read", key, (self.read(scope, item, position),))
        return _Pending("call", key)

    def block(self, raw: _RawBlock, parent: _Scope) -> tuple[BlockPlan, tuple[_Slot, ...]]:
        body, sources = self.scope(raw.body, parent, raw)
        marker = raw.marker
        node = BlockNode(
            position=raw.position,
            end=raw.end,
            key=marker.name,
            name=marker.name,
            num_repeats=marker.num_repeats,
            share_weights=marker.share_weights,
            checkpoint=checkpoint_segment(marker, raw.position),
            body=body.nodes,
        )
        return BlockPlan(node, body), sources

    def bind(self, scope: _Scope, save: SaveInput, position: int) -> _Slot:
        previous = scope.bindings.get(save.name)
        if previous is not None:
            self.check_used(previous, f"it is rebound by the SaveInput at position {position}")
        slot = _Slot(_Binding(save.name, position))
        scope.bindings[save.name] = slot
        scope.locals.append(slot)
        return slot

    def read(self, scope: _Scope, get: GetInput, position: int) -> _Slot:
        slot = scope.lookup(get.name)
        if slot is None:
            raise ValueError(self.unknown_name(scope, get, position))
        slot.binding.readers.append(position)
        return slot

    def check_used(self, slot: _Slot, fate: str) -> None:
        binding = slot.binding
        if not binding.readers:
            self.unused.append(
                f"SaveInput({binding.name!r}) at position {binding.position} is never read: "
                f"{fate} before any GetInput({binding.name!r}). Remove it, or add a "
                "GetInput that reads it; it is skipped at run time."
            )

    @staticmethod
    def scope_end(block: _RawBlock | None) -> str:
        if block is None:
            return "the Circuit ends"
        return f"it falls out of scope at EndBlock({block.marker.name!r}) at position {block.end}"

    def unknown_name(self, scope: _Scope, get: GetInput, position: int) -> str:
        visible = scope.visible_names()
        message = (
            f"GetInput({get.name!r}) at position {position} reads a name no earlier visible "
            f"SaveInput provides; visible here: {visible}."
        )
        close = difflib.get_close_matches(get.name, visible, n=1)
        if close:
            return f"{message} Did you mean {close[0]!r}?"
        return f"{message} {_fix_for_unknown(self.layers, get.name, position)}"

    def finish(
        self, scope: _Scope, entries: list[tuple[str, Any]], pending: list[_Pending]
    ) -> ScopePlan:
        # Frame layout: captured skips first (passed in by the caller), then local saves.
        used_locals = [slot for slot in scope.locals if slot.binding.readers]
        for index, slot in enumerate([*scope.captures.values(), *used_locals]):
            slot.index = index
        steps: list[Step] = []
        for step in pending:
            if step.kind == "call":
                steps.append(CallLayer(step.key))
            elif step.kind == "save":
                if step.slots[0].binding.readers:
                    steps.append(SaveSkip(step.key, step.slots[0].index))
            elif step.kind == "read":
                slot = step.slots[0]
                steps.append(ReadSkip(step.key, slot.index, slot.last_use is step))
            else:
                indices = tuple(slot.index for slot in step.slots)
                releases = tuple(slot.index for slot in step.slots if slot.last_use is step)
                steps.append(RunBlock(step.key, indices, releases))
        return ScopePlan(
            entries=tuple(entries),
            steps=tuple(steps),
            num_captures=len(scope.captures),
            num_slots=len(scope.captures) + len(used_locals),
            nodes=tuple(_node(key, entry, scope) for key, entry in entries),
        )


def _fix_for_unknown(layers: Sequence[Any], name: str, position: int) -> str:
    """Where the save a read misses is, if anywhere: later, or inside an ended block."""
    open_blocks: list[tuple[StartBlock, int]] = []
    inside: list[tuple[int, StartBlock, int]] = []  # save position, its block, block start
    for index, item in enumerate(layers):
        if isinstance(item, StartBlock):
            open_blocks.append((item, index))
        elif isinstance(item, EndBlock) and open_blocks:
            block, start = open_blocks.pop()
            for saved, owner, owner_start in inside:
                if owner_start == start and saved < index < position:
                    return (
                        f"SaveInput({name!r}) at position {saved} is inside block "
                        f"{owner.name!r}, which ends at position {index}: a name saved inside "
                        "a block is not visible after its EndBlock. Save it before the block "
                        "to use it after."
                    )
        elif isinstance(item, SaveInput) and item.name == name:
            if index > position:
                return (
                    f"SaveInput({name!r}) comes later, at position {index}; move it before "
                    f"position {position}."
                )
            if open_blocks:
                block, start = open_blocks[-1]
                inside.append((index, block, start))
    return f"Add SaveInput({name!r}) before it."


def _node(key: str, entry: nn.Module | BlockPlan, scope: _Scope) -> Node:
    if isinstance(entry, BlockPlan):
        return entry.node
    position = int(key)
    if isinstance(entry, SaveInput):
        binding = next(s.binding for s in scope.locals if s.binding.position == position)
        return SaveNode(position, key, entry.name, tuple(binding.readers))
    if isinstance(entry, GetInput):
        return ReadNode(position, key, entry.name, _source_of(scope, position), entry.op_name)
    return LayerNode(position, key)


def _source_of(scope: _Scope, position: int) -> int:
    slots = [*scope.locals, *scope.captures.values()]
    return next(s.binding.position for s in slots if position in s.binding.readers)
