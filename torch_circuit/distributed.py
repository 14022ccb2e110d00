"""Train a ``Circuit`` on ``torch.distributed``: FSDP2 sharding per repeat, and pipeline stages.

DDP needs nothing from here: a ``Circuit`` is a plain ``nn.Module``, so
``DistributedDataParallel(model)`` works as for a hand-written model. ``shard`` applies FSDP2's
``fully_shard`` to every repeat of every block and then to the root. ``split`` cuts a circuit
into pipeline stages at block or repeat boundaries (or at any named layer), each stage carrying
the skip tensors that cross its boundaries as extra inputs and outputs; ``pipeline_stage`` wraps
this rank's stage in a ``torch.distributed.pipelining.PipelineStage``.

A split point names the module the next stage starts with, as its ``state_dict`` prefix:
``"resnet"`` (before block ``resnet``), ``"resnet.2"`` (before repeat 2 of it), ``"13"`` (before
the top-level layer at argument position 13), ``"resnet.1.5"`` (before the layer at position 5
inside repeat 1).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .block import Block, Scope
from .circuit import Circuit
from .markers import SaveInput
from .plan import BlockNode
from .program import ReadSkip, RunBlock, SaveSkip, Step, run

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup
    from torch.distributed.pipelining import PipelineStage

__all__ = ["CircuitStage", "pipeline_stage", "shard", "split", "split_points"]

# A point between two steps of the forward: the index of a step in the top-level scope, then,
# for a point inside that step's block, a repeat index, a step index in that repeat, and so on.
# (3,) is before top-level step 3; (3, 1, 2) is before step 2 of repeat 1 of the block at step 3.
Path = tuple[int, ...]


# --- Process groups ---


def _require_process_group(caller: str, group: ProcessGroup | None = None) -> None:
    """Raise unless torch.distributed is usable, before any collective could hang."""
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError(
            f"{caller} needs torch.distributed, which this PyTorch build lacks; "
            "install a build with distributed support."
        )
    if group is None and not dist.is_initialized():
        raise RuntimeError(
            f"{caller} needs an initialised default process group, and there is none; call "
            "torch.distributed.init_process_group('gloo' or 'nccl') first (torchrun sets the "
            "environment variables it reads)."
        )


# --- FSDP2 ---


def shard(model: nn.Module, **fully_shard_kwargs: Any) -> nn.Module:
    """Shard ``model`` with FSDP2: ``fully_shard`` each repeat of every block, then the root.

    Each repeat becomes one communication unit, all-gathered just before it runs and freed
    after, the way a transformer is sharded per layer. A block with ``share_weights=True`` has
    one repeat module, gathered at every repeat. Blocks nested in blocks are sharded innermost
    first. The call is the same as doing it by hand::

        for module in reversed(list(model.modules())):
            if isinstance(module, torch_circuit.block.Block):
                for repeat in module.children():
                    fully_shard(repeat, **kwargs)
        fully_shard(model, **kwargs)

    Args:
        model: a ``Circuit``, or any module containing some.
        **fully_shard_kwargs: passed to every ``fully_shard`` call (``mesh``,
            ``reshard_after_forward``, ``mp_policy``, ``offload_policy``, ...).

    Returns:
        ``model`` itself, now an ``FSDPModule``.

    Example::

        >>> dist.init_process_group("nccl")
        >>> model = shard(Circuit(...).cuda())
        >>> optimizer = torch.optim.AdamW(model.parameters())
    """
    _require_process_group("torch_circuit.distributed.shard")
    from torch.distributed.fsdp import fully_shard

    # reversed pre-order: every repeat is sharded before the repeats that contain it
    for module in reversed(list(model.modules())):
        if isinstance(module, Block):
            for repeat in module.children():
                fully_shard(repeat, **fully_shard_kwargs)
    fully_shard(model, **fully_shard_kwargs)
    return model


# --- The structure a stage runs, as plain data (no modules: a stage must not keep the rest) ---


@dataclass(frozen=True)
class _ScopeInfo:
    """A scope's steps and frame size, the entry keys in order, and its blocks by step."""

    steps: tuple[Step, ...]
    num_captures: int
    num_slots: int
    entry_keys: tuple[str, ...]
    entry_steps: tuple[int, ...]  # for each entry, the index of the first step at or after it
    slot_names: tuple[str, ...]
    blocks: dict[int, _BlockInfo]

    def step_of(self, key: str) -> int | None:
        if key not in self.entry_keys:
            return None
        return self.entry_steps[self.entry_keys.index(key)]

    def live_slots(self, step: int) -> tuple[int, ...]:
        """Slots holding a value when step ``step`` is about to run (or is part-way through)."""
        written = set(range(self.num_captures))
        for earlier in self.steps[:step]:
            if isinstance(earlier, SaveSkip):
                written.add(earlier.slot)
        read: set[int] = set()
        for later in self.steps[step:]:
            read.update(_slots_read(later))
        return tuple(sorted(written & read))


@dataclass(frozen=True)
class _BlockInfo:
    node: BlockNode
    body: _ScopeInfo

    def repeat_key(self, index: int) -> str:
        return self.node.repeat_key(index)


def _slots_read(step: Step) -> tuple[int, ...]:
    if isinstance(step, ReadSkip):
        return (step.slot,)
    if isinstance(step, RunBlock):
        return step.slots
    return ()


def _scope_info(scope: Scope, outer_names: Sequence[str] = ()) -> _ScopeInfo:
    steps = scope._steps
    modules = scope._modules
    keys = tuple(node.key for node in scope.nodes)
    step_keys = [step.key for step in steps]
    entry_steps = []
    next_step = 0
    for key in keys:
        if key in step_keys:
            next_step = step_keys.index(key)
        entry_steps.append(next_step)
        if key in step_keys:
            next_step += 1
    names = [""] * (scope._num_captures + scope._num_locals)
    names[: len(outer_names)] = outer_names
    blocks: dict[int, _BlockInfo] = {}
    for index, step in enumerate(steps):
        if isinstance(step, SaveSkip):
            save = modules[step.key]
            names[step.slot] = save.name if isinstance(save, SaveInput) else step.key
        elif isinstance(step, RunBlock):
            block = modules[step.key]
            assert isinstance(block, Block)
            captured = [names[slot] for slot in step.slots]
            blocks[index] = _BlockInfo(block.node, _scope_info(block._modules["0"], captured))  # type: ignore[arg-type]
    return _ScopeInfo(
        steps=steps,
        num_captures=scope._num_captures,
        num_slots=scope._num_captures + scope._num_locals,
        entry_keys=keys,
        entry_steps=tuple(entry_steps),
        slot_names=tuple(names),
        blocks=blocks,
    )


def _scope_at(info: _ScopeInfo, path: Path) -> _ScopeInfo:
    """The scope a path's last step index counts in (``path`` has odd length)."""
    for depth in range(0, len(path) - 1, 2):
        info = info.blocks[path[depth]].body
    return info


def _canonical(info: _ScopeInfo, path: Path) -> Path:
    """One spelling per point: before repeat 0 is before the block, past the end is next."""
    cut = list(path)
    while cut:
        if len(cut) % 2 == 0:  # ends on a repeat index
            block = _scope_at(info, tuple(cut[:-1])).blocks[cut[-2]]
            if cut[-1] == 0:
                cut.pop()
            elif cut[-1] == block.node.num_repeats:
                cut.pop()
                cut[-1] += 1
            else:
                break
        else:  # ends on a step index
            scope = _scope_at(info, tuple(cut))
            if len(cut) > 1 and cut[-1] == 0:
                cut.pop()
            elif len(cut) > 1 and cut[-1] == len(scope.steps):
                cut.pop()
                cut[-1] += 1
            else:
                break
    return tuple(cut)


def _label(info: _ScopeInfo, path: Path) -> str:
    if not path:
        return "the start"
    if path == (len(info.steps),):
        return "the end"
    parts = []
    scope = info
    for depth, index in enumerate(path):
        if depth % 2 == 0:
            parts.append(scope.steps[index].key)
        else:
            parts.append(str(index))
            scope = scope.blocks[path[depth - 1]].body
    return ".".join(parts)


def _parse_point(info: _ScopeInfo, point: str) -> Path:
    if not isinstance(point, str):
        raise TypeError(
            f"split point {point!r} ({type(point).__name__}) is not a string; name the module "
            "the next stage starts with by its state_dict prefix, e.g. 'resnet' or 'resnet.2'."
        )
    tokens = point.split(".")
    path: list[int] = []
    scope = info
    where = "at the top level"
    for depth, token in enumerate(tokens):
        if depth % 2 == 0:
            step = scope.step_of(token)
            if step is None:
                raise ValueError(
                    f"split point {point!r}: {token!r} names no layer or block {where}; "
                    f"valid here: {list(scope.entry_keys)}."
                )
            path.append(step)
            continue
        block = scope.blocks.get(path[-1])
        if block is None or block.node.key != tokens[depth - 1]:
            raise ValueError(
                f"split point {point!r}: {tokens[depth - 1]!r} is not a block, so nothing can "
                f"follow it; end the split point at {'.'.join(tokens[:depth])!r}."
            )
        repeats = block.node.num_repeats
        if not token.isdigit() or int(token) >= repeats:
            raise ValueError(
                f"split point {point!r}: {token!r} is not a repeat of block "
                f"{block.node.name!r}, which has repeats 0 to {repeats - 1}."
            )
        path.append(int(token))
        scope = block.body
        where = f"in block {block.node.name!r}"
    return _canonical(info, tuple(path))


def _check_cut(info: _ScopeInfo, path: Path, point: str) -> None:
    """Reject a cut through tied weights or through a checkpointed repeat."""
    scope = info
    for depth in range(1, len(path), 2):
        block = scope.blocks[path[depth - 1]]
        node = block.node
        if node.share_weights:
            raise ValueError(
                f"split point {point!r} cuts block {node.name!r} (StartBlock at position "
                f"{node.position}), whose repeats share weights: each stage would train its "
                "own copy of the tied weights. Split before or after the block instead."
            )
        if node.checkpoint and depth + 1 < len(path):
            repeat = path[depth]
            raise ValueError(
                f"split point {point!r} is inside repeat {repeat} of block {node.name!r} "
                f"(StartBlock at position {node.position}, checkpoint=True): a checkpointed "
                "repeat is recomputed as one unit, so a stage cannot end inside it. Split "
                f"between repeats instead, e.g. {node.name + '.' + str(repeat)!r}, or build "
                "the block with checkpoint=False."
            )
        scope = block.body


def _boundaries(info: _ScopeInfo) -> list[Path]:
    """The cuts at top-level blocks and between their repeats, in forward order."""
    end = len(info.steps)
    cuts: set[Path] = set()
    for step, block in info.blocks.items():
        cuts.update({(step,), (step + 1,)})
        if not block.node.share_weights:
            cuts.update((step, repeat) for repeat in range(1, block.node.num_repeats))
    return sorted(cut for cut in cuts if cut not in {(0,), (end,)})


def split_points(model: Circuit) -> list[str]:
    """The split points ``split(model, num_stages)`` chooses among, in forward order.

    These are the boundaries before and after every top-level block and between its repeats
    (not between the repeats of a block with shared weights). ``split(model, at=...)`` also
    accepts any top-level layer, and any layer inside a repeat that is not checkpointed.

    Example::

        >>> split_points(model)
        ['resnet', 'resnet.1', 'resnet.2', '13']
    """
    info = _scope_info(_check_circuit(model, "split_points"))
    return [_label(info, cut) for cut in _boundaries(info)]


def _check_circuit(model: Any, caller: str) -> Circuit:
    if not isinstance(model, Circuit):
        raise TypeError(
            f"{caller} splits a Circuit, got {type(model).__name__}; pass the Circuit itself "
            "(not a DDP, FSDP or compiled wrapper of it)."
        )
    return model


def _cost(module: nn.Module | None) -> int:
    if module is None:
        return 0
    return sum(parameter.numel() for parameter in module.parameters())


def _costs_before(model: Circuit, info: _ScopeInfo, cuts: Sequence[Path]) -> list[int]:
    """Parameters run before each top-level cut (a shared repeat counts at every run)."""
    per_step: list[list[int]] = []
    for index, step in enumerate(info.steps):
        module = model._modules[step.key]
        block = info.blocks.get(index)
        if block is None:
            per_step.append([_cost(module)])
        else:
            repeats = module._modules  # type: ignore[union-attr]
            count = block.node.num_repeats
            per_step.append([_cost(repeats[block.repeat_key(r)]) for r in range(count)])
    return [
        sum(sum(costs) for costs in per_step[: cut[0]])
        + (sum(per_step[cut[0]][: cut[1]]) if len(cut) > 1 else 0)
        for cut in cuts
    ]


def _balanced(costs: Sequence[int], total: int, num_cuts: int) -> list[int]:
    """Indices of ``num_cuts`` cuts minimising the largest stage's cost (dynamic programme)."""
    count = len(costs)
    # best[j][i]: the smallest largest-stage cost with cut i as the j-th cut (0-based)
    best = [[float(cost) for cost in costs] for _ in range(num_cuts)]
    previous: list[list[int]] = [[-1] * count for _ in range(num_cuts)]
    for j in range(1, num_cuts):
        for i in range(count):
            best[j][i] = float("inf")
            for k in range(j - 1, i):
                value = max(best[j - 1][k], costs[i] - costs[k])
                if value < best[j][i]:
                    best[j][i], previous[j][i] = value, k
    last = min(
        range(num_cuts - 1, count), key=lambda i: max(best[num_cuts - 1][i], total - costs[i])
    )
    chosen = [last]
    for j in range(num_cuts - 1, 0, -1):
        chosen.append(previous[j][chosen[-1]])
    return chosen[::-1]


def split(
    model: Circuit, num_stages: int | None = None, *, at: Sequence[str] | None = None
) -> list[CircuitStage]:
    """Cut ``model`` into pipeline stages that together compute ``model(x)``.

    Stage ``i`` takes the previous stage's outputs, unpacked, and returns ``(x, *skips)``: the
    current tensor and every saved skip that a later stage still reads, so skips crossing a
    boundary travel with the activations. The last stage returns the model's output. Stages
    hold the model's own modules (no copies) under the model's ``state_dict`` keys.

    Args:
        model: the circuit to cut.
        num_stages: how many stages; the cuts are chosen among ``split_points(model)`` so that
            the largest stage holds as few parameters as possible.
        at: the split points instead, in forward order; each names the module the next stage
            starts with, by its ``state_dict`` prefix: ``"resnet"`` (a top-level block),
            ``"resnet.2"`` (a repeat), ``"13"`` (a top-level layer), ``"resnet.1.5"`` (a layer
            inside a repeat that is not checkpointed).

    Example::

        >>> first, second = split(model, at=["resnet.2"])
        >>> torch.equal(second(*first(x)), model(x))
        True
    """
    circuit = _check_circuit(model, "split")
    info = _scope_info(circuit)
    if at is None:
        cuts = _cuts_for(circuit, info, num_stages)
    else:
        if isinstance(at, str):
            raise TypeError(f"at={at!r} is one string; pass a list of split points: at=[{at!r}].")
        cuts = _cuts_at(info, list(at))
        if num_stages is not None and num_stages != len(cuts) + 1:
            raise ValueError(
                f"num_stages={num_stages} disagrees with at={list(at)!r}, which makes "
                f"{len(cuts) + 1} stages; pass one of the two."
            )
    bounds: list[Path | None] = [(), *cuts, None]
    count = len(bounds) - 1
    return [
        CircuitStage(circuit, info, index, count, bounds[index] or (), bounds[index + 1])
        for index in range(count)
    ]


def _cuts_for(model: Circuit, info: _ScopeInfo, num_stages: int | None) -> list[Path]:
    if num_stages is None:
        raise TypeError("split needs num_stages=N or at=[split points]; pass one of the two.")
    if isinstance(num_stages, bool) or not isinstance(num_stages, int):
        raise TypeError(
            f"num_stages must be a positive int, got {num_stages!r} ({type(num_stages).__name__})."
        )
    if num_stages < 1:
        raise ValueError(f"num_stages must be a positive int, got {num_stages}.")
    candidates = _boundaries(info)
    if num_stages - 1 > len(candidates):
        labels = [_label(info, cut) for cut in candidates]
        raise ValueError(
            f"cannot split into {num_stages} stages: the circuit has {len(candidates)} "
            f"boundaries at blocks and repeats ({labels}), so at most {len(candidates) + 1} "
            f"stage{'s' if candidates else ''}. Use fewer stages (fewer processes), more "
            "repeats, or name the split points with at=[...]: any top-level layer can start a "
            "stage."
        )
    if num_stages == 1:
        return []
    costs = _costs_before(model, info, candidates)
    total = _costs_before(model, info, [(len(info.steps),)])[0]
    return [candidates[i] for i in _balanced(costs, total, num_stages - 1)]


def _cuts_at(info: _ScopeInfo, points: list[str]) -> list[Path]:
    cuts: list[Path] = []
    for number, point in enumerate(points):
        cut = _parse_point(info, point)
        _check_cut(info, cut, point)
        if cut in {(), (0,), (len(info.steps),)}:
            edge = "end" if cut == (len(info.steps),) else "start"
            raise ValueError(
                f"split point {point!r} is at the {edge} of the circuit, so a stage would be "
                "empty; remove it."
            )
        if cuts and cut <= cuts[-1]:
            raise ValueError(
                f"split point {point!r} comes at or before the previous one, "
                f"{points[number - 1]!r}; list split points once each, in forward order."
            )
        cuts.append(cut)
    return cuts


# --- Stages ---


class _Part(nn.Module):
    """Some of a scope's modules, under that scope's keys; it is never called itself."""

    def forward(self, *args: Any) -> Any:
        raise RuntimeError("a part of a pipeline stage is run by its CircuitStage, not called.")


def _collect(scope: nn.Module, info: _ScopeInfo, start: Path, end: Path | None) -> _Part:
    """The modules a stage running ``[start, end)`` of ``scope`` needs, keyed as in ``scope``."""
    part = _Part()
    for key, step in zip(info.entry_keys, info.entry_steps, strict=True):
        module = scope._modules[key]
        if len(start) > 1 and start[0] == step and info.steps[step].key == key:
            same = end is not None and end[0] == step
            inner = _collect_block(module, info.blocks[step], start[1:], end[1:] if same else None)  # type: ignore[index]
            part.add_module(key, inner)
        elif end is not None and len(end) > 1 and end[0] == step and info.steps[step].key == key:
            part.add_module(key, _collect_block(module, info.blocks[step], (), end[1:]))
        elif start <= (step,) and (end is None or (step,) < end):
            part.add_module(key, module)
    return part


class _BlockPart(Block):
    """The repeats of a block that one stage runs; ``forward`` runs its whole repeats.

    It reuses ``Block.forward`` (checkpointing, compilation, error context) on the whole
    repeats only; a repeat cut by a split point is a ``_Part`` the stage runs step by step.
    """

    def __init__(self, node: BlockNode, children: list[tuple[str, nn.Module, bool]]) -> None:
        nn.Module.__init__(self)
        for key, module, _ in children:
            self.add_module(key, module)
        self._order = tuple(key for key, _, whole in children if whole)
        self._node = node

    def __getitem__(self, index: int) -> nn.Module:  # type: ignore[override]
        """The module running repeat ``index`` here (``KeyError`` if another stage runs it)."""
        module = self._modules[str(index)]
        assert module is not None
        return module


def _collect_block(
    block: nn.Module | None, info: _BlockInfo, start: Path, end: Path | None
) -> _BlockPart:
    assert block is not None
    children: list[tuple[str, nn.Module, bool]] = []
    first = start[0] if start else 0
    last = end[0] if end is not None else info.node.num_repeats
    for index in range(first, min(last + 1, info.node.num_repeats)):
        repeat = block._modules[str(index)]
        assert repeat is not None
        inner_start = start[1:] if index == first else ()
        inner_end = end[1:] if end is not None and index == last else None
        if inner_end == ():
            continue  # the stage ends before this repeat
        if inner_start or inner_end is not None:
            part = _collect(repeat, info.body, inner_start, inner_end)
            children.append((str(index), part, False))
        else:
            children.append((str(index), repeat, True))
    return _BlockPart(info.node, children)


@dataclass(frozen=True)
class _Level:
    """One scope a cut is inside: the slots carried across the cut, and those refilled.

    A block's captured skips are the enclosing scope's slots, which the cut carries already,
    so they are refilled from there (``captures``: inner slot, outer slot) rather than sent
    twice.
    """

    scope: _ScopeInfo
    carried: tuple[int, ...]
    captures: tuple[tuple[int, int], ...]


def _levels(info: _ScopeInfo, path: Path) -> list[_Level]:
    """For each scope a cut is inside, outermost first, what crosses the cut there."""
    levels = []
    scope = info
    captured_from: tuple[int, ...] = ()
    for depth in range(0, len(path), 2):
        live = scope.live_slots(path[depth])
        inner = scope.num_captures
        carried = tuple(slot for slot in live if slot >= inner)
        captures = tuple((slot, captured_from[slot]) for slot in live if slot < inner)
        levels.append(_Level(scope, carried, captures))
        if depth + 2 < len(path):
            step = scope.steps[path[depth]]
            assert isinstance(step, RunBlock)
            captured_from = step.slots
            scope = scope.blocks[path[depth]].body
    return levels


class _ContiguousGrad(torch.autograd.Function):
    """The identity, whose backward makes the gradient contiguous.

    A stage's input gradients are sent to the previous stage, and point-to-point sends need
    contiguous tensors; a skip consumed by ``cat`` gets a strided slice as its gradient.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def _contiguous_grad(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.requires_grad:
        return _ContiguousGrad.apply(value)  # type: ignore[no-untyped-call]
    return value


class CircuitStage(nn.Module):
    """One pipeline stage of a ``Circuit``: the part of its forward between two split points.

    Built by ``split``. ``forward(x, *skips)`` takes what the previous stage returned and
    returns ``(x, *skips)`` for the next one; the last stage returns the circuit's output. Its
    children are the circuit's own modules under the circuit's ``state_dict`` keys (a block
    cut by a split point holds only this stage's repeats), so a stage's ``state_dict`` is the
    matching slice of the model's.

    Attributes:
        index: this stage's position in the pipeline, from 0.
        num_stages: how many stages the circuit was split into.
        inputs: the names of the skips ``forward`` takes after ``x``.
        outputs: the names of the skips ``forward`` returns after ``x``.
    """

    def __init__(
        self,
        model: Circuit,
        info: _ScopeInfo,
        index: int,
        num_stages: int,
        start: Path,
        end: Path | None,
    ) -> None:
        super().__init__()
        for key, module in _collect(model, info, start, end)._modules.items():
            self.add_module(key, module)
        self.index = index
        self.num_stages = num_stages
        self._info = info
        self._start = start
        self._end = end
        self._in_levels = _levels(info, start)
        self._out_levels = _levels(info, end) if end is not None else []
        self.inputs = _names(self._in_levels)
        self.outputs = _names(self._out_levels)

    def forward(self, x: Any, *skips: Any) -> Any:
        if len(skips) != len(self.inputs):
            raise TypeError(
                f"pipeline stage {self.index} takes x and {len(self.inputs)} skips "
                f"{list(self.inputs)}, got {len(skips)}; pass it the previous stage's outputs, "
                "unpacked: stage(*outputs)."
            )
        x = _contiguous_grad(x)
        skips = tuple(_contiguous_grad(skip) for skip in skips)
        frames_in = iter(_unpack(self._in_levels, skips))
        frame = next(frames_in) if self._start else [None] * self._info.num_slots
        frames_out: list[list[Any]] = []
        x = self._run_scope(
            self._info, self._modules, frame, x, self._start, self._end, frames_in, frames_out
        )
        if self._end is None:
            return x
        carried = [
            frame[slot]
            for frame, level in zip(frames_out, self._out_levels, strict=True)
            for slot in level.carried
        ]
        return (x, *carried)

    def _run_scope(
        self,
        info: _ScopeInfo,
        modules: dict[str, nn.Module | None],
        frame: list[Any],
        x: Any,
        start: Path,
        end: Path | None,
        frames_in: Iterator[list[Any]],
        frames_out: list[list[Any]],
    ) -> Any:
        """Run steps ``[start, end)`` of one scope on ``frame``, descending into cut blocks."""
        first = start[0] if start else 0
        last = end[0] if end is not None else len(info.steps)
        step = first
        if end is not None:
            frames_out.append(frame)  # before any inner frame: outermost first
        if len(start) > 1:
            inner_end = end[1:] if end is not None and end[0] == first else None
            x = self._run_block(
                info, first, modules, frame, x, start[1:], inner_end, frames_in, frames_out
            )
            if inner_end is not None:
                return x
            step += 1
        x = run(info.steps[step:last], modules, x, frame)
        if end is not None and len(end) > 1:
            x = self._run_block(info, last, modules, frame, x, (), end[1:], frames_in, frames_out)
        return x

    def _run_block(
        self,
        info: _ScopeInfo,
        step: int,
        modules: dict[str, nn.Module | None],
        frame: list[Any],
        x: Any,
        start: Path,
        end: Path | None,
        frames_in: Iterator[list[Any]],
        frames_out: list[list[Any]],
    ) -> Any:
        """Run repeats ``[start, end)`` of the block at ``step``, which other stages share."""
        run_block = info.steps[step]
        assert isinstance(run_block, RunBlock)
        body = info.blocks[step].body
        part = modules[run_block.key]
        assert isinstance(part, _BlockPart)
        captured = [frame[slot] for slot in run_block.slots]
        first = start[0] if start else 0
        if len(start) > 1:
            inner_end = end[1:] if end is not None and end[0] == first else None
            inner = next(frames_in)
            repeat = part._modules[str(first)]._modules  # type: ignore[union-attr]
            x = self._run_scope(body, repeat, inner, x, start[1:], inner_end, frames_in, frames_out)
            if inner_end is not None:
                return x
        x = part(x, *captured)  # the whole repeats, as Block.forward runs them
        if end is not None and len(end) > 1:
            inner = [*captured, *([None] * (body.num_slots - len(captured)))]
            repeat = part._modules[str(end[0])]._modules  # type: ignore[union-attr]
            x = self._run_scope(body, repeat, inner, x, (), end[1:], frames_in, frames_out)
        return x

    def extra_repr(self) -> str:
        start = _label(self._info, self._start)
        end = "the end" if self._end is None else _label(self._info, self._end)
        return (
            f"stage {self.index} of {self.num_stages}: from {start} to {end}, "
            f"skips in {list(self.inputs)}, out {list(self.outputs)}"
        )


def _names(levels: list[_Level]) -> tuple[str, ...]:
    return tuple(level.scope.slot_names[slot] for level in levels for slot in level.carried)


def _unpack(levels: list[_Level], skips: Sequence[Any]) -> list[list[Any]]:
    values = iter(skips)
    frames: list[list[Any]] = []
    for level in levels:
        frame: list[Any] = [None] * level.scope.num_slots
        for slot, outer in level.captures:
            frame[slot] = frames[-1][outer]
        for slot in level.carried:
            frame[slot] = next(values)
        frames.append(frame)
    return frames


def pipeline_stage(
    model: Circuit,
    *,
    at: Sequence[str] | None = None,
    device: torch.device | str | None = None,
    group: ProcessGroup | None = None,
    **stage_kwargs: Any,
) -> PipelineStage:
    """This rank's stage of ``model`` as a ``torch.distributed.pipelining.PipelineStage``.

    The circuit is split into as many stages as ``group`` has ranks (``split(model,
    num_stages)``, or at the split points ``at``), and rank ``i`` gets stage ``i``. Pass the
    result to a schedule such as ``ScheduleGPipe`` or ``Schedule1F1B``; every rank builds the
    same circuit (same seed) before calling this, and may delete it afterwards.

    Args:
        model: the circuit, built identically on every rank.
        at: split points (see ``split``); by default the cuts balance parameters.
        device: where the stage runs; by default the device of its parameters (this rank's
            GPU under NCCL, the CPU otherwise, for a stage without any).
        group: the process group of the pipeline; by default the world.
        **stage_kwargs: passed to ``PipelineStage``.

    Example::

        >>> dist.init_process_group("gloo")
        >>> stage = pipeline_stage(model)
        >>> schedule = ScheduleGPipe(stage, n_microbatches=4, loss_fn=loss_fn)
        >>> if stage.is_first:
        ...     schedule.step(x)
        ... else:
        ...     schedule.step(target=y, losses=losses)
    """
    _require_process_group("torch_circuit.distributed.pipeline_stage", group)
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage

    size = dist.get_world_size(group)
    rank = dist.get_rank(group)
    stages = split(model, num_stages=size if at is None else None, at=at)
    if len(stages) != size:
        raise ValueError(
            f"the split points {list(at or [])!r} make {len(stages)} stages, but the process "
            f"group has {size} ranks and each rank runs one stage; give {size - 1} split points."
        )
    stage = stages[rank]
    if device is None:
        device = _device_of(stage, dist.get_backend(group))
    return PipelineStage(stage, rank, size, torch.device(device), group=group, **stage_kwargs)


def _device_of(stage: nn.Module, backend: str) -> torch.device:
    for tensor in itertools.chain(stage.parameters(), stage.buffers()):
        return tensor.device
    if backend == "nccl":  # a stage without weights still runs on this rank's GPU
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
