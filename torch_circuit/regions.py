"""One compiled region for all repeats of a block, inside one `torch.compile` graph.

Under `torch.compile` (Dynamo, not export), `repeats.run_repeats` calls a block's repeats
through `torch.compiler.nested_compile_region`: Dynamo traces the body once and stamps the
traced subgraph out for every other repeat (`invoke_subgraph`), and Inductor compiles it once,
so cold compile time stays nearly flat in `num_repeats`.

A region is handed distinct tensors, by construction. `invoke_subgraph` keys its reuse on the
region's inputs after merging identical ones, so a region first called with `(x, x)` (a skip
saved right before the block is also the block's input) and later with `(y, x)` silently
reuses the first trace and gets wrong results (torch 2.13 and 2.14); a region whose inputs
or outputs are views of each other fails to compile. So at the block's entry, when the block
reads an outer skip, repeat 0 (whose input may be that skip, or a view of it) runs inline and
the region takes over from repeat 1; a block reading two or more outer skips (which may be
views of one another) is unrolled. A body that may return (a view of) its input has its result
cloned inside the region. A block that a region cannot run correctly runs unrolled, as before,
with the reason recorded: `explain(model)` lists every block and why it is unrolled, if it is.

While autograd records, regions are used only where the caller asked for them with
`allow_in_training` (as `Circuit.compile()` does): Inductor in torch 2.13 and 2.14.1 reuses the
buffer of a region's input after the call although the region saved that very tensor for
backward, which corrupts gradients whenever a layer follows the block in the same graph
(`docs/performance.md` has the reproducer); `Circuit.compile()` compiles with Inductor's
`allow_buffer_reuse=False`, which avoids it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from .nodes import BlockNode
from .ops import NAMED_OPS
from .program import ReadSkip, ReadSkips, RunBlock

__all__ = [
    "allow_in_training",
    "compile_in_place",
    "explain",
    "region_step",
    "regions_enabled",
    "unrolled",
    "why_unrolled",
]

Repeats = Sequence[tuple[int, nn.Module]]
Step = Callable[[int, nn.Module, Any, Sequence[Any]], Any]
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

    Examples:

        >>> with torch_circuit.regions.unrolled():
        ...     torch.compile(model)(x)
    """
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def region_step(first: nn.Module, inline_first: bool) -> Step:
    """How repeat `position` runs under `torch.compile`: through a region, handed `(x, *skips)`.

    The region's inputs never alias one another. Without outer skips it gets `x` alone. With
    one (`why_unrolled` refuses more), the block's input may be that skip or a view of it, so
    repeat 0 runs inline; from repeat 1 on, `x` is a result the body made, cloned first unless
    the body's last op always makes a new tensor. A region's result never aliases its inputs
    either: unless the body ends in such an op, it is cloned inside the region.
    """
    fresh = _fresh_result(first)
    region = _region_fresh if fresh else _region_cloned

    def step(position: int, repeat: nn.Module, x: Any, captured: Sequence[Any]) -> Any:
        if inline_first and position == 0:
            return repeat(x, *captured)
        if inline_first and position == 1 and not fresh:
            x = pytree.tree_map_only(Tensor, torch.clone, x)
        return region(repeat, x, *captured)

    return step


def _repeat_fresh(repeat: nn.Module, x: Any, *captured: Any) -> Any:
    return repeat(x, *captured)


def _repeat_cloned(repeat: nn.Module, x: Any, *captured: Any) -> Any:
    # The result may be (a view of) an input, which a region may not return.
    return pytree.tree_map_only(Tensor, torch.clone, repeat(x, *captured))


# Two regions (two code objects, so two reuse caches); the limit on distinct traces per
# region is raised from 8, since every block body of a model shares them.
_region_fresh = torch.compiler.nested_compile_region(_repeat_fresh, max_reuse_entries=256)
_region_cloned = torch.compiler.nested_compile_region(_repeat_cloned, max_reuse_entries=256)


def _fresh_result(repeat: nn.Module) -> bool:
    """Whether the body's last step is a read whose op always makes a new tensor."""
    steps = getattr(repeat, "steps", ())
    if not steps or not isinstance(steps[-1], ReadSkip):
        return False
    op = getattr(repeat.get_submodule(steps[-1].key), "op", None)
    return any(op is fresh for fresh in _FRESH_OPS)


def _outer_reads(repeat: nn.Module) -> dict[str, int]:
    """How often the body reads each outer skip, by name (an inner block reads it often)."""
    outer = getattr(repeat, "num_captures", 0)
    counts = [0] * outer
    names = [f"outer skip {slot}" for slot in range(outer)]
    for step in getattr(repeat, "steps", ()):
        if isinstance(step, ReadSkip | ReadSkips):
            read = repeat.get_submodule(step.key)
            for slot, name in zip(step.slots, getattr(read, "names", ()), strict=False):
                if slot < outer:
                    counts[slot] += 1
                    names[slot] = name
        elif isinstance(step, RunBlock):
            for slot in step.slots:
                if slot < outer:
                    counts[slot] += 2
    return dict(zip(names, counts, strict=True))


_TRAINING = "_torch_circuit_regions_in_training"


def allow_in_training(model: nn.Module) -> None:
    """Let `model`'s blocks run as regions while autograd records, too.

    Only for a compile that avoids Inductor's buffer-reuse bug (see the module docstring):
    `torch.compile(model, options={"allow_buffer_reuse": False})`, or a backend other than
    Inductor. `Circuit.compile()` calls this itself.
    """
    for module in model.modules():
        if hasattr(module, "steps"):  # a scope: the top level or a repeat
            setattr(module, _TRAINING, True)


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
    first = repeats[0][1]
    port = getattr(first, "port", None)
    if port is not None and (port.stacks or port.outputs):
        return "its repeats push, pop or record outputs, which they hand on one by one"
    if torch.is_grad_enabled() and not getattr(first, _TRAINING, False):
        return (
            "autograd is recording, and Inductor (torch 2.13, 2.14.1) may reuse a buffer a "
            "region saved for backward; Circuit.compile() compiles regions for training safely"
        )
    reads = _outer_reads(first)
    if len(reads) > 1:
        return (
            f"its body reads {len(reads)} outer skips ({', '.join(reads)}), which may be "
            "views of one another; a region takes at most one"
        )
    if any(count > 1 for count in reads.values()):
        return (
            f"its body reads the outer skip {next(iter(reads))!r} more than once per repeat, "
            "so a region would sum that skip's gradients in another order than eager"
        )
    names = [name for name, _ in first.named_parameters(remove_duplicate=False)]
    if len(names) != len(set(map(id, first.parameters()))):
        return (
            "a parameter is used twice in one repeat (tied layers), so a region would sum its "
            "gradients in another order than eager"
        )
    for name, module in first.named_modules():
        inner = getattr(module, "node", None)
        if name and isinstance(inner, BlockNode) and _runs_as_region(inner, module):
            return (
                f"its body holds the repeated block {inner.name!r}, which runs as a region; "
                "regions inside regions fail to compile for training (torch 2.13, 2.14.1)"
            )
        if getattr(module, "inplace", False) is True:
            return f"layer {name} ({type(module).__name__}) works in place (inplace=True)"
        if module.training and next(module.buffers(recurse=False), None) is not None:
            return (
                f"layer {name} ({type(module).__name__}) has buffers that training mode may "
                "update, and a region cannot update buffers; use eval() for inference"
            )
    return None


def _repeats_of(node: BlockNode, block: nn.Module) -> list[tuple[int, nn.Module]]:
    """The `(index, module)` of each repeat `block` runs (a pipeline stage runs some)."""
    indices = getattr(block, "indices", range(node.num_repeats))
    return [(index, block.get_submodule(node.repeat_key(index))) for index in indices]


def _runs_as_region(node: BlockNode, block: nn.Module) -> bool:
    return why_unrolled(node, _repeats_of(node, block)) is None


def explain(model: nn.Module) -> dict[str, str]:
    """How `torch.compile` runs each repeated block of `model`, by its module path.

    `"region"` when the block's repeats share one traced region; otherwise why the block is
    unrolled. Reflects the model's current mode (`train()`/`eval()`) and whether autograd
    records (`torch.no_grad()`), as a compile traced now would see them.

    Examples:

        >>> torch_circuit.regions.explain(model)
        {'stage': 'region', 'head': 'unrolled: layer 1 (BatchNorm1d) has buffers ...'}
    """
    found: dict[str, str] = {}
    for path, module in model.named_modules():
        node = getattr(module, "node", None)
        if isinstance(node, BlockNode):
            reason = why_unrolled(node, _repeats_of(node, module))
            found[path] = "region" if reason is None else f"unrolled: {reason}"
    return found


def compile_in_place(model: nn.Module, **kwargs: Any) -> None:
    """`model.compile(**kwargs)`: one graph, each repeated block's body traced once.

    Regions also run while training (`allow_in_training`) when the compile avoids Inductor's
    buffer-reuse bug (module docstring): with Inductor, the default backend, buffer reuse is
    turned off for this compile (`options={"allow_buffer_reuse": False}`) unless the caller
    sets it or passes `mode=` (which excludes `options`); any other backend is safe as is.
    Otherwise training runs unrolled and inference still gets regions. Inductor's checks of
    each region call's input sizes (`size_asserts`, redundant with the guards of the graph)
    are turned off too unless the caller sets them: on small layers they cost 10% of a step.
    """
    backend = kwargs.get("backend") or "inductor"
    options = dict(kwargs.get("options") or {})
    if backend != "inductor":
        allow_in_training(model)
    elif kwargs.get("mode") is None and options.get("allow_buffer_reuse", False) is False:
        options["allow_buffer_reuse"] = False
        options.setdefault("size_asserts", False)
        kwargs["options"] = options
        allow_in_training(model)
    nn.Module.compile(model, **kwargs)
