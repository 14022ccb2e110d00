"""Which blocks a diagram shows folded, and how much it draws.

A view of a circuit says, for every block declaration (a `StartBlock`, known by its position
in the layer list), whether it is drawn folded (once, framed `name ×N`) or expanded (every
repeat in its own frame). `view_walk` is `nodes.walk` seen through a view: the walk of every
repeat, except that folded blocks are walked once and named as the folded walk names them, so
a view with every block folded is exactly `walk(folded=True)`.

`drawn_size` counts what a view draws from the declaration alone, before any walk, so that a
model too large to draw is refused at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from torch import nn

from ..nodes import (
    BlockNode,
    Enter,
    Event,
    Exit,
    Frame,
    InputNode,
    Node,
    ReadNode,
    SaveNode,
    Structured,
    Visit,
    walk,
)

__all__ = [
    "MAX_DRAWN",
    "DiagramTooLargeError",
    "Expand",
    "block_declarations",
    "check_drawable",
    "drawn_size",
    "pair_pops",
    "represented",
    "resolve_expanded",
    "view_walk",
]

Expand: TypeAlias = bool | frozenset[int]
"""`False`: every block folded; `True`: every block expanded; a set: the positions of the
`StartBlock`s drawn expanded (the others folded)."""

MAX_DRAWN = 5000
"""The most nodes (layers, saves, reads) one diagram draws; larger ones are refused."""


def resolve_expanded(show_repeats: bool | None, expanded: bool | None) -> bool:
    """Whether every block is drawn expanded, from either spelling of the choice.

    `expanded=True` draws every repeat; `show_repeats=True` (the seed's spelling) means the
    opposite, each block once. Neither given: folded.

    Raises:
        ValueError: both are given and they contradict each other.
        TypeError: either is not a bool.
    """
    for name, value in (("show_repeats", show_repeats), ("expanded", expanded)):
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}.")
    if expanded is None:
        return show_repeats is False
    if show_repeats is not None and show_repeats == expanded:
        raise ValueError(
            f"show_repeats={show_repeats} and expanded={expanded} contradict each other: "
            "show_repeats=True means folded (expanded=False). Pass only expanded=..."
        )
    return expanded


def is_expanded(expand: Expand, block: BlockNode) -> bool:
    """Whether `block` is drawn expanded in the view `expand`."""
    if isinstance(expand, bool):
        return expand
    return block.position in expand


def view_walk(circuit: Structured, expand: Expand) -> Iterator[Event]:
    """The events of `walk(circuit)` as the view `expand` draws them.

    A folded block yields its first repeat only, as a frame with `repeat=None` whose id is the
    block's path (`"stage"`); frames and nodes inside it keep repeat 0's paths, as in
    `walk(circuit, folded=True)`. The repeats left out are never walked, so a view costs
    what it draws. A pop is joined to every push that the runs it stands for take
    (`pair_pops`): a folded decoder's pop to each push of an expanded encoder.
    """
    if expand is False or expand is True:
        yield from walk(circuit, folded=not expand)
        return
    originals = {block.position: block for block in block_declarations(circuit.nodes)}
    viewed = _Viewed(circuit, _one_repeat_when_folded(circuit.nodes, expand))
    drawn: dict[str, Frame] = {}  # a frame's id in the walk -> the frame as drawn
    pops = pair_pops(circuit.nodes, expand)
    for event in walk(viewed, folded=False):
        if isinstance(event, Enter):
            frame = event.frame
            node = originals[frame.node.position]
            parent = None if frame.parent is None else drawn[frame.parent].id
            repeat = frame.repeat if is_expanded(expand, node) else None
            shown = dataclasses.replace(frame, node=node, repeat=repeat, parent=parent)
            drawn[frame.id] = shown
            yield Enter(shown)
        elif isinstance(event, Exit):
            yield Exit(drawn[event.frame.id])
        elif isinstance(event, Visit):
            frames = tuple(drawn[f.id] for f in event.frames)
            sources = pops.get(event.path, event.sources)
            yield dataclasses.replace(event, frames=frames, sources=sources)
        else:
            yield event


def pair_pops(nodes: Sequence[Node], expand: Expand) -> dict[str, tuple[str, ...]]:
    """For each pop as the view `expand` draws it (by path), the drawn pushes that the runs
    it stands for take, in the order they are taken.

    The pushes and pops run as in `forward`, every repeat of every block (only blocks that
    hold a push or a pop are entered: the work is that of pairing them at construction),
    each run named by where the view draws it: repeat 0 of every folded block.
    """
    stacks: dict[str, list[str]] = {}
    taken: dict[str, dict[str, None]] = {}
    for node, path in _stack_runs(nodes, expand):
        if isinstance(node, SaveNode):
            stacks.setdefault(node.name, []).append(path)
            continue
        stack = stacks.get(node.name)
        if stack:  # never empty: pops are counted at construction
            taken.setdefault(path, {})[stack.pop()] = None
    return {pop: tuple(pushes) for pop, pushes in taken.items()}


def _stack_runs(nodes: Sequence[Node], expand: Expand) -> Iterator[tuple[SaveNode | ReadNode, str]]:
    """Every run of a push or a pop in forward order, with the path the view draws it at."""
    holding = _blocks_holding_stacks(nodes)
    pending: list[Iterator[tuple[Node, str]]] = [iter([(node, "") for node in nodes])]
    while pending:
        item = next(pending[-1], None)
        if item is None:
            pending.pop()
            continue
        node, prefix = item
        if isinstance(node, BlockNode):
            if id(node) in holding:
                pending.append(_repeats(node, f"{prefix}{node.key}", is_expanded(expand, node)))
        elif isinstance(node, SaveNode | ReadNode) and _is_stack_op(node):
            yield node, f"{prefix}{node.key}"


def _repeats(block: BlockNode, path: str, shown: bool) -> Iterator[tuple[Node, str]]:
    """The body of every repeat of `block`, with its path as the view draws it."""
    for repeat in range(block.num_repeats):
        for child in block.body:
            yield child, f"{path}.{repeat if shown else 0}."


def _is_stack_op(node: Node) -> bool:
    return (isinstance(node, SaveNode) and node.push) or (isinstance(node, ReadNode) and node.pop)


def _blocks_holding_stacks(nodes: Sequence[Node]) -> set[int]:
    """The ids of the blocks with a push or a pop somewhere inside."""
    holding: set[int] = set()
    for block in reversed(block_declarations(nodes)):  # inner blocks first
        if any(_is_stack_op(n) or id(n) in holding for n in block.body):
            holding.add(id(block))
    return holding


def represented(visit: Visit) -> int:
    """How many runs the drawn `visit` stands for: one per repeat of each folded frame
    around it (1 outside folded frames)."""
    count = 1
    for frame in visit.frames:
        if frame.repeat is None:
            count *= frame.node.num_repeats
    return count


@dataclass(frozen=True)
class _Viewed:
    """`circuit` with the nodes of a view: each folded block declared with one repeat."""

    circuit: Structured
    nodes: tuple[Node, ...]

    @property
    def input_nodes(self) -> tuple[InputNode, ...]:
        return self.circuit.input_nodes

    def get_submodule(self, target: str) -> nn.Module:
        return self.circuit.get_submodule(target)


def _one_repeat_when_folded(nodes: Sequence[Node], expand: Expand) -> tuple[Node, ...]:
    result: list[Node] = []
    for node in nodes:
        if isinstance(node, BlockNode):
            repeats = node.num_repeats if is_expanded(expand, node) else 1
            body = _one_repeat_when_folded(node.body, expand)
            node = dataclasses.replace(node, num_repeats=repeats, body=body)
        result.append(node)
    return tuple(result)


def block_declarations(nodes: Sequence[Node]) -> list[BlockNode]:
    """Every block declared in `nodes`, nested ones included, in the order of the layer list."""
    found: list[BlockNode] = []
    stack = list(reversed(nodes))
    while stack:
        node = stack.pop()
        if isinstance(node, BlockNode):
            found.append(node)
            stack.extend(reversed(node.body))
    return found


def drawn_size(nodes: Sequence[Node], expand: Expand) -> int:
    """How many layers, saves and reads the view `expand` of `nodes` draws."""
    total = 0
    for node in nodes:
        if isinstance(node, BlockNode):
            repeats = node.num_repeats if is_expanded(expand, node) else 1
            total += repeats * drawn_size(node.body, expand)
        else:
            total += 1
    return total


class DiagramTooLargeError(ValueError):
    """A diagram that would draw more nodes than `MAX_DRAWN`; the message says how many,
    and how many the folded view draws."""


def check_drawable(nodes: Sequence[Node], expand: Expand, limit: int = MAX_DRAWN) -> None:
    """Refuse, before any work, a view that would draw more than `limit` nodes.

    Raises:
        DiagramTooLargeError: a `ValueError` naming the size of the view, the limit, and the size
            of the folded view.
    """
    size = drawn_size(nodes, expand)
    if size <= limit:
        return
    folded = drawn_size(nodes, False)
    if expand is not False and folded <= limit:
        fix = (
            f"Draw it folded instead (expanded=False, the default), which draws {folded:,} "
            "nodes: each block once, framed 'name ×N'."
        )
    else:
        fix = (
            "Even folded (each block once) it draws that many; group repeated layers into a "
            "StartBlock/EndBlock block so that the folded view stays small, or use "
            "model.summary() for a table."
        )
    raise DiagramTooLargeError(
        f"this diagram would draw {size:,} layers, saves and reads, more than the {limit:,} "
        f"a diagram can show legibly. {fix}"
    )
