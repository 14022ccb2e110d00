"""The registry: the classes and functions a config may name, besides `torch.nn`'s layers.

A config names things; it never holds code. Loading looks every name up here, in what the
running program registered, and nowhere else: it imports nothing, unpickles nothing and
evaluates nothing. `register` on a class also makes every instance built afterwards remember
the arguments it was built with, which is what `to_config` writes for it.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from torch import nn

__all__ = [
    "RECORD_ATTRIBUTE",
    "RESERVED_NAMES",
    "Recorded",
    "function_name",
    "lookup",
    "recorded_arguments",
    "register",
    "registered_class_name",
]

T = TypeVar("T")

# Names that mean something in every config already: the markers, the value wrappers, the
# named ops and every class of `torch.nn` (described without registration).
MARKER_NAMES = frozenset(
    {"SaveInput", "GetInput", "StartBlock", "EndBlock", "LambdaLayer", "Circuit"}
    | {"Output", "PerRepeat"}  # issue 10's markers: reserved before they land
)
WRAPPER_NAMES = frozenset({"function", "class", "dict"})
OP_NAMES = frozenset({"add", "mul", "cat"})
TORCH_NN_NAMES = frozenset(
    name
    for name, value in vars(nn).items()
    if isinstance(value, type) and issubclass(value, nn.Module)
)
RESERVED_NAMES = MARKER_NAMES | WRAPPER_NAMES | OP_NAMES | TORCH_NN_NAMES

# Where an instance of a registered class keeps the arguments it was built with.
RECORD_ATTRIBUTE = "_torch_circuit_init"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")

_by_name: dict[str, Any] = {}
_recording: set[type] = set()  # classes whose own __init__ records its arguments
_names_of_classes: dict[type, str] = {}
_names_of_functions: dict[int, tuple[Any, str]] = {}  # by id: builtins need not be hashable


@dataclass(frozen=True)
class Recorded:
    """The arguments a registered class was called with, as passed (defaults not filled in)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@overload
def register(obj: T, *, name: str | None = None) -> T: ...


@overload
def register(obj: None = None, *, name: str | None = None) -> Callable[[T], T]: ...


def register(obj: Any = None, *, name: str | None = None) -> Any:
    """Make a class or function known to configs by name.

    On an `nn.Module` subclass, every instance built afterwards remembers its constructor
    arguments (which may be numbers, strings, lists, dicts, modules, or registered classes and
    functions), so `to_config` can describe it and `from_config` build it again. A function
    becomes usable in a config as a `GetInput` op, a `LambdaLayer`, a `PerRepeat` factory or
    an argument. Registering the same object again under its name does nothing; a class
    defined again under the same module and name (a re-run notebook cell) replaces the old one.

    Args:
        obj: the class or function; leave it out to use `register(name=...)` as a decorator.
        name: the name configs use; by default the class's or function's `__name__`. Dotted
            names (`"mylib.Block"`) are allowed; `torch.nn`'s class names, the markers' and
            `add`/`mul`/`cat` are taken.

    Returns:
        `obj` itself (for a class, with its `__init__` wrapped to remember the arguments).

    Raises:
        TypeError: `obj` is not an `nn.Module` subclass or a function, or `name` is not a string.
        ValueError: the name is malformed, reserved, or taken by another object.

    Examples:
        >>> @torch_circuit.register
        ... class Scale(nn.Module):
        ...     def __init__(self, factor: float) -> None: ...
        >>> torch_circuit.register(torch.sub, name="sub")
    """
    if obj is None:
        return functools.partial(register, name=name)
    if isinstance(obj, nn.Module):
        raise TypeError(
            f"register takes a class or a function, got the module instance {obj!r}; register "
            f"its class, register({type(obj).__name__}), before building the instance."
        )
    if isinstance(obj, type):
        if not issubclass(obj, nn.Module):
            raise TypeError(
                f"register takes nn.Module subclasses and functions; {obj.__name__} is not an "
                "nn.Module. Make it one, or describe it through a module that takes its settings."
            )
        return _register_class(obj, _checked_name(obj, name))
    if not callable(obj):
        raise TypeError(
            f"register takes a class or a function, got {obj!r} ({type(obj).__name__})."
        )
    _register_function(obj, _checked_name(obj, name))
    return obj


def _checked_name(obj: Any, name: str | None) -> str:
    if name is None:
        name = getattr(obj, "__name__", None)
        if not isinstance(name, str) or name == "<lambda>":
            raise ValueError(
                f"{obj!r} has no name of its own; pass one: register(obj, name='half_add')."
            )
    if not isinstance(name, str):
        raise TypeError(f"register: name must be a string, got {name!r} ({type(name).__name__}).")
    if not _NAME.match(name):
        raise ValueError(
            f"register: {name!r} is not a valid name; use identifiers joined by dots, "
            "e.g. 'Block' or 'mylib.Block'."
        )
    if name in RESERVED_NAMES:
        what = "torch.nn." + name if name in TORCH_NN_NAMES else "torch-circuit"
        raise ValueError(
            f"register: the name {name!r} is taken by {what}; register {_label(obj)} under a "
            f"name of its own, e.g. register({_label(obj)}, name='mylib.{name}')."
        )
    taken = _by_name.get(name)
    if taken is not None and taken is not obj and not _redefinition(taken, obj):
        raise ValueError(
            f"register: the name {name!r} is already registered for {_label(taken)}; choose "
            f"another for {_label(obj)}: register({_label(obj)}, name='...')."
        )
    return name


def _redefinition(old: Any, new: Any) -> bool:
    """The same definition run again: a notebook cell, a reloaded module, or one file imported
    under two module names (as a script and as a module)."""
    if isinstance(old, type) != isinstance(new, type):
        return False
    if getattr(old, "__qualname__", None) != getattr(new, "__qualname__", None):
        return False
    source = _source(old)
    if source is not None and source == _source(new):
        return True
    return getattr(old, "__module__", None) == getattr(new, "__module__", None)


def _source(obj: Any) -> str | None:
    try:
        return inspect.getfile(obj)
    except (TypeError, OSError):  # builtins have no file
        return None


def _label(obj: Any) -> str:
    return str(getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or obj)


def _forget(name: str) -> None:
    old = _by_name.pop(name, None)
    if isinstance(old, type):
        _names_of_classes.pop(old, None)
    elif old is not None:
        _names_of_functions.pop(id(old), None)


def _register_class(cls: type[nn.Module], name: str) -> type[nn.Module]:
    known = _names_of_classes.get(cls)
    if known is not None and known != name:
        raise ValueError(
            f"register: {cls.__qualname__} is already registered as {known!r}; a class has "
            "one name in configs."
        )
    if known is None:
        _forget(name)
        if cls not in _recording:
            # Wrapped even when inherited: a registered base's wrapper records only its own class.
            setattr(cls, "__init__", _recording_init(cls, cls.__init__))  # noqa: B010 - mypy
            _recording.add(cls)
        _by_name[name] = cls
        _names_of_classes[cls] = name
    return cls


def _recording_init(cls: type, init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def init_and_record(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        # Only the class being built records, not its registered base classes' __init__s.
        if type(self) is cls:
            object.__setattr__(self, RECORD_ATTRIBUTE, Recorded(args, dict(kwargs)))

    return init_and_record


def _register_function(function: Any, name: str) -> None:
    known = _names_of_functions.get(id(function))
    if known is not None and known[1] != name:
        raise ValueError(
            f"register: {_label(function)} is already registered as {known[1]!r}; a function "
            "has one name in configs."
        )
    if known is None:
        _forget(name)
        _by_name[name] = function
        _names_of_functions[id(function)] = (function, name)


def lookup(name: str) -> Any:
    """The class or function registered under `name`, or `None`."""
    return _by_name.get(name)


def registered_names() -> list[str]:
    """Every registered name, sorted (for suggestions in error messages)."""
    return sorted(_by_name)


def registered_class_name(cls: type) -> str | None:
    """The name `cls` is registered under, or `None`."""
    return _names_of_classes.get(cls)


def function_name(function: Any) -> str | None:
    """The name a registered function is known by, or `None`."""
    known = _names_of_functions.get(id(function))
    return None if known is None or known[0] is not function else known[1]


def recorded_arguments(module: nn.Module) -> Recorded | None:
    """The arguments an instance of a registered class was built with, if it remembers them."""
    record = module.__dict__.get(RECORD_ATTRIBUTE)
    return record if isinstance(record, Recorded) else None


def bound_arguments(cls: type, record: Recorded) -> dict[str, Any] | None:
    """`record` by parameter name, as `inspect.Signature.bind` maps it; `None` if the signature
    cannot be read or has positional-only parameters that received values."""
    try:
        signature = inspect.signature(cls)
        bound = signature.bind(*record.args, **record.kwargs)
    except (TypeError, ValueError):
        return None
    for parameter_name in bound.arguments:
        if signature.parameters[parameter_name].kind is inspect.Parameter.POSITIONAL_ONLY:
            return None
    return dict(bound.arguments)
