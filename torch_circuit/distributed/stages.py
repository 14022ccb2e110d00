"""Pipeline stages of a `Circuit`: `split` into stages, `pipeline_stage` for this rank.

Each stage holds the circuit's own modules under the circuit's keys, runs the steps between
its two cuts, and carries the skips live across a cut as extra inputs and outputs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from ..block import Block
from ..circuit import Circuit
from ..program import run
from .cuts import BlockInfo, Path, ScopeInfo, check_circuit, cuts_at, cuts_for, label, scope_info
from .groups import require_process_group

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup
    from torch.distributed.pipelining import PipelineStage

__all__ = ["CircuitStage", "pipeline_stage", "split"]


def split(
    model: Circuit, num_stages: int | None = None, *, at: Sequence[str] | None = None
) -> list[CircuitStage]:
    """Cut `model` into pipeline stages that together compute `model(x)`.

    Stage `i` takes the previous stage's outputs, unpacked, and returns `(x, *skips)`: the
    current tensor and every saved skip that a later stage still reads, so skips crossing a
    boundary travel with the activations. The last stage returns the model's output. Stages
    hold the model's own modules (no copies) under the model's `state_dict` keys.

    Args:
        model: the circuit to cut.
        num_stages: how many stages; the cuts are chosen among `split_points(model)` so that
            the largest stage holds as few parameters as possible.
        at: the split points instead, in forward order; each names the module the next stage
            starts with, by its `state_dict` prefix: `"resnet"` (a top-level block),
            `"resnet.2"` (a repeat), `"13"` (a top-level layer), `"resnet.1.5"` (a layer
            inside a repeat that is not checkpointed).

    Examples:
        >>> first, second = split(model, at=["resnet.2"])
        >>> torch.equal(second(*first(x)), model(x))
        True
    """
    circuit = check_circuit(model, "split")
    info = scope_info(circuit)
    if at is None:
        cuts = cuts_for(circuit, info, num_stages)
    else:
        if isinstance(at, str):
            raise TypeError(f"at={at!r} is one string; pass a list of split points: at=[{at!r}].")
        cuts = cuts_at(info, list(at))
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


class _Part(nn.Module):
    """Some of a scope's modules under that scope's keys, run step by step by its stage."""

    def __init__(self, children: dict[str, nn.Module]) -> None:
        super().__init__()
        for key, module in children.items():
            self.add_module(key, module)

    def forward(self, *args: Any) -> Any:
        raise RuntimeError("a part of a pipeline stage is run by its CircuitStage, not called.")


def _collect(
    scope: nn.Module, info: ScopeInfo, start: Path, end: Path | None
) -> dict[str, nn.Module]:
    """The modules a stage running `[start, end)` of `scope` needs, keyed as in `scope`."""
    children: dict[str, nn.Module] = {}
    for key, step in zip(info.entry_keys, info.entry_steps, strict=True):
        module = scope.get_submodule(key)
        starts_inside = len(start) > 1 and start[0] == step and info.steps[step].key == key
        ends_inside = end is not None and len(end) > 1 and end[0] == step
        if starts_inside:
            inner_end = end[1:] if end is not None and end[0] == step else None
            children[key] = _collect_block(module, info.blocks[step], start[1:], inner_end)
        elif ends_inside and end is not None and info.steps[step].key == key:
            children[key] = _collect_block(module, info.blocks[step], (), end[1:])
        elif start <= (step,) and (end is None or (step,) < end):
            children[key] = module
    return children


def _collect_block(block: nn.Module, info: BlockInfo, start: Path, end: Path | None) -> Block:
    """The block as one stage holds it: the repeats it runs whole, and parts of cut ones.

    `forward` of the result runs the whole repeats (checkpointing and error notes as in the
    circuit); a repeat cut by a split point is a `_Part` the stage runs step by step.
    """
    if not isinstance(block, Block):
        raise TypeError(
            f"the circuit's module {info.node.key!r} is a {type(block).__name__}, not the "
            "Block it was built with; split the circuit as built."
        )
    children: dict[str, nn.Module] = {}
    runs: list[tuple[int, str]] = []
    first = start[0] if start else 0
    last = end[0] if end is not None else info.node.num_repeats
    for index in range(first, min(last + 1, info.node.num_repeats)):
        repeat = block[index]
        inner_start = start[1:] if index == first else ()
        inner_end = end[1:] if end is not None and index == last else None
        if inner_end == ():
            continue  # the stage ends before this repeat
        if inner_start or inner_end is not None:
            children[str(index)] = _Part(_collect(repeat, info.body, inner_start, inner_end))
        else:
            children[str(index)] = repeat
            runs.append((index, str(index)))
    return Block(info.node, children, runs, block.exchange, block.captured, block.port)


@dataclass(frozen=True)
class _Level:
    """One scope a cut is inside: the slots carried across the cut, and those refilled.

    A block's captured skips are the enclosing scope's slots, which the cut carries already,
    so they are refilled from there (`captures`: inner slot, outer slot) rather than sent
    twice.
    """

    scope: ScopeInfo
    carried: tuple[int, ...]
    captures: tuple[tuple[int, int], ...]


def _levels(info: ScopeInfo, path: Path) -> list[_Level]:
    """For each scope a cut is inside, outermost first, what crosses the cut there."""
    levels = []
    scope = info
    captured_from: tuple[int, ...] = ()
    for depth in range(0, len(path), 2):
        live = scope.live_slots(path[depth])
        inner = scope.num_captures if depth else 0  # the circuit's own are its named inputs
        carried = tuple(slot for slot in live if slot >= inner)
        captures = tuple((slot, captured_from[slot]) for slot in live if slot < inner)
        levels.append(_Level(scope, carried, captures))
        if depth + 2 < len(path):
            block = scope.blocks[path[depth]]
            captured_from = block.captures
            scope = block.body
    return levels


class _ContiguousGrad(torch.autograd.Function):
    """The identity, whose backward makes the gradient contiguous.

    A stage's input gradients are sent to the previous stage, and point-to-point sends need
    contiguous tensors; a skip consumed by `cat` gets a strided slice as its gradient.
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
    """One pipeline stage of a `Circuit`: the part of its forward between two split points.

    Built by `split`. `forward(x, *skips)` takes what the previous stage returned and
    returns `(x, *skips)` for the next one; the last stage returns the circuit's output. Its
    children are the circuit's own modules under the circuit's `state_dict` keys (a block
    cut by a split point holds only this stage's repeats), so a stage's `state_dict` is the
    matching slice of the model's.

    Attributes:
        index: this stage's position in the pipeline, from 0.
        num_stages: how many stages the circuit was split into.
        inputs: the names of the skips `forward` takes after `x` (for the first stage, the
            circuit's named inputs).
        outputs: the names of the skips `forward` returns after `x`.
    """

    def __init__(
        self,
        model: Circuit,
        info: ScopeInfo,
        index: int,
        num_stages: int,
        start: Path,
        end: Path | None,
    ) -> None:
        super().__init__()
        for key, module in _collect(model, info, start, end).items():
            self.add_module(key, module)
        self.index = index
        self.num_stages = num_stages
        self._info = info
        self._start = start
        self._end = end
        self._in_levels = _levels(info, start)
        self._out_levels = _levels(info, end) if end is not None else []
        # The first stage takes the circuit's named inputs, the others what crosses over.
        first = tuple(info.slot_names[: info.num_captures])
        self.inputs = _names(self._in_levels) if start else first
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
        if self._start:
            frame = next(frames_in)
        else:
            frame = [*skips, *([None] * (self._info.num_slots - len(skips)))]
        frames_out: list[list[Any]] = []
        x = self._run_scope(
            self._info, self, frame, x, self._start, self._end, frames_in, frames_out
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
        info: ScopeInfo,
        holder: nn.Module,
        frame: list[Any],
        x: Any,
        start: Path,
        end: Path | None,
        frames_in: Iterator[list[Any]],
        frames_out: list[list[Any]],
    ) -> Any:
        """Run steps `[start, end)` of one scope on `frame`, descending into cut blocks."""
        first = start[0] if start else 0
        last = end[0] if end is not None else len(info.steps)
        step = first
        if end is not None:
            frames_out.append(frame)  # before any inner frame: outermost first
        if len(start) > 1:
            inner_end = end[1:] if end is not None and end[0] == first else None
            x = self._run_block(
                info, first, holder, frame, x, start[1:], inner_end, frames_in, frames_out
            )
            if inner_end is not None:
                return x
            step += 1
        # `holder` is this stage or a `_Part` of it: modules under the scope's own keys.
        x = run(info.steps[step:last], holder._modules, x, frame)
        if end is not None and len(end) > 1:
            x = self._run_block(info, last, holder, frame, x, (), end[1:], frames_in, frames_out)
        return x

    def _run_block(
        self,
        info: ScopeInfo,
        step: int,
        holder: nn.Module,
        frame: list[Any],
        x: Any,
        start: Path,
        end: Path | None,
        frames_in: Iterator[list[Any]],
        frames_out: list[list[Any]],
    ) -> Any:
        """Run repeats `[start, end)` of the block at `step`, which other stages share."""
        block = info.blocks[step]
        body = block.body
        part = _held(holder, block.node.key, Block)
        captured = [frame[slot] for slot in block.captures]
        first = start[0] if start else 0
        if len(start) > 1:
            inner_end = end[1:] if end is not None and end[0] == first else None
            inner = next(frames_in)
            repeat = _held(part, str(first), _Part)
            x = self._run_scope(body, repeat, inner, x, start[1:], inner_end, frames_in, frames_out)
            if inner_end is not None:
                return x
        x = part(x, *captured)  # the whole repeats, as Block.forward runs them
        if end is not None and len(end) > 1:
            inner = [*captured, *([None] * (body.num_slots - len(captured)))]
            repeat = _held(part, str(end[0]), _Part)
            x = self._run_scope(body, repeat, inner, x, (), end[1:], frames_in, frames_out)
        return x

    def extra_repr(self) -> str:
        start = label(self._info, self._start)
        end = "the end" if self._end is None else label(self._info, self._end)
        return (
            f"stage {self.index} of {self.num_stages}: from {start} to {end}, "
            f"skips in {list(self.inputs)}, out {list(self.outputs)}"
        )


Held = TypeVar("Held", bound=nn.Module)


def _held(holder: nn.Module, key: str, kind: type[Held]) -> Held:
    """The module `split` put under `key`, checked to be still of the kind it built."""
    module = holder.get_submodule(key)
    if not isinstance(module, kind):
        raise TypeError(
            f"a pipeline stage's module {key!r} is a {type(module).__name__}, not the "
            f"{kind.__name__} split() put there; split the circuit again instead of editing "
            "its stages."
        )
    return module


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
    """This rank's stage of `model` as a `torch.distributed.pipelining.PipelineStage`.

    The circuit is split into as many stages as `group` has ranks (`split(model,
    num_stages)`, or at the split points `at`), and rank `i` gets stage `i`. Pass the
    result to a schedule such as `ScheduleGPipe` or `Schedule1F1B`; every rank builds the
    same circuit (same seed) before calling this, and may delete it afterwards.

    Args:
        model: the circuit, built identically on every rank.
        at: split points (see `split`); by default the cuts balance parameters.
        device: where the stage runs; by default the device of its parameters (this rank's
            GPU under NCCL, the CPU otherwise, for a stage without any).
        group: the process group of the pipeline; by default the world.
        **stage_kwargs: passed to `PipelineStage`.

    Examples:
        >>> dist.init_process_group("gloo")
        >>> stage = pipeline_stage(model)
        >>> schedule = ScheduleGPipe(stage, n_microbatches=4, loss_fn=loss_fn)
        >>> if stage.is_first:
        ...     schedule.step(x)
        ... else:
        ...     schedule.step(target=y, losses=losses)
    """
    require_process_group("torch_circuit.distributed.pipeline_stage", group)
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
