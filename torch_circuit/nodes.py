"""The declared structure of a `Circuit` as plain data, and the one walk over it.

`model.nodes` holds a node per item of the top-level layer list (a `BlockNode` holds its
body's nodes). `walk` visits them in forward order, every repeat of every block (or each
block once, folded), and gives each node the module that runs there, its occurrence path, the
frames around it and, for a read, the occurrences of the saves it reads. Shapes, summaries and
diagrams are all driven by `walk`; none of them computes paths or keys itself.

This module imports nothing else of the package, so every other module may import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from torch import nn

__all__ = [
    "BlockNode",
    "Enter",
    "Event",
    "Exit",
    "Frame",
    "LayerNode",
    "LeafNode",
    "Node",
    "ReadNode",
    "SaveNode",
    "Structured",
    "Visit",
    "walk",
]


@dataclass(frozen=True)
class LayerNode:
    """A layer at `position` in the argument list, registered under `key`."""

    position: int
    key: str


@dataclass(frozen=True)
class SaveNode:
    """A `SaveInput`; `readers` are the positions of the `GetInput`s that read it."""

    position: int
    key: str
    name: str
    readers: tuple[int, ...]


@dataclass(frozen=True)
class ReadNode:
    """A `GetInput`; `source` is the position of the `SaveInput` it reads."""

    position: int
    key: str
    name: str
    source: int
    op: str


@dataclass(frozen=True)
class BlockNode:
    """A block from its `StartBlock` at `position` to its `EndBlock` at `end`."""

    position: int
    end: int
    key: str
    name: str
    num_repeats: int
    share_weights: bool
    checkpoint: int  # repeats per checkpoint segment; 0: not checkpointed
    body: tuple[Node, ...]

    def repeat_key(self, repeat: int) -> str:
        """The key of the module that runs `repeat` (`"0"` for every repeat if shared)."""
        return "0" if self.share_weights else str(repeat)


Node = LayerNode | SaveNode | ReadNode | BlockNode
LeafNode = LayerNode | SaveNode | ReadNode


class Structured(Protocol):
    """What `walk` needs of a circuit: its nodes, and its modules by key."""

    @property
    def nodes(self) -> tuple[Node, ...]: ...

    def get_submodule(self, target: str) -> nn.Module: ...


@dataclass(frozen=True)
class Frame:
    """One block as the walk enters it: folded (`repeat is None`) or one of its repeats.

    `path` is the block's occurrence path (`"stage"`, `"outer.1.inner"`) and `key`
    the key of its `Block` module (the same unless an enclosing block shares weights:
    `"outer.0.inner"`). `depth` counts the frames around it plus one; `parent` is the
    id of the enclosing frame.
    """

    node: BlockNode
    path: str
    key: str
    repeat: int | None
    depth: int
    parent: str | None

    @property
    def id(self) -> str:
        """`path` when folded, `path.repeat` for one repeat."""
        return self.path if self.repeat is None else f"{self.path}.{self.repeat}"

    @property
    def repeat_key(self) -> str:
        """The key of the module that runs this repeat (repeat 0's when folded)."""
        return f"{self.key}.{self.node.repeat_key(self.repeat or 0)}"


@dataclass(frozen=True)
class Visit:
    """A layer, save or read as the walk meets it.

    `path` names this occurrence (`"stage.1.5"`: position 5 in repeat 1 of `stage`;
    folded, every path is repeat 0's); `key` is the module's key (`get_submodule(key)`),
    the same path except inside blocks with shared weights; `frames` are the frames around
    it, outermost first; `sources` are, for a read, the paths of the saves it reads.
    """

    node: LeafNode
    module: nn.Module
    path: str
    key: str
    frames: tuple[Frame, ...]
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Enter:
    """The walk enters `frame`: a folded block, or one repeat of it."""

    frame: Frame


@dataclass(frozen=True)
class Exit:
    """The walk leaves `frame`; after the last repeat the block's output is the flow's."""

    frame: Frame

    @property
    def last(self) -> bool:
        """Whether this ends the block: folded, or its last repeat."""
        frame = self.frame
        return frame.repeat is None or frame.repeat == frame.node.num_repeats - 1


Event = Visit | Enter | Exit


def walk(circuit: Structured, *, folded: bool = False) -> Iterator[Event]:
    """Every node of `circuit` in forward order, with blocks' frames entered and left.

    Args:
        circuit: a `Circuit` (anything with `nodes` and `get_submodule`).
        folded: `True` enters each block once (`Frame.repeat is None`, paths of repeat
            0); `False` enters every repeat of every block.

    The walk keeps its own stack rather than recursing, so nesting depth is not limited by
    Python's recursion limit.

    Example:

        >>> [e.path for e in walk(model) if isinstance(e, Visit)][:3]
        ['0', '1', '2']
    """
    walker = _Walker(circuit, folded)
    stack: list[Iterator[Event | _Scope]] = [walker.scope(_Scope(circuit, circuit.nodes))]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif isinstance(item, _Scope):
            stack.append(walker.scope(item))
        else:
            yield item


@dataclass(frozen=True)
class _Scope:
    """A scope still to walk: its module, its nodes, and where it sits."""

    module: Structured | nn.Module
    nodes: tuple[Node, ...]
    path: str = ""
    key: str = ""
    frames: tuple[Frame, ...] = ()


class _Walker:
    def __init__(self, circuit: Structured, folded: bool) -> None:
        self.folded = folded
        # The path of the latest run of the save at each position. Forward order makes this
        # the occurrence a read sees: a read sees the save in its own repeat, or the latest
        # run of one in an enclosing scope, and positions are unique in the layer list.
        self.saves: dict[int, str] = {}

    def scope(self, scope: _Scope) -> Iterator[Event | _Scope]:
        for node in scope.nodes:
            path, key = f"{scope.path}{node.key}", f"{scope.key}{node.key}"
            module = scope.module.get_submodule(node.key)
            if isinstance(node, BlockNode):
                yield from self.block(node, module, path, key, scope.frames)
                continue
            sources: tuple[str, ...] = ()
            if isinstance(node, SaveNode):
                self.saves[node.position] = path
            elif isinstance(node, ReadNode):
                sources = (self.saves[node.source],)
            yield Visit(node, module, path, key, scope.frames, sources)

    def block(
        self, node: BlockNode, block: nn.Module, path: str, key: str, frames: tuple[Frame, ...]
    ) -> Iterator[Event | _Scope]:
        parent = frames[-1].id if frames else None
        repeats: list[int | None] = [None] if self.folded else list(range(node.num_repeats))
        for repeat in repeats:
            frame = Frame(node, path, key, repeat, len(frames) + 1, parent)
            yield Enter(frame)
            index = 0 if repeat is None else repeat
            body = block.get_submodule(node.repeat_key(index))
            yield _Scope(
                body,
                node.body,
                f"{path}.{index}.",
                f"{frame.repeat_key}.",
                (*frames, frame),
            )
            yield Exit(frame)
