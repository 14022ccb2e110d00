"""The parts of the format for what goes beyond one tensor in, one tensor out: named inputs,
`Output`, `PerRepeat` (as a layer, an op or a transform) and named layers.

Each function here is the one place its feature is read or written: `describe.py` and
`build.py` call them where a document's field or entry holds one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..markers import EndBlock, GetInput, Output, PerRepeat, SaveInput, StartBlock
from ..nodes import BlockNode, LayerNode, Node, ReadNode, SaveNode, Visit, walk
from ..parse import parse_inputs
from . import registry
from .format import fail
from .state import differences

__all__ = [
    "MARKER_CLASSES",
    "Built",
    "declared_inputs",
    "decode_inputs",
    "factory_name",
    "lookup_factory",
    "named_entry",
    "occurrences",
    "per_repeat_parts",
    "per_repeat_paths",
    "rebuild_difference",
    "split_named",
]

MARKER_CLASSES: dict[str, type] = {
    cls.__name__: cls for cls in (SaveInput, GetInput, Output, StartBlock, EndBlock, PerRepeat)
}

Built = dict[tuple[int, str], list[nn.Module]]
"""The modules `PerRepeat`s built, in forward order, by `(position, part)`: the part is `""`
for a layer, `"transform"` or `"op"` for a marker's."""


# --- Named inputs: Circuit(*layers, inputs=("mask",) or {"mask": None}) ---


def decode_inputs(value: Any, where: str) -> tuple[str, ...] | dict[str, Any]:
    """`["mask"]` -> `("mask",)`; `{"mask": None}` -> `{"mask": None}` (name -> default),
    checked as `Circuit` checks `inputs=`, the error naming `where`."""
    decoded: tuple[str, ...] | dict[str, Any]
    if isinstance(value, list):
        decoded = tuple(value)
    elif isinstance(value, Mapping):
        for name, default in value.items():
            if not _plain(default):
                fail(
                    f"{where}.{name}",
                    f"an input's default is None, a boolean, a number or a string, got "
                    f"{type(default).__name__}; pass other values when calling the model.",
                    TypeError,
                )
        decoded = dict(value)
    else:
        fail(
            where,
            f"expected a list of names (each required), such as [mask], or a mapping of names "
            f"to defaults, such as {{mask: null}}; got {type(value).__name__}.",
            TypeError,
        )
    try:
        parse_inputs(decoded)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}: {error}") from error
    return decoded


def declared_inputs(circuit: nn.Module, where: str) -> list[str] | dict[str, Any] | None:
    """The `inputs` field of a circuit: its named inputs as `Circuit(..., inputs=...)` took
    them (required ones as a list of names, optional ones as names mapped to defaults), or
    `None` if it has none.

    Raises:
        ValueError: a default is not plain data (a tensor, say).
    """
    nodes = getattr(circuit, "input_nodes", ())
    if not nodes:
        return None
    if all(node.required for node in nodes):
        return [node.name for node in nodes]
    for node in nodes:
        if not _plain(node.default):
            raise ValueError(
                f"to_config cannot describe {where}.{node.name}: its default is a "
                f"{type(node.default).__name__}, and a config holds None, booleans, numbers and "
                "strings; declare the default None and pass the value when calling the model."
            )
    return {node.name: node.default for node in nodes}


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


# --- PerRepeat(factory): modules built per repeat by a registered factory ---


def per_repeat_parts(node: Node) -> dict[str, PerRepeat]:
    """The `PerRepeat`s of a node, by part: `""` for a layer, `"transform"`/`"op"`."""
    if isinstance(node, LayerNode):
        return {} if not isinstance(node.per_repeat, PerRepeat) else {"": node.per_repeat}
    if isinstance(node, SaveNode | ReadNode):
        return {part: marker for part, marker in node.per_repeat if isinstance(marker, PerRepeat)}
    return {}


def occurrences(circuit: Any) -> Built:
    """Every module the circuit's `PerRepeat`s built, in the order their factories were
    called (forward order, every repeat of every block)."""
    built: Built = {}
    for event in walk(circuit):
        if not isinstance(event, Visit):
            continue
        position = event.node.position
        for part in per_repeat_parts(event.node):
            module = event.module if not part else getattr(event.module, part)
            built.setdefault((position, part), []).append(module)
    return built


def per_repeat_paths(body: Iterable[Node]) -> frozenset[str]:
    """The keys, relative to one repeat of a block, of the modules that differ per repeat by
    design (built by `PerRepeat`): comparing repeats to repeat 0 skips them."""
    paths: set[str] = set()
    for node in body:
        if isinstance(node, BlockNode):
            inner = per_repeat_paths(node.body)
            for repeat in range(node.num_repeats):
                paths.update(f"{node.key}.{node.repeat_key(repeat)}.{path}" for path in inner)
            continue
        for part in per_repeat_parts(node):
            paths.add(f"{node.key}.{part}" if part else node.key)
    return frozenset(paths)


def factory_name(factory: Any) -> str | None:
    """The name a registered factory (a function, or a class taking `(index, count)`) is
    known by, or `None`."""
    name = registry.function_name(factory)
    if name is None and isinstance(factory, type):
        name = registry.registered_class_name(factory)
    return name


def lookup_factory(name: str) -> Callable[..., Any] | None:
    """The registered function or class called `name`, or `None`."""
    found = registry.lookup(name)
    return found if callable(found) else None


def rebuild_difference(
    factory: Callable[[int, int], Any], modules: list[nn.Module], dtype: torch.dtype
) -> tuple[int, str] | None:
    """The first index whose module is not what `factory(index, count)` builds, with the
    difference in words; `None` if every one is.

    Each is built on the meta device (nothing allocated), else on the CPU for a factory that
    needs real values; random numbers drawn on the way are given back either way.
    """
    count = len(modules)
    for index, module in enumerate(modules):
        rebuilt: Any = None
        failure: str | None = None
        for device in ("meta", None):
            with torch.random.fork_rng(devices=[]):
                try:
                    with torch.device(device) if device else contextlib.nullcontext():
                        rebuilt = factory(index, count)
                except Exception as error:  # the factory's own failure, reported as such
                    failure = f"calling the factory with ({index}, {count}) raises {error!r}"
                    continue
            failure = None
            break
        if failure is not None:
            return index, failure
        if not isinstance(rebuilt, nn.Module):
            return index, f"the factory now returns {type(rebuilt).__name__}, not a module"
        found = differences(module, rebuilt.to(dtype))
        if found is not None:
            return index, found
    return None


# --- Named layers: (name, layer) pairs in the layer list ---


def named_entry(key: str, position: int, entry: Any) -> Any:
    """A layer registered under a name of its own is written `[name, entry]`."""
    return entry if key == str(position) else [key, entry]


def split_named(item: Any) -> tuple[str | None, Any]:
    """`[name, entry]` -> `(name, entry)`; anything else -> `(None, item)`."""
    if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str):
        return item[0], item[1]
    return None, item
