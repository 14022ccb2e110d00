"""Running a block's repeats: checkpoint segments, and one compiled region for all repeats.

`run_repeats` is the loop of `Block.forward`. In eager mode it calls each repeat in turn, or
`checkpoint=k` segments of `k` repeats under `torch.utils.checkpoint`. Under
`torch.compile` (Dynamo, not export) it calls each repeat through
`torch.compiler.nested_compile_region`, so Dynamo traces the body once and stamps the traced
subgraph out for every other repeat (`invoke_subgraph`), and Inductor compiles it once: cold
compile time stays nearly flat in `num_repeats`, inside one graph.

A region is handed distinct tensors, by construction. `invoke_subgraph` keys its reuse on the
region's inputs after merging identical ones, so a region first called with `(x, x)` (a skip
saved right before the block is also the block's input) and later with `(y, x)` silently
reuses the first trace and gets wrong results (torch 2.13 and 2.14); a region whose inputs
or outputs are views of each other fails to compile. So at the block's entry, when the block
reads outer skips, every tensor but the first is cloned once (not once per repeat), and a
body that may return (a view of) its inputs has its result cloned inside the region. A block
that a region cannot run correctly runs unrolled, as before, with the reason recorded:
`explain(model)` lists every block and why it is unrolled, if it is.

The hook assumes only this of a repeat: a module called as `repeat(x, *captured)` whose
result, a tensor or a pytree of tensors, is the next repeat's `x`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree
from torch.utils.checkpoint import checkpoint

from .nodes import BlockNode
from .ops import NAMED_OPS
from .program import ReadSkip, add_context

__all__ = [
    "checkpoint_segment",
    "explain",
    "regions_enabled",
    "run_repeats",
    "unrolled",
    "why_unrolled",
]

Repeats = Sequence[tuple[int, nn.Module]]

# Ops whose result is always a new tensor: a body ending in one of them needs no clone.
_FRESH_OPS: tuple[Callable[..., Any], ...] = (*NAMED_OPS.values(), torch.cat, torch.add)
_enabled = True


def regions_enabled() -> bool:
    """Whether `torch.compile` runs repeated blocks as regions (the default) or unrolled."""
    return _enabled


@contextlib.contextmanager
def unrolled() -> Iterator[None]:
    """Trace every block unrolled while this is active, as torch-circuit 0.1 did.

    Dynamo reads the setting when it traces, so the first call of a compiled model must
    happen inside the `with`; it guards on it, so a later call outside recompiles.

    Example:

        >>> with torch_circuit.regions.unrolled():
        ...     torch.compile(model)(x)
    """
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def run_repeats(
    node: BlockNode,
    repeats: Repeats,
    x: Any,
    captured: Sequence[Any],
    where: Callable[[int], str],
) -> Any:
    """Run `repeats` (`(index, module)` in order) on `x`: `x = repeat(x, *captured)` each.

    Args:
        node: the block's declaration (`checkpoint` is the segment length, 0 for none).
        repeats: the repeats to run and their modules (one module throughout if shared).
        x: the block's input.
        captured: the outer skips the body reads, in plan order.
        where: says where repeat `index` is, for the note added to an error.
    """
    compiling = torch.compiler.is_compiling() and not torch.compiler.is_exporting()
    if compiling and why_unrolled(node, repeats) is None:
        x, captured = _distinct(x, captured)
        call = _region_fresh if _fresh_result(repeats[0][1]) else _region_cloned
        return _loop(node, repeats, x, captured, where, call)
    return _loop(node, repeats, x, captured, where, None)


def _loop(
    node: BlockNode,
    repeats: Repeats,
    x: Any,
    captured: Sequence[Any],
    where: Callable[[int], str],
    call: Callable[..., Any] | None,
) -> Any:
    """The repeats in turn, each through `call(repeat, x, *captured)` (`None`: directly)."""
    every = int(node.checkpoint)
    if not every or not torch.is_grad_enabled():
        for index, repeat in repeats:
            try:
                x = repeat(x, *captured) if call is None else call(repeat, x, *captured)
            except Exception as error:
                add_context(error, where(index))
                raise
        return x
    for start in range(0, len(repeats), every):
        segment = repeats[start : start + every]
        try:
            x = checkpoint(
                _segment, call, segment, x, *captured, use_reentrant=False,
                **_recompute([module for _, module in segment]),
            )  # fmt: skip
        except Exception as error:
            first, last = segment[0][0], segment[-1][0]
            add_context(error, where(first) if first == last else _span(where, first, last))
            raise
    return x


def checkpoint_segment(marker: Any, position: int) -> int:
    """The repeats per checkpoint segment that `marker.checkpoint` asks for (0: none).

    Raises:
        TypeError: `checkpoint` is neither a bool nor an int.
        ValueError: `checkpoint` is an int below 1.
    """
    value = marker.checkpoint
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int):
        raise TypeError(
            f"{marker!r} at position {position}: checkpoint must be True, False or a "
            f"positive int (repeats per segment), got {value!r} ({type(value).__name__}); "
            "e.g. checkpoint=True or checkpoint=2."
        )
    if value < 1:
        raise ValueError(
            f"{marker!r} at position {position}: checkpoint={value} must be a positive int "
            "(repeats per checkpoint segment); use checkpoint=False to keep every activation, "
            "or checkpoint=1 (or True) to recompute each repeat."
        )
    return value


def _span(where: Callable[[int], str], first: int, last: int) -> str:
    return where(first).replace(f"in repeat {first} ", f"in repeats {first}-{last} ", 1)


def _segment(
    call: Callable[..., Any] | None, segment: Repeats, x: Any, *captured: Any
) -> Any:  # one checkpoint segment: its repeats in turn
    for _, repeat in segment:
        x = repeat(x, *captured) if call is None else call(repeat, x, *captured)
    return x


def _repeat_fresh(repeat: nn.Module, x: Any, *captured: Any) -> Any:
    return repeat(x, *captured)


def _repeat_cloned(repeat: nn.Module, x: Any, *captured: Any) -> Any:
    # The result may be (a view of) an input, which a region may not return.
    return pytree.tree_map_only(Tensor, torch.clone, repeat(x, *captured))


# Two regions (two code objects, so two reuse caches); the limit on distinct traces per
# region is raised from 8, since every block body of a model shares them.
_region_fresh = torch.compiler.nested_compile_region(_repeat_fresh, max_reuse_entries=256)
_region_cloned = torch.compiler.nested_compile_region(_repeat_cloned, max_reuse_entries=256)


def _distinct(x: Any, captured: Sequence[Any]) -> tuple[Any, Sequence[Any]]:
    """Clone every tensor of `(x, *captured)` but the first, when there is more than one."""
    leaves, spec = pytree.tree_flatten((x, list(captured)))
    positions = [index for index, leaf in enumerate(leaves) if isinstance(leaf, Tensor)]
    if len(positions) < 2:
        return x, captured
    for index in positions[1:]:  # by position: the same tensor may come twice
        leaves[index] = leaves[index].clone()
    x, captured = pytree.tree_unflatten(leaves, spec)
    return x, captured


def _fresh_result(repeat: nn.Module) -> bool:
    """Whether the body's last step is a read whose op always makes a new tensor."""
    steps = getattr(repeat, "steps", ())
    if not steps or not isinstance(steps[-1], ReadSkip):
        return False
    op = getattr(repeat.get_submodule(steps[-1].key), "op", None)
    return any(op is fresh for fresh in _FRESH_OPS)


def why_unrolled(node: BlockNode, repeats: Repeats) -> str | None:
    """Why this block runs unrolled under `torch.compile`, or `None` if it runs as a region.

    Decided from the block's first repeat (the others are fresh copies of it): a region
    cannot update buffers while training (BatchNorm's running statistics), nor be handed
    inputs that a layer changes in place.
    """
    if not _enabled:
        return "regions are switched off (torch_circuit.regions.unrolled())"
    if len(repeats) < 2:
        return "it runs once"
    for name, module in repeats[0][1].named_modules():
        if getattr(module, "inplace", False) is True:
            return f"layer {name} ({type(module).__name__}) works in place (inplace=True)"
        if module.training and next(module.buffers(recurse=False), None) is not None:
            return (
                f"layer {name} ({type(module).__name__}) has buffers that training mode may "
                "update, and a region cannot update buffers; use eval() for inference"
            )
    return None


def explain(model: nn.Module) -> dict[str, str]:
    """How `torch.compile` runs each repeated block of `model`, by its module path.

    `"region"` when the block's repeats share one traced region; otherwise why the block is
    unrolled. Reflects the model's current mode (`train()`/`eval()`).

    Example:

        >>> torch_circuit.regions.explain(model)
        {'stage': 'region', 'head': 'unrolled: layer 1 (BatchNorm1d) has buffers ...'}
    """
    found: dict[str, str] = {}
    for path, module in model.named_modules():
        node = getattr(module, "node", None)
        if isinstance(node, BlockNode) and hasattr(module, "indices"):
            repeats = [(index, module[index]) for index in module.indices]
            reason = why_unrolled(node, repeats)
            found[path] = "region" if reason is None else f"unrolled: {reason}"
    return found


def _recompute(modules: Sequence[nn.Module]) -> dict[str, Any]:
    """Checkpoint options that undo a recompute's buffer updates (BatchNorm statistics).

    The forward pass already updated the buffers once; the recompute during backward must not
    update them again. Under `torch.compile` the recompute is functional and leaves them be.
    """
    if torch.compiler.is_compiling():
        return {}
    unique = dict.fromkeys(modules)  # a shared repeat appears once per repeat it runs
    buffers = [buffer for module in unique for buffer in module.buffers()]
    if not buffers:
        return {}

    def contexts() -> tuple[contextlib.AbstractContextManager[None], ...]:
        return contextlib.nullcontext(), _restoring(buffers)

    return {"context_fn": contexts}


@contextlib.contextmanager
def _restoring(buffers: Sequence[Tensor]) -> Iterator[None]:
    saved = [(buffer, buffer.clone()) for buffer in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
