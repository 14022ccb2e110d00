"""Build modules and argument values from a config's entries.

An entry names a type and gives its arguments: `{"Conv2d": {"in_channels": 3, ...}}`, a
bare `"ReLU"`, `{"Dropout": 0.1}` (one positional argument) or `{"Conv2d": [3, 64, 3]}`
(positional arguments). Every name is looked up in `torch.nn`'s described layers and the
registry, nothing else: an unknown name is an error that says how to register it.
"""

from __future__ import annotations

import inspect
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, cast

from torch import nn

from ..markers import LambdaLayer
from . import registry
from .format import close_to
from .torchnn import REQUIRED, SPECS_BY_NAME, LayerSpec, refusal

__all__ = ["MARKERS", "EntryDecoder"]

# Entries that only make sense in a layer list (the document's, or a nested Circuit's).
MARKERS = frozenset({"SaveInput", "GetInput", "StartBlock", "EndBlock", "Output", "PerRepeat"})
MAX_DEPTH = 64  # entries nested deeper than this are refused rather than recursed into

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\Z")


class EntryDecoder:
    """Builds modules, functions and values; a subclass adds layer lists and circuits."""

    def __init__(self) -> None:
        self.depth = 0
        self.blocks: list[str] = []  # the blocks open where the decoder is, outermost first

    def fail(self, where: str, message: str, kind: type[Exception] = ValueError) -> NoReturn:
        """Raise `kind` naming `where` (and the open blocks) and what is wrong."""
        raise kind(self.located(where, message))

    def located(self, where: str, message: str) -> str:
        inside = f" (in block {'/'.join(self.blocks)!r})" if self.blocks else ""
        return f"{where}{inside}: {message}"

    def split_entry(self, value: Any, where: str) -> tuple[str, Any]:
        """`"ReLU"` -> `("ReLU", None)`; `{"Conv2d": args}` -> `("Conv2d", args)`."""
        if isinstance(value, str):
            return value, None
        if isinstance(value, Mapping) and len(value) == 1:
            (name, arguments), *_ = value.items()
            if isinstance(name, str):
                return name, arguments
        shown = list(value) if isinstance(value, Mapping) else type(value).__name__
        self.fail(
            where,
            "expected an entry: a type name with its arguments, such as {'Conv2d': "
            f"{{'in_channels': 3, ...}}}}, or a bare name such as 'ReLU'; got {shown!r}.",
            TypeError,
        )

    # --- What a subclass provides ---

    def circuit(self, arguments: Any, where: str) -> nn.Module:
        raise NotImplementedError

    # --- Modules ---

    def module(self, value: Any, where: str) -> nn.Module:
        """The module an entry describes, where only a module may stand."""
        name, arguments = self.split_entry(value, where)
        built = self.entry(name, arguments, where)
        if not isinstance(built, nn.Module):
            self.fail(
                where,
                f"{name!r} is a registered function, but a module is needed here; "
                f"use {{'LambdaLayer': {name!r}}} to make it a layer.",
                TypeError,
            )
        return built

    def entry(self, name: str, arguments: Any, where: str) -> nn.Module | Callable[..., Any]:
        """A module (or, for a registered function, the function) named `name`."""
        if name == "PerRepeat":
            self.fail(
                where,
                "PerRepeat goes in a layer list, or as a GetInput's op or a marker's transform.",
                TypeError,
            )
        if name in MARKERS:
            self.fail(where, f"{name} is a marker; markers only go in a layer list.", TypeError)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                self.fail(where, f"entries are nested more than {MAX_DEPTH} deep.")
            return self._entry(name, arguments, where)
        finally:
            self.depth -= 1

    def _entry(self, name: str, arguments: Any, where: str) -> nn.Module | Callable[..., Any]:
        if name == "Circuit":
            return self.circuit(arguments, f"{where}.Circuit")
        if name == "LambdaLayer":
            return LambdaLayer(self.layer_function(arguments, f"{where}.LambdaLayer"))
        spec = SPECS_BY_NAME.get(name)
        if spec is not None:
            return self.torch_layer(spec, arguments, f"{where}.{name}")
        found = registry.lookup(name)
        if isinstance(found, type):
            return self.registered(found, arguments, f"{where}.{name}")
        if found is not None:
            if arguments is not None:
                self.fail(where, f"{name!r} is a registered function; it takes no arguments here.")
            return cast("Callable[..., Any]", found)
        torch_class = getattr(nn, name, None)
        reason = refusal(torch_class) if isinstance(torch_class, type) else None
        if reason is not None:
            self.fail(where, f"torch.nn.{name} is not described by configs: {reason}.")
        self.fail(where, _unknown(name))

    def layer_function(self, value: Any, where: str) -> Any:
        """`LambdaLayer`'s argument: a registered function's name, or a module entry."""
        if isinstance(value, str):
            return self.named_function(value, where)
        return self.value(value, where)

    def named_function(self, name: str, where: str) -> Callable[..., Any]:
        found = registry.lookup(name)
        if found is None or isinstance(found, type):
            self.fail(
                where,
                f"{name!r} is not a registered function."
                f"{close_to(name, registry.registered_names())} Register it in the program "
                "that loads the config, before loading: "
                f"@torch_circuit.register on its definition, or "
                f"torch_circuit.register(fn, name={name!r}).",
            )
        return cast("Callable[..., Any]", found)

    # --- torch.nn layers ---

    def torch_layer(self, spec: LayerSpec, arguments: Any, where: str) -> nn.Module:
        named_sequence = spec.cls is nn.Sequential and isinstance(arguments, Mapping)
        if spec.container == "sequence" and not named_sequence:
            items = [] if arguments is None else arguments
            if not isinstance(items, list):
                self.fail(
                    where, f"expected a list of entries, got {type(items).__name__}.", TypeError
                )
            children = [self.module(item, f"{where}[{i}]") for i, item in enumerate(items)]
            return spec.cls(children) if spec.cls is nn.ModuleList else spec.cls(*children)
        if spec.container == "mapping" or named_sequence:
            mapping = {} if arguments is None else arguments
            if not isinstance(mapping, Mapping):
                self.fail(
                    where,
                    f"expected names mapped to entries, got {type(mapping).__name__}.",
                    TypeError,
                )
            named = OrderedDict(
                (str(key), self.module(item, f"{where}.{key}")) for key, item in mapping.items()
            )
            return spec.cls(named)
        positional, keywords = self.arguments(arguments, where)
        names = spec.names
        if len(positional) > len(names):
            self.fail(
                where,
                f"takes at most {len(names)} positional arguments ({', '.join(names) or 'none'}), "
                f"got {len(positional)}.",
                TypeError,
            )
        kwargs = dict(zip(names, positional, strict=False))
        for key, value in keywords.items():
            if key not in names:
                self.fail(
                    where,
                    f"has no argument {key!r}.{close_to(key, names)} {_listing(names)}",
                    TypeError,
                )
            if key in kwargs:
                self.fail(
                    where, f"argument {key!r} is given twice (by position and by name).", TypeError
                )
            kwargs[key] = value
        missing = [a.name for a in spec.arguments if a.default is REQUIRED and a.name not in kwargs]
        if missing:
            self.fail(where, f"missing the argument {missing[0]!r}; {_listing(names)}", TypeError)
        for argument in spec.arguments:
            if argument.name in kwargs:
                value = kwargs[argument.name]
                if _number_as_text(value, argument.default):
                    self.fail(
                        f"{where}.{argument.name}",
                        f"is the string {value!r}, but a number is expected; YAML reads 1e-5 "
                        "as text: write 1.0e-5.",
                        TypeError,
                    )
                kwargs[argument.name] = _tuples(value)
        module: nn.Module = self.construct(spec.cls, (), kwargs, where)
        return module

    # --- Registered classes ---

    def registered(self, cls: type, arguments: Any, where: str) -> nn.Module:
        positional, keywords = self.arguments(arguments, where)
        signature = inspect.signature(cls)
        parameters = signature.parameters
        star = next((k for k, p in parameters.items() if p.kind is p.VAR_POSITIONAL), None)
        if star is not None and star in keywords:
            positional = self.splat(parameters, star, positional, keywords, where)
        try:
            signature.bind(*positional, **keywords)
        except TypeError as error:
            names = [k for k, p in parameters.items() if p.kind is not p.VAR_KEYWORD]
            unknown = [key for key in keywords if key not in parameters]
            hint = close_to(unknown[0], names) if unknown else ""
            self.fail(where, f"{error}.{hint} {_listing(names)}", TypeError)
        module: nn.Module = self.construct(cls, tuple(positional), keywords, where)
        return module

    def splat(
        self,
        parameters: Mapping[str, inspect.Parameter],
        star: str,
        positional: list[Any],
        keywords: dict[str, Any],
        where: str,
    ) -> list[Any]:
        """`{a: 1, rest: [2, 3]}` for `(a, *rest)` -> positional `[1, 2, 3]`: the arguments
        before `*rest` must then be given too, and by position."""
        rest = keywords.pop(star)
        if not isinstance(rest, list):
            self.fail(
                f"{where}.{star}", f"*{star} takes a list, got {type(rest).__name__}.", TypeError
            )
        before = [k for k in parameters if k != star][: list(parameters).index(star)]
        missing = [k for k in before[len(positional) :] if k not in keywords]
        if missing:
            self.fail(
                where,
                f"to pass *{star}, give every argument before it; {missing[0]!r} is missing.",
                TypeError,
            )
        return [*positional, *(keywords.pop(k) for k in before[len(positional) :]), *rest]

    def construct(
        self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], where: str
    ) -> Any:
        try:
            return cls(*args, **kwargs)
        except Exception as error:  # the constructor rejected the arguments: say where
            kind = TypeError if isinstance(error, TypeError) else ValueError
            detail = str(error).strip() or type(error).__name__
            message = f"{cls.__name__}(...) refused the arguments given: {detail}"
            raise kind(self.located(where, message)) from error

    # --- Arguments and values ---

    def arguments(self, arguments: Any, where: str) -> tuple[list[Any], dict[str, Any]]:
        """An entry's arguments as decoded positional and keyword values."""
        if arguments is None:
            return [], {}
        if isinstance(arguments, list):
            return [self.value(v, f"{where}[{i}]") for i, v in enumerate(arguments)], {}
        if isinstance(arguments, Mapping):
            keywords = {}
            for key, value in arguments.items():
                if not isinstance(key, str) or not key.isidentifier():
                    self.fail(where, f"argument names are identifiers, got {key!r}.", TypeError)
                keywords[key] = self.value(value, f"{where}.{key}")
            return [], keywords
        return [self.value(arguments, where)], {}

    def value(self, value: Any, where: str) -> Any:
        """An argument: a plain value, a list, or a mapping that stands for a module, a
        function, a class or a dict."""
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, list):
            return [self.value(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, Mapping):
            if len(value) != 1:
                self.fail(
                    where,
                    "a mapping in an argument is an entry with one key: {Type: arguments} "
                    "for a module, {function: name}, {class: name} or {dict: {...}}; got "
                    f"the keys {list(value)!r}.",
                    TypeError,
                )
            (key, inner), *_ = value.items()
            if key == "function":
                return self.named_function(self.text(inner, f"{where}.function"), where)
            if key == "class":
                return self.named_class(self.text(inner, f"{where}.class"), where)
            if key == "dict":
                return self.plain_dict(inner, f"{where}.dict")
            return self.module(value, where)
        self.fail(
            where,
            f"{value!r} ({type(value).__name__}) is not a value a config can hold.",
            TypeError,
        )

    def plain_dict(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(where, f"expected a mapping, got {type(value).__name__}.", TypeError)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                self.fail(where, f"values are nested more than {MAX_DEPTH} deep.")
            return {self.text(k, where): self.value(v, f"{where}.{k}") for k, v in value.items()}
        finally:
            self.depth -= 1

    def named_class(self, name: str, where: str) -> type:
        spec = SPECS_BY_NAME.get(name)
        if spec is not None:
            return spec.cls
        found = registry.lookup(name)
        if not isinstance(found, type):
            self.fail(where, _unknown(name))
        return found

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            self.fail(where, f"expected a name (a string), got {value!r}.", TypeError)
        return value


def _unknown(name: str) -> str:
    known = [*SPECS_BY_NAME, *registry.registered_names(), "Circuit", "LambdaLayer"]
    return (
        f"unknown type {name!r}.{close_to(name, known)} A config names torch.nn layers and "
        "what the loading program registered. If it is your class, register it before "
        f"loading: decorate it with @torch_circuit.register (or call "
        f"torch_circuit.register({name.rsplit('.', 1)[-1]}, name={name!r})) and import the "
        "module that defines it."
    )


def _listing(names: tuple[str, ...] | list[str]) -> str:
    return f"Its arguments: {', '.join(names)}." if names else "It takes no arguments."


def _tuples(value: Any) -> Any:
    """Lists become tuples, as torch.nn stores sizes."""
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


def _number_as_text(value: Any, default: Any) -> bool:
    """`eps: 1e-5` in YAML is the string '1e-5' (YAML 1.1 wants a dot in a float)."""
    number = isinstance(default, int | float) and not isinstance(default, bool)
    return number and isinstance(value, str) and _NUMBER.match(value) is not None
