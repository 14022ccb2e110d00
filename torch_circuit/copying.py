"""Fresh repeats: deep copies of a block body, re-initialised as if built anew.

Both the copy and the re-initialisation walk the module tree with a stack of their own, so
deeply nested blocks copy at Python's default recursion limit.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

from torch import nn

__all__ = ["fresh_copy", "structural_copy"]


def fresh_copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module` with every submodule re-initialised, as if built anew.

    Modules are reset children first, the order in which `__init__` methods initialise them,
    so a parent's own initialisation (`nn.MultiheadAttention` zeroing `out_proj.bias`)
    has the last word. A parameter owned by a module with neither `reset_parameters` nor
    `_reset_parameters` keeps the values it was copied with.
    """
    # Plans are `Immutable`: a copy shares them, so every repeat runs the very same steps
    # (and regional compilation reuses one compiled body for all of them).
    clone = structural_copy(module)
    _reinitialise(clone)
    return clone


_SCALARS = (int, float, bool, str, bytes, type(None))
_EMPTY_CONTAINERS = (dict, OrderedDict, list, set)
_COPY_PROTOCOL = ("__getstate__", "__setstate__", "__reduce_ex__", "__reduce__", "__deepcopy__")


def structural_copy(module: nn.Module, memo: dict[int, Any] | None = None) -> nn.Module:
    """`copy.deepcopy(module, memo)`, several times faster on plain modules.

    `deepcopy` rebuilds each of a module's dozen (mostly empty) hook dictionaries through the
    pickle protocol, which makes building many repeats slow. Here each submodule's attribute
    dictionary is copied entry by entry: scalars are shared, empty containers made anew, and
    everything else (parameters, buffers, non-empty hooks, other state) goes to `deepcopy`
    with the same `memo`, so sharing within the module is kept. A class that customises how
    it is copied or pickled, or uses `__slots__`, is handed to `deepcopy` whole.
    """
    memo = {} if memo is None else memo
    if id(module) in memo:
        return memo[id(module)]  # type: ignore[no-any-return]
    root, whole = _copy_one(module, memo)
    pending = [] if whole else [(module, root)]
    while pending:
        original, clone = pending.pop()
        children: dict[str, nn.Module | None] = {}
        for name, child in original._modules.items():
            if child is None or id(child) in memo:
                children[name] = None if child is None else memo[id(child)]
                continue
            child_clone, child_whole = _copy_one(child, memo)
            children[name] = child_clone
            if not child_whole:
                pending.append((child, child_clone))
        clone.__dict__["_modules"] = children
    return root


def _copy_one(module: nn.Module, memo: dict[int, Any]) -> tuple[nn.Module, bool]:
    """A copy of `module` without its children (filled in by the caller), or, for a class
    that customises copying, a `deepcopy` of it whole (`True`)."""
    cls = type(module)
    customised = any(
        getattr(cls, name, None) is not getattr(nn.Module, name, None) for name in _COPY_PROTOCOL
    )
    if customised or any("__slots__" in vars(base) for base in cls.__mro__):
        return copy.deepcopy(module, memo), True
    clone = cls.__new__(cls)
    memo[id(module)] = clone
    state: dict[str, Any] = {}
    for key, value in module.__dict__.items():
        if key == "_compiled_call_impl":
            continue  # nn.Module's own pickling drops it too: a copy starts uncompiled
        if key == "_modules":
            state[key] = {}  # filled in by structural_copy
        elif type(value) in _SCALARS:
            state[key] = value
        elif type(value) in _EMPTY_CONTAINERS and not value:
            state[key] = type(value)()
        else:
            state[key] = copy.deepcopy(value, memo)
    clone.__dict__.update(state)
    return clone, False


def _reinitialise(root: nn.Module) -> None:
    """Reset every module under `root` (itself included), children before parents."""
    seen: set[int] = set()
    order: list[nn.Module] = []
    stack = [root]
    while stack:  # pre-order, then reversed: every module after all of its descendants
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        order.append(module)
        stack.extend(module.children())
    for module in reversed(order):
        reset = getattr(module, "reset_parameters", None) or getattr(
            module, "_reset_parameters", None
        )
        if callable(reset):
            reset()
