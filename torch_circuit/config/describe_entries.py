"""Describe modules and argument values as config entries, and prove each description.

A module is described by its type name and constructor arguments: read back from its
attributes for `torch.nn`'s layers (`torchnn.py`), as recorded at construction for
registered classes. Every description is then built again, on the meta device, and compared
with the module (`state.py`): a module whose state its description does not reproduce is
refused, with the reason, its place in the model, and the fix.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..block import Block
from ..markers import GetInput, LambdaLayer, SaveInput
from ..scope import Repeat, Scope
from . import registry
from .build import DocumentDecoder
from .state import differences, hook_counts
from .torchnn import REQUIRED, Argument, LayerSpec, refusal, spec_for

__all__ = ["EntryDescriber"]

_REGISTER_FIX = (
    "decorate its class with @torch_circuit.register before building it (instances built "
    "afterwards remember their arguments), or torch_circuit.register(cls, name='...')"
)


class EntryDescriber:
    """Describes modules and values; a subclass adds layer lists and circuits."""

    def __init__(self, circuit_class: type[nn.Module], dtype: torch.dtype) -> None:
        self.circuit_class = circuit_class
        self.dtype = dtype
        self.blocks: list[str] = []

    # --- What a subclass provides ---

    def circuit(self, circuit: Scope, where: str) -> dict[str, Any]:
        raise NotImplementedError

    # --- Errors ---

    def refuse(self, where: str, reason: str, fix: str = "") -> NoReturn:
        inside = f" (in block {'/'.join(self.blocks)!r})" if self.blocks else ""
        fix = f"; {fix}" if fix else ""
        raise ValueError(f"to_config cannot describe {where}{inside}: {reason.rstrip('.')}{fix}.")

    def check_hooks(self, module: nn.Module, where: str) -> None:
        """Markers, circuits and blocks have no constructor hooks: any hook is the user's."""
        for kind, count in hook_counts(module).items():
            self.refuse(
                where,
                f"it has {count} {kind} registered",
                "hooks are code and a config holds none: remove them (handle.remove()) before "
                "to_config, and register them again after loading",
            )

    # --- Modules ---

    def module(self, module: nn.Module, where: str) -> dict[str, Any]:
        """`{Type: arguments}` for `module`, proven by rebuilding it."""
        cls = type(module)
        if cls is self.circuit_class and isinstance(module, Scope):
            self.check_hooks(module, where)
            return {"Circuit": self.circuit(module, f"{where}.Circuit")}
        if isinstance(module, SaveInput | GetInput):
            self.refuse(where, f"{module!r} is a marker where a module is expected")
        if parametrize.is_parametrized(module):
            self.refuse(
                where,
                "its parameters are parametrized (torch.nn.utils.parametrize: weight_norm, "
                "spectral_norm, orthogonal...), which its constructor does not do",
                "remove them with parametrize.remove_parametrizations(module, name) before "
                "to_config, or register a class whose constructor applies them",
            )
        spec = spec_for(cls)
        name = registry.registered_class_name(cls)
        if isinstance(module, Block | Repeat):
            self.refuse(
                where,
                f"it is a {cls.__name__} taken out of the circuit that built it",
                "nest a whole Circuit instead",
            )
        if isinstance(module, Scope) and name is None:
            self.refuse(
                where,
                f"{cls.__name__} subclasses Circuit and may behave differently",
                f"register {cls.__name__} with torch_circuit.register to describe it by its "
                "constructor's arguments",
            )
        if cls is LambdaLayer:
            candidates = [{"LambdaLayer": self.layer_function(module.fn, f"{where}.LambdaLayer")}]
        elif spec is not None:
            candidates = self.torch_candidates(module, spec, f"{where}.{cls.__name__}")
        elif name is not None:
            candidates = [self.registered(module, name, f"{where}.{name}")]
        else:
            reason = refusal(cls)
            if reason is not None:
                self.refuse(where, f"torch.nn.{cls.__name__} is not described: {reason}")
            self.refuse(where, f"its class {_qualified(cls)} is not registered", _REGISTER_FIX)
        found = "no description could be read from it"
        for entry in candidates:
            difference = self.verify(module, entry, where)
            if difference is None:
                return entry
            found = difference
        self.refuse(where, f"its description does not rebuild it exactly: {found}")

    def verify(self, module: nn.Module, entry: dict[str, Any], where: str) -> str | None:
        """How the module `entry` builds differs from `module`, or `None`.

        Built on the meta device (nothing allocated), else on the CPU for a constructor that
        needs real values; random numbers drawn on the way are given back either way.
        """
        failure = ""
        for device in ("meta", None):
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    with torch.device(device) if device else contextlib.nullcontext():
                        rebuilt = DocumentDecoder(self.circuit_class).module(entry, where)
                except (TypeError, ValueError) as error:  # entries wrap constructors' errors
                    failure = f"building it from its description fails: {error}"
                    continue
            return differences(module, rebuilt.to(self.dtype))
        return failure

    def torch_candidates(
        self, module: nn.Module, spec: LayerSpec, where: str
    ) -> list[dict[str, Any]]:
        """A `torch.nn` layer's descriptions to try: the compact one, then in full, for
        each reading of its arguments."""
        name = spec.cls.__name__
        if spec.container is not None:
            children = list(module.named_children())
            if spec.container == "sequence" and all(
                k == str(i) for i, (k, _) in enumerate(children)
            ):
                return [
                    {name: [self.module(c, f"{where}[{i}]") for i, (_, c) in enumerate(children)]}
                ]
            return [{name: {k: self.module(c, f"{where}.{k}") for k, c in children}}]
        candidates = []
        for reading in (spec.arguments, *spec.readings):
            try:
                raw = {argument.name: argument.value(module) for argument in reading}
            except (AttributeError, IndexError, TypeError):
                continue  # not this reading's shape (a Transformer with a custom encoder)
            full = {key: self.value(value, f"{where}.{key}") for key, value in raw.items()}
            compact = _compact(full, reading)
            candidates += [{name: compact}] if compact == full else [{name: compact}, {name: full}]
        return candidates

    def registered(self, module: nn.Module, name: str, where: str) -> dict[str, Any]:
        cls = type(module)
        record = registry.recorded_arguments(module)
        if record is None:
            self.refuse(
                where,
                f"this {cls.__name__} was built before its class was registered, so it does not "
                "remember its arguments",
                "register the class where it is defined, before building instances",
            )
        bound = registry.bound_arguments(cls, record)
        if bound is None:
            if record.kwargs:
                self.refuse(
                    where, "its constructor's signature cannot be read to name the arguments"
                )
            return {name: [self.value(v, f"{where}[{i}]") for i, v in enumerate(record.args)]}
        parameters = inspect.signature(cls).parameters
        arguments: dict[str, Any] = {}
        for key, value in bound.items():
            if parameters[key].kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update({k: self.value(v, f"{where}.{k}") for k, v in value.items()})
            else:
                arguments[key] = self.value(value, f"{where}.{key}")
        return {name: arguments}

    # --- Values ---

    def value(self, value: Any, where: str) -> Any:
        """An argument as plain data."""
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, list | tuple):
            return [self.value(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, nn.Module):
            return self.module(value, where)
        if isinstance(value, torch.Tensor):
            self.refuse(
                where,
                "it is a tensor; a config holds no tensor values",
                "let the constructor create it (its values then come from the weights file), "
                "or pass its shape or a number instead",
            )
        if isinstance(value, Mapping):
            if not all(isinstance(key, str) for key in value):
                self.refuse(where, "it is a dict with keys that are not strings")
            return {"dict": {k: self.value(v, f"{where}.{k}") for k, v in value.items()}}
        if isinstance(value, type):
            spec = spec_for(value)
            name = spec.cls.__name__ if spec is not None else registry.registered_class_name(value)
            if name is None:
                self.refuse(
                    where, f"the class {_qualified(value)} is not registered", _REGISTER_FIX
                )
            return {"class": name}
        if callable(value):
            return {"function": self.function(value, where)}
        self.refuse(
            where,
            f"it is a {type(value).__name__}; a config holds numbers, strings, booleans, None, "
            "lists, dicts, modules, and registered classes and functions",
        )

    def function(self, function: Callable[..., Any], where: str) -> str:
        name = registry.function_name(function)
        if name is not None:
            return name
        label = getattr(function, "__qualname__", None) or repr(function)
        if getattr(function, "__name__", None) == "<lambda>":
            self.refuse(
                where,
                "it is a lambda, and a config names functions rather than storing code",
                "define it as a function and register it (@torch_circuit.register), or use "
                "register(fn, name='...') on the lambda",
            )
        self.refuse(
            where,
            f"the function {label} is not registered",
            f"register it: torch_circuit.register({getattr(function, '__name__', 'fn')}, "
            "name='...') before to_config, and before loading",
        )

    def layer_function(self, function: Any, where: str) -> Any:
        """`LambdaLayer`'s function: a registered function's name, or a module entry."""
        if isinstance(function, nn.Module):
            return self.module(function, where)
        return self.function(function, where)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _compact(full: dict[str, Any], reading: tuple[Argument, ...]) -> dict[str, Any]:
    """Without the arguments at their defaults, and `[3, 3]` written `3`."""
    compact = {}
    for argument in reading:
        value = _collapse(full[argument.name])
        if argument.default is not REQUIRED and _same_json(value, _collapse(argument.default)):
            continue
        compact[argument.name] = value
    return compact


def _collapse(value: Any) -> Any:
    if (
        isinstance(value, list | tuple)
        and value
        and all(
            type(item) in (int, float) and type(item) is type(value[0]) and item == value[0]
            for item in value
        )
    ):
        return value[0]
    return value


def _same_json(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
