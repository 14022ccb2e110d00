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
from typing import Any, Protocol

from torch import nn

__all__ = [
    "BlockNode",
    "Enter",
    "Event",
    "Exit",
    "Frame",
    "Immutable",
    "Input",
    "InputNode",
    "LayerNode",
    "LeafNode",
    "Node",
    "OutputNode",
    "ReadNode",
    "SaveNode",
    "Source",
    "Structured",
    "Visit",
    "input_path",
    "walk",
]


class Immutable:
    """Frozen plain data, shared rather than copied by `copy.copy` and `copy.deepcopy`.

    A plan is immutable, and every repeat of a block runs the very same one: copying a
    circuit (fresh repeats, a meta copy for shapes, `copy.deepcopy`) shares it, and never
    recurses into nested blocks' nodes.
    """

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self


@dataclass(frozen=True)
class InputNode(Immutable):
    """A named input of `forward`, after the main tensor (`Circuit(..., inputs=...)`).

    It is visible everywhere, as if saved just before the first layer at the top level;
    `readers` are the positions of the `GetInput`s that read it. `default` is what a call
    that leaves it out passes (only when `required` is false).
    """

    index: int
    name: str
    required: bool
    default: Any
    readers: tuple[int, ...]


@dataclass(frozen=True)
class LayerNode(Immutable):
    """A layer at `position` in the argument list, registered under `key` (its position, or
    the name it was given as a `(name, layer)` pair). `per_repeat` is the `PerRepeat` that
    built it, one module per repeat."""

    position: int
    key: str
    per_repeat: PerRepeatSpec | None = None


@dataclass(frozen=True)
class SaveNode(Immutable):
    """A `SaveInput`; `readers` are the positions of the `GetInput`s that read it (for a
    push, of the pops that take its tensors). `per_repeat` names the parts built per repeat:
    `(("transform", PerRepeat(...)),)`."""

    position: int
    key: str
    name: str
    readers: tuple[int, ...]
    push: bool = False
    per_repeat: tuple[tuple[str, PerRepeatSpec], ...] = ()


Source = int | str
"""What a read reads: the position of a `SaveInput`, or the name of a named input."""


@dataclass(frozen=True)
class ReadNode(Immutable):
    """A `GetInput`: `names` in the order its op receives them, and their `sources`.

    `name` and `source` are those of the first name (a multi-name read displays its names
    joined: `"k, v"`). For a pop, `sources` are the positions of the pushes whose tensors it
    may take. `per_repeat` names the parts built per repeat (`"transform"`, `"op"`).
    """

    position: int
    key: str
    name: str
    source: Source
    op: str
    pop: bool = False
    names: tuple[str, ...] = ()
    sources: tuple[Source, ...] = ()
    per_repeat: tuple[tuple[str, PerRepeatSpec], ...] = ()

    def __post_init__(self) -> None:
        if not self.names:
            object.__setattr__(self, "names", (self.name,))
        if not self.sources:
            object.__setattr__(self, "sources", (self.source,))


@dataclass(frozen=True)
class OutputNode(Immutable):
    """An `Output(name)`; `count` is how many tensors it returns per forward (one per
    execution: 1 at the top level, the product of the enclosing blocks' repeats inside)."""

    position: int
    key: str
    name: str
    count: int


@dataclass(frozen=True)
class BlockNode(Immutable):
    """A block from its `StartBlock` at `position` to its `EndBlock` at `end`."""

    position: int
    end: int
    key: str
    name: str
    num_repeats: int
    share_weights: bool
    checkpoint: bool
    body: tuple[Node, ...]

    def repeat_key(self, repeat: int) -> str:
        """The key of the module that runs `repeat` (`"0"` for every repeat if shared)."""
        return "0" if self.share_weights else str(repeat)


class PerRepeatSpec(Protocol):
    """What a `LayerNode` keeps of the `PerRepeat` that built its modules."""

    @property
    def factory(self) -> Any: ...


Node = LayerNode | SaveNode | ReadNode | OutputNode | BlockNode
LeafNode = LayerNode | SaveNode | ReadNode | OutputNode


class Structured(Protocol):
    """What `walk` needs of a circuit: its nodes, and its modules by key."""

    @property
    def nodes(self) -> tuple[Node, ...]: ...

    @property
    def input_nodes(self) -> tuple[InputNode, ...]: ...

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
class Input:
    """A named input, met before any layer; `path` is `input:<name>`."""

    node: InputNode

    @property
    def path(self) -> str:
        return input_path(self.node.name)


def input_path(name: str) -> str:
    """The occurrence path of the named input `name`, as a read's `sources` give it."""
    return f"input:{name}"


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


Event = Input | Visit | Enter | Exit


def walk(circuit: Structured, *, folded: bool = False) -> Iterator[Event]:
    """Every node of `circuit` in forward order, with blocks' frames entered and left.

    The walk keeps its own stack rather than recursing, so nesting depth is not limited by
    Python's recursion limit.

    Args:
        circuit: a `Circuit` (anything with `nodes` and `get_submodule`).
        folded: `True` enters each block once (`Frame.repeat is None`, paths of repeat
            0); `False` enters every repeat of every block.

    Examples:
        >>> [e.path for e in walk(model) if isinstance(e, Visit)][:3]
        ['0', '1', '2']
    """
    for node in circuit.input_nodes:
        yield Input(node)
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
        self.saves: dict[Source, str] = {
            node.name: input_path(node.name) for node in circuit.input_nodes
        }
        # Expanded, the paths of the pushes still on each stack; a pop takes the last.
        self.stacks: dict[str, list[str]] = {}

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
                if node.push and not self.folded:
                    self.stacks.setdefault(node.name, []).append(path)
            elif isinstance(node, ReadNode):
                stack = self.stacks.get(node.name) if node.pop and not self.folded else None
                if stack:
                    sources = (stack.pop(),)
                elif node.pop:  # folded (or a view folding the pushes): every push it may take
                    sources = tuple(dict.fromkeys(self.saves[s] for s in node.sources))
                else:  # one per name, in the order the op receives them
                    sources = tuple(self.saves[s] for s in node.sources)
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
