"""The parts of the format for markers and options that are landing separately (issues 10
and 14): named inputs, `Output`, `PerRepeat`, and named layers.

Each function here is the one place its feature is read or written, so that switching a
feature on when its marker lands touches this file and the dispatch that calls it. Until then:
a document that uses one is refused with a message saying this torch-circuit lacks it, and a
model that `to_config` cannot yet describe is refused, never described without it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .. import markers
from . import registry
from .format import fail
from .state import differences

__all__ = [
    "check_per_repeat",
    "declared_inputs",
    "decode_inputs",
    "describe_inputs",
    "describe_per_repeat",
    "marker_class",
    "named_entry",
    "split_named",
]


def marker_class(name: str, where: str) -> type:
    """The marker class called `name`, or an error if this torch-circuit lacks it."""
    found = getattr(markers, name, None)
    if not isinstance(found, type):
        what = {"Output": "named outputs", "PerRepeat": "per-repeat layers"}.get(name, name)
        fail(
            where,
            f"this torch-circuit has no {name} marker ({what}); the config needs a newer "
            "torch-circuit.",
        )
    return found


# --- Named inputs: Circuit(*layers, inputs=("mask",) or {"mask": None}) ---


def accepts_inputs(circuit_class: type) -> bool:
    return "inputs" in inspect.signature(circuit_class).parameters


def decode_inputs(value: Any, where: str) -> tuple[str, ...] | dict[str, Any]:
    """`["mask"]` -> `("mask",)`; `{"mask": None}` -> `{"mask": None}` (name -> default).

    The names themselves are checked by `Circuit`, as for a circuit built in Python.
    """
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, Mapping):
        for name, default in value.items():
            if default is not None and not isinstance(default, bool | int | float | str):
                fail(
                    f"{where}.{name}",
                    "an input's default is None, a number or a string.",
                    TypeError,
                )
        return dict(value)
    fail(where, "expected a list of names or a mapping of names to defaults.", TypeError)


def describe_inputs(inputs: Sequence[str] | Mapping[str, Any]) -> list[str] | dict[str, Any]:
    """The `inputs` field for a circuit's declared inputs (a mapping keeps its defaults)."""
    if isinstance(inputs, Mapping):
        for name, default in inputs.items():
            if default is not None and not isinstance(default, bool | int | float | str):
                raise ValueError(
                    f"to_config cannot describe the default of input {name!r}: {default!r} "
                    "is not None, a number or a string."
                )
        return dict(inputs)
    return list(inputs)


def declared_inputs(circuit: nn.Module) -> Sequence[str] | Mapping[str, Any] | None:
    """The inputs a circuit declares, as `Circuit(..., inputs=...)` took them, or `None`.

    Required inputs were declared as a sequence of names, optional ones as a mapping to their
    defaults (`Circuit` takes one form or the other, never both).
    """
    nodes = getattr(circuit, "input_nodes", ())
    if not nodes:
        return None
    if all(node.required for node in nodes):
        return tuple(node.name for node in nodes)
    return {node.name: node.default for node in nodes}


# --- PerRepeat(factory): a layer built per repeat by a registered factory ---


def describe_per_repeat(factory: Callable[..., Any], where: str) -> dict[str, Any]:
    """`{"PerRepeat": "factory_name"}` for a registered factory."""
    name = registry.function_name(factory)
    if name is None:
        raise ValueError(
            f"to_config cannot describe {where}: its PerRepeat factory {factory!r} is not "
            "registered; decorate it with @torch_circuit.register (or call "
            "torch_circuit.register(factory, name='...')) so a config can name it."
        )
    return {"PerRepeat": name}


def check_per_repeat(
    factory: Callable[[int, int], nn.Module], modules: Sequence[nn.Module], where: str
) -> None:
    """Refuse unless each module is what `factory(index, count)` builds (compared on meta)."""
    count = len(modules)
    for index, module in enumerate(modules):
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            rebuilt = factory(index, count)
        found = differences(module, rebuilt)
        if found is not None:
            raise ValueError(
                f"to_config cannot describe {where}: the layer of repeat {index} is not what "
                f"its factory builds: {found}."
            )


# --- Named layers: (name, layer) pairs in the layer list (issue 14) ---


def named_entry(key: str, position: int, entry: Any) -> Any:
    """A layer registered under a name of its own is written `[name, entry]`."""
    return entry if key == str(position) else [key, entry]


def split_named(item: Any) -> tuple[str | None, Any]:
    """`[name, entry]` -> `(name, entry)`; anything else -> `(None, item)`."""
    if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str):
        return item[0], item[1]
    return None, item
