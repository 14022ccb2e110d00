"""Running a block's repeats: one by one, in checkpoint segments, or as compiled regions.

`run_repeats` is the loop of `Block.forward` (issue 13). Eager, it calls each repeat in turn,
or runs `checkpoint=k` segments of `k` repeats each under `torch.utils.checkpoint`. Under
`torch.compile` it calls the repeats through one nested compile region where
`regions.why_unrolled` allows it (see `torch_circuit.regions`).

It assumes only this of a repeat: a module called as `repeat(x, *captured)` whose result, a
tensor or a pytree of tensors, is the next repeat's `x`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .nodes import BlockNode
from .program import add_context
from .regions import Repeats, Step, region_step, why_unrolled

__all__ = ["recompute_options", "run_repeats"]


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
    step: Step = _direct
    compiling = torch.compiler.is_compiling() and not torch.compiler.is_exporting()
    if compiling and why_unrolled(node, repeats) is None:
        step = region_step(repeats[0][1], inline_first=bool(captured))
    every = int(node.checkpoint)
    if not every or not torch.is_grad_enabled():
        for position, (index, repeat) in enumerate(repeats):
            try:
                x = step(position, repeat, x, captured)
            except Exception as error:
                add_context(error, where(index))
                raise
        return x
    for start in range(0, len(repeats), every):
        segment = repeats[start : start + every]
        try:
            x = checkpoint(
                _segment, step, start, segment, x, *captured, use_reentrant=False,
                **recompute_options([module for _, module in segment]),
            )  # fmt: skip
        except Exception as error:
            first, last = segment[0][0], segment[-1][0]
            add_context(error, where(first) if first == last else _span(where, first, last))
            raise
    return x


def _segment(step: Step, start: int, segment: Repeats, x: Any, *captured: Any) -> Any:
    """One checkpoint segment: its repeats in turn (`start`: the first one's position)."""
    for offset, (_, repeat) in enumerate(segment):
        x = step(start + offset, repeat, x, captured)
    return x


def _direct(position: int, repeat: nn.Module, x: Any, captured: Sequence[Any]) -> Any:
    return repeat(x, *captured)


def _span(where: Callable[[int], str], first: int, last: int) -> str:
    return where(first).replace(f"in repeat {first} ", f"in repeats {first}-{last} ", 1)


def recompute_options(modules: Sequence[nn.Module]) -> dict[str, Any]:
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
