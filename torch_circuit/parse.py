"""Check every item of a `Circuit`'s layer list and nest its blocks: `parse`.

Parsing is the first half of building a circuit (`plan.py` resolves names next). It is pure:
it raises a `TypeError` or `ValueError` naming the item, its position and the fix, and
registers no module anywhere, so a failed construction leaves the user's objects untouched.
"""

from __future__ import annotations

import keyword
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .checks import (
    MARKERS,
    check_flag,
    check_module_arg,
    check_name,
    check_no_hidden_markers,
    check_per_repeat,
    check_read,
    checkpoint_segment,
)
from .markers import EndBlock, GetInput, LambdaLayer, Output, PerRepeat, SaveInput, StartBlock

__all__ = ["MAX_NESTING", "RawBlock", "RawItem", "RawLayer", "parse", "parse_inputs"]

MAX_NESTING = 200
"""How deeply blocks may nest. Every part of the library (building, forward and backward,
`repr`, summaries, diagrams) works this deep at Python's default recursion limit."""


@dataclass
class RawLayer:
    """A layer, save, read, output or per-repeat layer at `position`, keyed by `key`."""

    position: int
    key: str
    item: nn.Module | PerRepeat


@dataclass
class RawBlock:
    """A block from its `StartBlock` at `position` to its `EndBlock` at `end`."""

    position: int
    marker: StartBlock
    body: list[RawItem] = field(default_factory=list)
    end: int = -1
    shared: str | None = None  # the block sharing weights around here (this one or outer)
    checkpoint: int = 0  # repeats per checkpoint segment; 0: not checkpointed


RawItem = RawLayer | RawBlock


@dataclass
class _Open:
    """A scope while it is parsed: its body, and the keys and names already taken in it."""

    body: list[RawItem]
    block: RawBlock | None = None
    keys: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (what, position)


def parse(
    layers: Sequence[Any],
    reserved: frozenset[str],
    opaque: tuple[type[nn.Module], ...] = (),
) -> list[RawItem]:
    """Check `layers` and nest them into blocks; return the top-level items.

    Args:
        layers: the layer list as given to `Circuit`.
        reserved: names a block or a named layer may not take (attributes of the modules
            that hold them).
        opaque: module types whose markers are their own (a `Circuit` inside the circuit).
    """
    scopes = [_Open([])]
    outputs: dict[str, int] = {}
    for position, item in enumerate(layers):
        scope = scopes[-1]
        name, item = _split_name(item, position)
        if isinstance(item, StartBlock):
            block = _start(item, position, scopes, reserved)
            scope.body.append(block)
            scopes.append(_Open(block.body, block))
        elif isinstance(item, EndBlock):
            _check_end(item, position, scopes)
            closed = scopes.pop().block
            if closed is not None:
                closed.end = position
        else:
            checked = _check_item(item, position, opaque, scopes)
            if isinstance(checked, Output):
                _check_output(checked, position, outputs)
            key = str(position)
            if name is not None:
                _claim(scope, name, "layer", position, reserved, item)
                key = name
            scope.body.append(RawLayer(position, key, checked))
    unclosed = scopes[-1].block
    if unclosed is not None:
        raise ValueError(
            f"{unclosed.marker!r} at position {unclosed.position} is never closed; "
            f"add EndBlock({unclosed.marker.name!r}) after the block's last layer."
        )
    return scopes[0].body


def parse_inputs(inputs: Any) -> tuple[tuple[str, bool, Any], ...]:
    """`inputs=` as `(name, required, default)` for each named input, checked.

    A sequence of names declares required inputs in positional order; a mapping from name to
    default declares inputs that may be left out (a default of `None` is passed as `None`).
    """
    if inputs is None:
        return ()
    if isinstance(inputs, Mapping):
        declared = [(name, False, default) for name, default in inputs.items()]
    elif isinstance(inputs, str) or not isinstance(inputs, Sequence):
        fix = f"inputs=({inputs!r},)" if isinstance(inputs, str) else "inputs=('mask',)"
        raise TypeError(
            f"inputs must be a sequence of names or a mapping from name to default, got "
            f"{inputs!r} ({type(inputs).__name__}); e.g. {fix} or inputs={{'mask': None}}."
        )
    else:
        declared = [(name, True, None) for name in inputs]
    seen: dict[str, int] = {}
    for index, (name, _, _) in enumerate(declared):
        if not isinstance(name, str):
            raise TypeError(
                f"inputs[{index}] is {name!r} ({type(name).__name__}); input names are "
                "strings, e.g. inputs=('mask',)."
            )
        if not name:
            raise ValueError(f"inputs[{index}] is an empty name; give it one, e.g. 'mask'.")
        if name == "self":
            raise ValueError(
                f"inputs[{index}] is named 'self', which nn.Module's call takes for the module "
                "itself, so it could not be passed by keyword; choose another name."
            )
        if name in seen:
            raise ValueError(
                f"inputs[{index}] repeats the name {name!r} of inputs[{seen[name]}]; "
                "declare each input once."
            )
        seen[name] = index
    return tuple(declared)


# --- Names: named layers, blocks, outputs ---


def _split_name(item: Any, position: int) -> tuple[str | None, Any]:
    """`("stem", layer)` -> `("stem", layer)`; anything else -> `(None, item)`."""
    if not isinstance(item, tuple | list):
        return None, item
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        name, layer = item
        if isinstance(layer, StartBlock | EndBlock):
            raise TypeError(
                f"position {position} names {layer!r} {name!r}; blocks are named by their "
                f"StartBlock, so pass {layer!r} alone."
            )
        return name, layer
    raise TypeError(
        f"position {position} is a {type(item).__name__} of {len(item)} items, not a "
        "layer; pass the layers themselves, e.g. Circuit(*layers), or name one layer as a "
        "pair ('name', layer)."
    )


def _claim(
    scope: _Open,
    name: str,
    what: str,
    position: int,
    reserved: frozenset[str],
    item: Any,
) -> None:
    """Register `name` as a key of `scope`, checking it is an identifier and free there."""
    shown = repr(item) if what == "block" else f"({name!r}, {_short(item)})"
    if not name.isidentifier() or name.startswith("_") or keyword.iskeyword(name):
        raise ValueError(
            f"{shown} at position {position}: {what} names key the state_dict and must be "
            "Python identifiers, not keywords, not starting with '_'; use e.g. "
            f"{_identifier_like(name)!r}."
        )
    if name in reserved or hasattr(nn.Module, name):
        raise ValueError(
            f"{shown} at position {position}: the name {name!r} is taken by a module "
            f"attribute (model.{name}); rename the {what}, e.g. {name + '_' + what!r}."
        )
    taken = scope.keys.get(name)
    if taken is not None:
        other, where = taken
        raise ValueError(
            f"{shown} at position {position} reuses the name of the {other} at position "
            f"{where} in the same scope; keys in the state_dict must be distinct, so give "
            f"each its own, e.g. {name + '2'!r}."
        )
    scope.keys[name] = (what, position)


def _short(item: Any) -> str:
    return f"{type(item).__name__}(...)" if isinstance(item, nn.Module) else repr(item)


def _identifier_like(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name).strip("_")
    if not cleaned or cleaned[0].isdigit() or keyword.iskeyword(cleaned):
        cleaned = "block_" + cleaned
    return cleaned


def _check_output(output: Output, position: int, outputs: dict[str, int]) -> None:
    name = output.name
    if name in outputs:
        raise ValueError(
            f"Output({name!r}) at position {position} reuses the name of the Output at "
            f"position {outputs[name]}; outputs are returned by name, so give each its own."
        )
    outputs[name] = position


# --- Blocks ---


def _start(
    marker: StartBlock, position: int, scopes: list[_Open], reserved: frozenset[str]
) -> RawBlock:
    check_name(marker, position)
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
    if not isinstance(marker.share_weights, bool):
        raise TypeError(
            f"{marker!r} at position {position}: share_weights must be True or False, got "
            f"{marker.share_weights!r}."
        )
    segment = checkpoint_segment(marker, position)
    depth = len(scopes)  # the open scopes, the top level included
    if depth > MAX_NESTING:
        raise ValueError(
            f"{marker!r} at position {position} nests blocks {depth} deep; a Circuit "
            f"supports at most {MAX_NESTING} levels of nesting. Flatten some of the blocks, "
            "or repeat a deep body with num_repeats instead of nesting it."
        )
    for scope in scopes[1:]:
        block = scope.block
        if block is not None and block.marker.name == marker.name:
            raise ValueError(
                f"{marker!r} at position {position} reuses the name of the open block "
                f"{block.marker!r} at position {block.position}; give the inner block "
                "a name of its own."
            )
    _claim(scopes[-1], marker.name, "block", position, reserved, marker)
    enclosing = scopes[-1].block
    shared = marker.name if marker.share_weights else None
    if shared is None and enclosing is not None:
        shared = enclosing.shared
    return RawBlock(position, marker, shared=shared, checkpoint=segment)


def _check_end(marker: EndBlock, position: int, scopes: list[_Open]) -> None:
    check_name(marker, position)
    innermost = scopes[-1].block
    if innermost is None:
        raise ValueError(
            f"{marker!r} at position {position} closes no open block; add "
            f"StartBlock({marker.name!r}, num_repeats=...) before it, or remove it."
        )
    if marker.name != innermost.marker.name:
        raise ValueError(
            f"{marker!r} at position {position} does not match the innermost open block "
            f"{innermost.marker!r} at position {innermost.position}; blocks close innermost "
            f"first: add EndBlock({innermost.marker.name!r}) before it, or fix the name."
        )


# --- Items ---


def _check_item(
    item: Any, position: int, opaque: tuple[type[nn.Module], ...], scopes: list[_Open]
) -> nn.Module | PerRepeat:
    block = scopes[-1].block
    shared = None if block is None else block.shared
    if isinstance(item, type):
        if issubclass(item, MARKERS):
            raise TypeError(
                f"position {position} is the class {item.__name__} itself, not a marker; "
                f"call it with a name, e.g. {item.__name__}('name')."
            )
        raise TypeError(
            f"position {position} is the class {item.__name__} itself, not a layer; "
            f"pass an instance, e.g. {item.__name__}(...)."
        )
    if isinstance(item, SaveInput):
        check_name(item, position)
        check_module_arg(item, "transform", position, shared)
        check_flag(item, "push", position)
        return item
    if isinstance(item, GetInput):
        check_read(item, position, shared)
        return item
    if isinstance(item, Output):
        check_name(item, position)
        return item
    if isinstance(item, PerRepeat):
        check_per_repeat(item, position, shared)
        return item
    if isinstance(item, nn.Module):
        check_no_hidden_markers(item, position, opaque)
        return item
    if callable(item):
        return LambdaLayer(item)
    raise TypeError(
        f"position {position} is {item!r} ({type(item).__name__}), which is neither an "
        "nn.Module, a marker nor a callable; pass a layer, a marker, or a function of one tensor."
    )
