"""Port a hand-written model's weights into its `Circuit` twin: `copy_weights`.

Copying by `parameters()` order works only when both models register their tensors in the
order they use them, which hand-written models often do not: a ConvNeXt block registers its
`layer_scale` before the convolution it scales, a ViT its `class_token` before the patch
embedding. So `copy_weights` runs both models once on an example and pairs tensors by the
order in which they are first used: every call into a torch function (`F.conv2d`,
`torch.cat`, a tensor method) is watched through a `TorchFunctionMode`, and forward
pre-hooks place the tensors a module owns but never passes to a function (BatchNorm's
`num_batches_tracked` in eval mode) right after that module's other tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["CopyReport", "copy_weights"]


@dataclass
class CopyReport:
    """What `copy_weights` did.

    Attributes:
        copied: `(source key, target key)` for every tensor copied, in use order.
        source_unused: source keys never used on the example (not copied).
        target_unused: target keys never used on the example (left as they were).
    """

    copied: list[tuple[str, str]] = field(default_factory=list)
    source_unused: list[str] = field(default_factory=list)
    target_unused: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"copied {len(self.copied)} tensors"]
        for label, keys in (("source", self.source_unused), ("target", self.target_unused)):
            if keys:
                lines.append(f"not used on the example in the {label}: {', '.join(keys)}")
        return "\n".join(lines)


def copy_weights(
    source: nn.Module, circuit: nn.Module, example_input: Any, *, strict: bool = True
) -> CopyReport:
    """Copy `source`'s parameters and buffers into `circuit`, pairing them by first use.

    Both models run once on `example_input`, in eval mode and without gradients (their modes
    are restored after; no buffer is updated). Parameters pair with parameters and buffers
    with buffers, the i-th used in one with the i-th used in the other; every pair must have
    the same shape. Nothing is copied unless every pair fits.

    Args:
        source: the model to copy from, typically written by hand.
        circuit: the model to copy into, typically its `Circuit` twin (any `nn.Module` works).
        example_input: what both models are called with: a tensor, a tuple of positional
            arguments, or a dict of keyword arguments.
        strict: if `True`, a tensor that either model never uses on the example is an error
            (it cannot be paired); if `False` it is left alone and listed in the report.

    Returns:
        A `CopyReport` of what was copied and what was not used.

    Raises:
        ValueError: the models use different numbers of tensors, a pair differs in shape (both
            keys and shapes named), or (with `strict`) a tensor is never used.

    Examples:
        >>> report = torch_circuit.copy_weights(hand_written, circuit, torch.randn(1, 3, 32, 32))
        >>> print(report)
        copied 38 tensors
    """
    source_order = _use_order(source, example_input)
    target_order = _use_order(circuit, example_input)
    report = CopyReport(source_unused=source_order.unused, target_unused=target_order.unused)
    if strict and (report.source_unused or report.target_unused):
        unused = "; ".join(
            f"in the {label}: {', '.join(keys)}"
            for label, keys in (("source", report.source_unused), ("circuit", report.target_unused))
            if keys
        )
        raise ValueError(
            f"copy_weights cannot pair tensors the example never uses ({unused}). Pass an "
            "example that runs every layer, or strict=False to leave them alone."
        )
    pairs: list[tuple[str, torch.Tensor, str, torch.Tensor]] = []
    for kind in ("parameter", "buffer"):
        sources, targets = source_order.used[kind], target_order.used[kind]
        for index, ((src_key, src), (dst_key, dst)) in enumerate(
            zip(sources, targets, strict=False)
        ):
            if src.shape != dst.shape:
                raise ValueError(
                    f"copy_weights: the {kind} used {_ordinal(index)} is {src_key} "
                    f"{tuple(src.shape)} in {type(source).__name__} but {dst_key} "
                    f"{tuple(dst.shape)} in {type(circuit).__name__}; the models compute "
                    "differently here. Nothing was copied."
                )
            pairs.append((src_key, src, dst_key, dst))
        if len(sources) != len(targets):
            longer, name = (
                (sources, "source") if len(sources) > len(targets) else (targets, "circuit")
            )
            extra = ", ".join(key for key, _ in longer[min(len(sources), len(targets)) :][:5])
            raise ValueError(
                f"copy_weights: {type(source).__name__} uses {len(sources)} {kind}s but "
                f"{type(circuit).__name__} uses {len(targets)}; only the {name} uses {extra}. "
                "They are not the same network. Nothing was copied."
            )
    with torch.no_grad():
        for src_key, src, dst_key, dst in pairs:
            dst.copy_(src)
            report.copied.append((src_key, dst_key))
    return report


@dataclass
class _Order:
    used: dict[str, list[tuple[str, torch.Tensor]]]
    unused: list[str]


class _FirstUse(TorchFunctionMode):
    """Records, in order, the tensors of interest that reach a torch function."""

    def __init__(self, watched: Mapping[int, str]) -> None:
        super().__init__()
        self.watched = watched
        self.order: list[int] = []
        self.seen: set[int] = set()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        for leaf in _leaves((args, kwargs or {})):
            identity = id(leaf)
            if identity in self.watched and identity not in self.seen:
                self.seen.add(identity)
                self.order.append(identity)
        return func(*args, **(kwargs or {}))


def _leaves(value: Any) -> list[Any]:
    """The tensors inside nested lists, tuples and dicts of a call's arguments."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, list | tuple):
        return [leaf for item in value for leaf in _leaves(item)]
    if isinstance(value, Mapping):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    return []


def _use_order(model: nn.Module, example: Any) -> _Order:
    owned: dict[int, tuple[str, str, nn.Module, torch.Tensor]] = {}  # id -> kind, key, owner
    for prefix, module in model.named_modules(remove_duplicate=True):
        for kind, tensors in (("parameter", module._parameters), ("buffer", module._buffers)):
            for name, tensor in tensors.items():
                if tensor is not None and id(tensor) not in owned:
                    key = f"{prefix}.{name}" if prefix else name
                    owned[id(tensor)] = (kind, key, module, tensor)
    tracker = _FirstUse({identity: entry[1] for identity, entry in owned.items()})
    ran: list[tuple[nn.Module, int]] = []

    def pre_hook(module: nn.Module, args: Any) -> None:
        ran.append((module, len(tracker.order)))

    modes = {module: module.training for module in model.modules()}
    handles = [module.register_forward_pre_hook(pre_hook) for module in modes]
    try:
        model.eval()
        with torch.no_grad(), tracker:
            _call(model, example)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.train(mode)
    return _ordered(owned, tracker.order, ran)


def _ordered(
    owned: Mapping[int, tuple[str, str, nn.Module, torch.Tensor]],
    order: list[int],
    ran: list[tuple[nn.Module, int]],
) -> _Order:
    """Used tensors by first use; a module's unused tensors after its last used one (or where
    it first ran); tensors of modules that never ran are unused."""
    rank: dict[int, tuple[float, int, int]] = {
        identity: (index, 0, 0) for index, identity in enumerate(order)
    }
    started: dict[int, int] = {}
    for module, at in ran:
        started.setdefault(id(module), at)
    unused: list[str] = []
    registration = 0
    for identity, (_kind, key, owner, _tensor) in owned.items():
        registration += 1
        if identity in rank:
            continue
        if id(owner) not in started:
            unused.append(key)
            continue
        siblings = [rank[i][0] for i, entry in owned.items() if entry[2] is owner and i in rank]
        anchor = max(siblings) if siblings else started[id(owner)] - 0.5
        rank[identity] = (anchor, 1, registration)
    used: dict[str, list[tuple[str, torch.Tensor]]] = {"parameter": [], "buffer": []}
    for identity in sorted(rank, key=rank.__getitem__):
        kind, key, _, tensor = owned[identity]
        used[kind].append((key, tensor))
    return _Order(used, unused)


def _call(model: nn.Module, example: Any) -> Any:
    if isinstance(example, tuple):
        return model(*example)
    if isinstance(example, Mapping):
        return model(**example)
    return model(example)


def _ordinal(index: int) -> str:
    number = index + 1
    suffix = (
        "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    )
    return f"{number}{suffix}"
