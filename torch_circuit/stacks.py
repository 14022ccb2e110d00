"""Pair every pop with the pushes it takes: skips that outlive their block (a U-Net).

`SaveInput(name, push=True)` pushes onto the stack `name`; `GetInput(name, pop=True)` takes the
most recent tensor off it. Repeat counts are fixed when a circuit is built, so the pairing is
known then: `pair_stacks` runs the pushes and pops of the parsed layer list in forward order,
every repeat of every block, and reports a pop with nothing left to take (naming the pushes
it could have taken) and pushes that no pop takes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .markers import GetInput, SaveInput
from .parse import RawBlock, RawItem, RawLayer

__all__ = ["StackPairs", "pair_stacks"]


@dataclass
class StackPairs:
    """The pairing, by position: each pop's pushes, each push's pops, each stack's first push."""

    sources: dict[int, tuple[int, ...]] = field(default_factory=dict)
    readers: dict[int, tuple[int, ...]] = field(default_factory=dict)
    stacks: dict[str, int] = field(default_factory=dict)


def pair_stacks(tree: list[RawItem], unused: list[str]) -> StackPairs:
    """Pair pops with pushes in `tree`; append a message to `unused` for untaken pushes.

    Raises `ValueError` for a pop with nothing to take, or a name used both as a stack and
    as a plain skip.
    """
    pairs = StackPairs()
    ops = list(_occurrences(tree, pairs))
    if not ops:
        return pairs
    sources: dict[int, dict[int, None]] = {}
    readers: dict[int, dict[int, None]] = {}
    stacks: dict[str, list[int]] = {}
    pushed: dict[int, int] = {}  # how many times each push ran
    for raw, where in ops:
        item = raw.item
        if isinstance(item, SaveInput):
            stacks.setdefault(item.name, []).append(raw.position)
            pushed[raw.position] = pushed.get(raw.position, 0) + 1
            continue
        if not isinstance(item, GetInput):  # pragma: no cover - only pushes and pops come
            continue
        name = item.names[0]
        stack = stacks.get(name)
        if not stack:
            raise ValueError(_empty(raw, name, where, pushed, ops))
        push = stack.pop()
        sources.setdefault(raw.position, {})[push] = None
        readers.setdefault(push, {})[raw.position] = None
    pairs.sources = {pop: tuple(pushes) for pop, pushes in sources.items()}
    pairs.readers = {push: tuple(pops) for push, pops in readers.items()}
    for name, stack in stacks.items():
        for position in dict.fromkeys(stack):
            left = stack.count(position)
            unused.append(
                f"SaveInput({name!r}, push=True) at position {position} pushes "
                f"{pushed[position]} tensor{'s' if pushed[position] != 1 else ''}, {left} of "
                f"which no GetInput({name!r}, pop=True) takes before the Circuit ends. Pop "
                "every pushed tensor, or push fewer; they are dropped at the end of the forward."
            )
    return pairs


def _occurrences(tree: list[RawItem], pairs: StackPairs) -> Iterator[tuple[RawLayer, str]]:
    """Every push and pop in forward order, every repeat, with where it runs.

    Checks on the way (once, in the first repeat) that no name is both a stack and a plain
    skip, and records each stack's first push in `pairs.stacks`.
    """
    plain: dict[str, int] = {}
    with_stacks = _blocks_with_stack_ops(tree)
    todo: list[tuple[Iterator[RawItem], str, bool]] = [(iter(tree), "", True)]
    while todo:
        items, where, first = todo[-1]
        item = next(items, None)
        if item is None:
            todo.pop()
            continue
        if isinstance(item, RawBlock):
            if id(item) not in with_stacks:
                if first:
                    _note_plain_names(item.body, plain, pairs)
                continue
            repeats = item.marker.num_repeats
            for repeat in reversed(range(repeats)):
                inner = (
                    f" (in repeat {repeat} of {repeats} of block {item.marker.name!r}{where})"
                    if repeats > 1 or where
                    else ""
                )
                todo.append((iter(item.body), inner, first and repeat == 0))
            continue
        if first:
            _note_plain_names([item], plain, pairs)
        if _is_stack_op(item):
            yield item, where


def _note_plain_names(items: list[RawItem], plain: dict[str, int], pairs: StackPairs) -> None:
    """Record plain skip names and first pushes; refuse a name used both ways."""
    stack = list(reversed(items))
    while stack:
        item = stack.pop()
        if isinstance(item, RawBlock):
            stack.extend(reversed(item.body))
            continue
        marker = item.item
        names: tuple[str, ...]
        if isinstance(marker, SaveInput):
            names = (marker.name,)
        elif isinstance(marker, GetInput):
            names = marker.names
        else:
            continue
        is_stack = bool(getattr(marker, "push", False) or getattr(marker, "pop", False))
        for name in names:
            if is_stack and isinstance(marker, SaveInput):
                pairs.stacks.setdefault(name, item.position)
            mine, other = (pairs.stacks, plain) if is_stack else (plain, pairs.stacks)
            if name in other:
                raise ValueError(_mixed(marker, name, item.position, other[name], is_stack))
            if not is_stack:
                mine.setdefault(name, item.position)


def _mixed(marker: object, name: str, position: int, other: int, is_stack: bool) -> str:
    shown = f"{marker!r} at position {position}"
    if isinstance(marker, GetInput) and not is_stack:
        return (
            f"{shown} reads {name!r}, which is a stack (SaveInput({name!r}, push=True) at "
            f"position {other}); take from it with GetInput({name!r}, pop=True)."
        )
    return (
        f"{shown} uses {name!r} as a {'stack' if is_stack else 'plain skip'}, but the marker "
        f"at position {other} uses it as a {'plain skip' if is_stack else 'stack'}; give the "
        "stack (push=True / pop=True) and the skip different names."
    )


def _is_stack_op(raw: RawLayer) -> bool:
    item = raw.item
    return (isinstance(item, SaveInput) and item.push is True) or (
        isinstance(item, GetInput) and item.pop is True
    )


def _blocks_with_stack_ops(tree: list[RawItem]) -> set[int]:
    """The ids of the blocks that push or pop somewhere in their body."""
    found: set[int] = set()
    stack: list[tuple[RawItem, list[RawBlock]]] = [(item, []) for item in tree]
    while stack:
        item, around = stack.pop()
        if isinstance(item, RawBlock):
            stack.extend((inner, [*around, item]) for inner in item.body)
        elif _is_stack_op(item):
            found.update(id(block) for block in around)
    return found


def _empty(
    raw: RawLayer, name: str, where: str, pushed: dict[int, int], ops: list[tuple[RawLayer, str]]
) -> str:
    shown = f"GetInput({name!r}, pop=True) at position {raw.position}{where}"
    positions = dict.fromkeys(
        push.position
        for push, _ in ops
        if isinstance(push.item, SaveInput) and push.item.name == name and push.position in pushed
    )
    if not positions:
        return (
            f"{shown} pops the stack {name!r}, but no SaveInput({name!r}, push=True) runs "
            "before it; push a tensor before popping it."
        )
    pushes = ", ".join(
        f"SaveInput({name!r}, push=True) at position {position} ({pushed[position]} "
        f"time{'s' if pushed[position] != 1 else ''})"
        for position in positions
    )
    return (
        f"{shown} pops the stack {name!r} when it is empty: the pushes it could take, "
        f"{pushes}, were all taken before. Pop once per push: give the blocks that push and "
        "pop matching repeats, or push more."
    )
