"""Is a module exactly what its description builds? Compare it with a rebuilt copy.

`to_config` describes a module by its class and constructor arguments, then builds that
description again (on the meta device, so nothing is allocated and no random numbers are
drawn) and compares the two here: class, every attribute, the names, shapes and dtypes of
parameters and buffers, the hooks, and the children, recursively. Any difference means the
module's state is not its constructor's (an attribute changed after construction, a hook
added), and the description is refused rather than written wrong.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from .registry import RECORD_ATTRIBUTE, bound_arguments

__all__ = ["BUILT", "differences", "hook_counts"]

BUILT = "the module its description builds"

# nn.Module's own bookkeeping: compared below by their own rules, or not state at all.
_HOOKS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
_NOT_COMPARED = frozenset(
    {"training", "_parameters", "_buffers", "_modules", "_is_full_backward_hook"}
    | {"_compiled_call_impl", "_non_persistent_buffers_set", *_HOOKS}
)


def hook_counts(module: nn.Module) -> dict[str, int]:
    """How many hooks of each kind `module` itself has (not its children)."""
    counts = {}
    for name in _HOOKS:
        hooks = module.__dict__.get(name)
        if hooks:
            counts[name.strip("_").replace("_", " ")] = len(hooks)
    return counts


def differences(
    original: nn.Module,
    rebuilt: nn.Module,
    path: str = "",
    reference: str = BUILT,
    skip: frozenset[str] = frozenset(),
) -> str | None:
    """The first way `rebuilt` differs from `original`, in words, or `None` if none.

    Devices are not compared; floating dtypes are, so `rebuilt` should already be cast to
    the dtype the description promises. `reference` names `rebuilt` in the message; the
    submodules at the paths in `skip` (relative to the first call's modules) are not compared.
    """
    where = f" (at {path})" if path else ""
    if type(original) is not type(rebuilt):
        return (
            f"it holds a {type(original).__name__}{where} where {reference} has a "
            f"{type(rebuilt).__name__}"
        )
    hooks, expected = hook_counts(original), hook_counts(rebuilt)
    for kind, count in hooks.items():
        if count > expected.get(kind, 0):
            return f"it has {count} {kind}{where} registered after construction"
    found = _attribute_difference(original, rebuilt, where, reference)
    if found is not None:
        return found
    for kind in ("_parameters", "_buffers"):
        found = _tensor_difference(
            original.__dict__[kind], rebuilt.__dict__[kind], kind.strip("_")[:-1], where, reference
        )
        if found is not None:
            return found
    persistent = set(original._buffers) - original._non_persistent_buffers_set
    if persistent != set(rebuilt._buffers) - rebuilt._non_persistent_buffers_set:
        return f"its persistent buffers{where} are not those of {reference}"
    children, rebuilt_children = original._modules, rebuilt._modules
    if list(children) != list(rebuilt_children):
        return (
            f"its submodules{where} are {list(children)}, but {reference} has "
            f"{list(rebuilt_children)}"
        )
    for name, child in children.items():
        child_path = f"{path}.{name}" if path else name
        if child_path in skip:
            continue
        other = rebuilt_children[name]
        if child is None or other is None:
            if child is not other:
                return f"submodule {name!r}{where} is None on one side only"
            continue
        found = differences(child, other, child_path, reference, skip)
        if found is not None:
            return found
    return None


def _attribute_difference(
    original: nn.Module, rebuilt: nn.Module, where: str, reference: str
) -> str | None:
    names = [key for key in original.__dict__ if key not in _NOT_COMPARED]
    expected = {key for key in rebuilt.__dict__ if key not in _NOT_COMPARED}
    for name in names:
        if name not in expected:
            return f"it has an attribute {name!r}{where} that {reference} lacks"
        value, other = original.__dict__[name], rebuilt.__dict__[name]
        if name == RECORD_ATTRIBUTE:
            cls = type(original)
            value, other = bound_arguments(cls, value), bound_arguments(cls, other)
        if not _same(value, other):
            if name == RECORD_ATTRIBUTE:
                return (
                    f"it was built with the arguments {_show(value)}{where}, {reference} with "
                    f"{_show(other)}"
                )
            return (
                f"its attribute {name!r}{where} is {_show(value)}, but {reference} has "
                f"{_show(other)} (was it changed after construction?)"
            )
    missing = expected - set(names)
    if missing:
        return f"it lacks the attribute {sorted(missing)[0]!r}{where} that {reference} has"
    return None


def _tensor_difference(
    tensors: Mapping[str, Any], expected: Mapping[str, Any], kind: str, where: str, reference: str
) -> str | None:
    if list(tensors) != list(expected):
        return f"its {kind}s{where} are {list(tensors)}, but {reference} has {list(expected)}"
    for name, tensor in tensors.items():
        other = expected[name]
        if (tensor is None) != (other is None):
            return f"{kind} {name!r}{where} is None on one side only"
        if tensor is None:
            continue
        if is_lazy(tensor):
            return f"{kind} {name!r}{where} is not initialised yet (a lazy module)"
        if tensor.shape != other.shape:
            return (
                f"{kind} {name!r}{where} has shape {tuple(tensor.shape)}, but {reference} "
                f"has {tuple(other.shape)}"
            )
        if tensor.dtype != other.dtype:
            return f"{kind} {name!r}{where} is {tensor.dtype}, but {reference} has {other.dtype}"
    return None


def _same(a: Any, b: Any) -> bool:
    """Equal as state: tensors by shape and dtype, modules by `differences`, lists and
    tuples alike, NaN equal to NaN, devices not compared."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
        )
    if isinstance(a, nn.Module) or isinstance(b, nn.Module):
        return isinstance(a, nn.Module) and isinstance(b, nn.Module) and not differences(a, b)
    if isinstance(a, weakref.ref) and isinstance(b, weakref.ref):
        return _same(a(), b())
    if isinstance(a, torch.device) and isinstance(b, torch.device):
        return True
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return list(a) == list(b) and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if hasattr(a, "__dataclass_fields__") and type(a) is type(b):
        return _same(vars(a), vars(b))
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # an object whose == cannot answer is not comparable state
        return False


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
