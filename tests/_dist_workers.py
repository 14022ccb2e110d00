"""Models, data and the per-rank training runs for tests/test_distributed.py.

The test process imports the same builders to train the single-process reference, so both
sides start from the same weights (seeded) and see the same global batches.
"""

from __future__ import annotations

import os
import re
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from torch_circuit import Circuit, EndBlock, GetInput, Output, SaveInput, StartBlock

STEPS = 20
BATCH = 8  # global batch; each of the 2 ranks gets half under DDP and FSDP2
MICROBATCHES = 2  # per global batch, under the pipeline schedules
LR = 0.05


def skip_circuit(share_weights: bool = False, checkpoint: bool = False) -> Circuit:
    """A small MLP whose skips cross every kind of boundary a split or a shard can make.

    ``x0`` (the raw input, no gradient) is read at the very end; ``stem`` is read inside every
    repeat (a block capture) and after the block; ``r`` lives inside each repeat.
    """
    torch.manual_seed(0)
    return Circuit(
        SaveInput("x0"),
        nn.Linear(6, 16),
        SaveInput("stem"),
        StartBlock("body", num_repeats=3, share_weights=share_weights, checkpoint=checkpoint),
        SaveInput("r"),
        nn.Linear(16, 16),
        nn.Tanh(),
        nn.Linear(16, 16),
        GetInput("r"),
        GetInput("stem", op=torch.mul),
        nn.LayerNorm(16),
        EndBlock("body"),
        nn.Linear(16, 16),
        GetInput("stem"),
        GetInput("x0", op="cat"),  # (B, 16 + 6)
        nn.Linear(22, 4),
    )


def dataflow_circuit(outputs: bool = True) -> Circuit:
    """A named input read in every repeat; outputs in the block and at the end."""
    torch.manual_seed(0)
    hidden = [Output("hidden")] if outputs else []
    last = [Output("out")] if outputs else []
    return Circuit(
        nn.Linear(6, 16),
        StartBlock("body", num_repeats=3),
        SaveInput("r"),
        nn.Linear(16, 16),
        GetInput("scale", op=torch.mul),
        nn.Tanh(),
        GetInput("r"),
        *hidden,
        EndBlock("body"),
        nn.Linear(16, 4),
        *last,
        inputs=("scale",),
    )


def scales() -> Tensor:
    """The named input of every step: `(STEPS, BATCH, 16)`."""
    return torch.rand(STEPS, BATCH, 16, generator=torch.Generator().manual_seed(99)) + 0.5


def dataflow_loss(output: dict[str, Any], target: Tensor) -> Tensor:
    hidden = sum(h.pow(2).mean() for h in output["hidden"])
    return loss_fn(output["out"], target) + 0.01 * hidden


def train_single_dataflow(model: nn.Module) -> tuple[list[float], dict[str, Tensor]]:
    """The reference for the dataflow scenarios: one process, the whole batch."""
    (inputs, targets), scale = data(), scales()
    opt = optimizer(model.parameters())
    losses = []
    for x, s, y in zip(inputs, scale, targets, strict=True):
        out = model(x, s)
        loss = dataflow_loss(out, y) if isinstance(out, dict) else loss_fn(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, {key: value.detach().clone() for key, value in model.state_dict().items()}


def data() -> tuple[Tensor, Tensor]:
    """``STEPS`` global batches: inputs ``(STEPS, BATCH, 6)`` and targets ``(STEPS, BATCH, 4)``."""
    generator = torch.Generator().manual_seed(1234)
    inputs = torch.randn(STEPS, BATCH, 6, generator=generator)
    targets = torch.randn(STEPS, BATCH, 4, generator=generator)
    return inputs, targets


def loss_fn(output: Tensor, target: Tensor) -> Tensor:
    return nn.functional.mse_loss(output, target)


def optimizer(parameters: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=LR, momentum=0.9)


def train_single(model: nn.Module) -> tuple[list[float], dict[str, Tensor]]:
    """The reference: one process, the whole global batch at every step."""
    inputs, targets = data()
    opt = optimizer(model.parameters())
    losses = []
    for x, y in zip(inputs, targets, strict=True):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, {key: value.detach().clone() for key, value in model.state_dict().items()}


# --- Runs on each rank; each returns (global losses, this rank's slice of the final weights) ---


def _mean_over_ranks(loss: Tensor) -> float:
    total = loss.detach().clone()
    dist.all_reduce(total)
    return total.item() / dist.get_world_size()


def run_ddp(share_weights: bool, checkpoint: bool) -> tuple[list[float], dict[str, Tensor]]:
    from torch.nn.parallel import DistributedDataParallel

    model = DistributedDataParallel(skip_circuit(share_weights, checkpoint))
    return _train_data_parallel(model, lambda: model.module.state_dict())


def run_fsdp(share_weights: bool, checkpoint: bool) -> tuple[list[float], dict[str, Tensor]]:
    from torch_circuit.distributed import shard

    model = shard(skip_circuit(share_weights, checkpoint))

    def full_state() -> dict[str, Tensor]:
        return {key: value.full_tensor() for key, value in model.state_dict().items()}

    return _train_data_parallel(model, full_state)


def run_data_parallel_dataflow(kind: str) -> tuple[list[float], dict[str, Tensor]]:
    """DDP or FSDP2 on a circuit with a named input and dict outputs."""
    from torch.nn.parallel import DistributedDataParallel

    from torch_circuit.distributed import shard

    rank, world = dist.get_rank(), dist.get_world_size()
    model: nn.Module
    if kind == "ddp":
        model = DistributedDataParallel(dataflow_circuit())
    else:
        model = shard(dataflow_circuit())
    (inputs, targets), scale = data(), scales()
    opt = optimizer(model.parameters())
    losses = []
    for x, s, y in zip(inputs, scale, targets, strict=True):
        out = model(x.chunk(world)[rank], scale=s.chunk(world)[rank])
        loss = dataflow_loss(out, y.chunk(world)[rank])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(_mean_over_ranks(loss))
    if kind == "ddp":
        return losses, model.module.state_dict()  # type: ignore[operator]
    return losses, {key: value.full_tensor() for key, value in model.state_dict().items()}


def run_pipeline_named_input() -> tuple[list[float], dict[str, Any]]:
    """A two-stage pipeline whose named input travels to the stage that reads it."""
    from torch.distributed.pipelining import ScheduleGPipe

    from torch_circuit.distributed import pipeline_stage

    stage = pipeline_stage(dataflow_circuit(outputs=False), at=["body.1"])
    schedule = ScheduleGPipe(stage, n_microbatches=MICROBATCHES, loss_fn=loss_fn)
    (inputs, targets), scale = data(), scales()
    opt = optimizer(stage.submod.parameters())
    losses = []
    for x, s, y in zip(inputs, scale, targets, strict=True):
        opt.zero_grad()
        step_losses: list[Tensor] = []
        if stage.is_first:
            schedule.step(x, s)
        else:
            schedule.step(target=y, losses=step_losses)
        opt.step()
        mean = torch.stack(step_losses).mean() if step_losses else torch.zeros(())
        dist.broadcast(mean, src=dist.get_world_size() - 1)
        losses.append(mean.item())
    submod = stage.submod
    state = {key: value.detach().clone() for key, value in submod.state_dict().items()}
    return losses, {"state": state, "inputs": submod.inputs, "outputs": submod.outputs}


def _train_data_parallel(
    model: nn.Module, state: Callable[[], dict[str, Tensor]]
) -> tuple[list[float], dict[str, Tensor]]:
    rank, world = dist.get_rank(), dist.get_world_size()
    inputs, targets = data()
    opt = optimizer(model.parameters())
    losses = []
    for x, y in zip(inputs, targets, strict=True):
        loss = loss_fn(model(x.chunk(world)[rank]), y.chunk(world)[rank])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(_mean_over_ranks(loss))
    return losses, state()


def run_pipeline(
    schedule_name: str, at: list[str] | None, checkpoint: bool = False
) -> tuple[list[float], dict[str, Any]]:
    from torch.distributed import pipelining

    from torch_circuit.distributed import pipeline_stage

    stage = pipeline_stage(skip_circuit(checkpoint=checkpoint), at=at)
    schedule_class = getattr(pipelining, schedule_name)
    schedule = schedule_class(stage, n_microbatches=MICROBATCHES, loss_fn=loss_fn)
    inputs, targets = data()
    opt = optimizer(stage.submod.parameters())
    losses = []
    for x, y in zip(inputs, targets, strict=True):
        opt.zero_grad()
        step_losses: list[Tensor] = []
        inputs = (x,) if stage.is_first else ()
        if stage.is_last:
            schedule.step(*inputs, target=y, losses=step_losses)
        else:
            schedule.step(*inputs)
        opt.step()
        # the last stage has the microbatch losses; equal microbatches average to the batch's
        mean = torch.stack(step_losses).mean() if step_losses else torch.zeros(())
        dist.broadcast(mean, src=dist.get_world_size() - 1)
        losses.append(mean.item())
    submod = stage.submod
    state = {key: value.detach().clone() for key, value in submod.state_dict().items()}
    return losses, {"state": state, "inputs": submod.inputs, "outputs": submod.outputs}


def run_bad_inputs() -> dict[str, str]:
    """Every bad input must raise on every rank before any collective could hang."""
    from torch_circuit.distributed import pipeline_stage

    messages = {}
    try:
        pipeline_stage(Circuit(nn.Linear(6, 4), nn.ReLU()))
    except ValueError as error:
        messages["too_many_stages"] = str(error)
    try:
        pipeline_stage(skip_circuit(checkpoint=True), at=["body.1.6"])
    except ValueError as error:
        messages["inside_checkpointed_repeat"] = str(error)
    try:
        pipeline_stage(skip_circuit(), at=["body", "12"])
    except ValueError as error:
        messages["stages_for_ranks"] = str(error)
    dist.barrier()  # reached only if no rank hangs in a half-built pipeline
    return messages


SCENARIOS: dict[str, Callable[[], Any]] = {
    "ddp": lambda: run_ddp(False, False),
    "ddp_shared": lambda: run_ddp(True, False),
    "ddp_checkpoint": lambda: run_ddp(False, True),
    "ddp_shared_checkpoint": lambda: run_ddp(True, True),
    "fsdp": lambda: run_fsdp(False, False),
    "fsdp_shared": lambda: run_fsdp(True, False),
    "fsdp_checkpoint": lambda: run_fsdp(False, True),
    "fsdp_shared_checkpoint": lambda: run_fsdp(True, True),
    "gpipe_repeat_boundary": lambda: run_pipeline("ScheduleGPipe", ["body.2"]),
    "1f1b_block_boundary": lambda: run_pipeline("Schedule1F1B", ["12"]),
    "1f1b_inside_repeat": lambda: run_pipeline("Schedule1F1B", ["body.1.7"]),
    "gpipe_balanced": lambda: run_pipeline("ScheduleGPipe", None),
    "1f1b_checkpointed_repeats": lambda: run_pipeline("Schedule1F1B", ["body.1"], True),
    "bad_inputs": run_bad_inputs,
    "ddp_dataflow": lambda: run_data_parallel_dataflow("ddp"),
    "fsdp_dataflow": lambda: run_data_parallel_dataflow("fsdp"),
    "gpipe_named_input": run_pipeline_named_input,
}


def hang(out_dir: str) -> None:
    """Rank 0 waits in a barrier that rank 1 never reaches (tests the time bound)."""
    if dist.get_rank() == 0:
        open(os.path.join(out_dir, "waiting"), "w").close()
        dist.barrier()
    else:
        time.sleep(300)


def worker(rank: int, world_size: int, rendezvous: str, out_dir: str, names: list[str]) -> None:
    """One rank: run each scenario in turn and save what it returns to ``out_dir``."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{rendezvous}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    try:
        for name in names:
            try:
                result = hang(out_dir) if name == "hang" else SCENARIOS[name]()
            except Exception:
                result = {"error": traceback.format_exc()}
            torch.save(result, os.path.join(out_dir, f"{name}.rank{rank}.pt"))
            dist.barrier()
    finally:
        dist.destroy_process_group()


def scenario_names(pattern: str = ".*") -> list[str]:
    return [name for name in SCENARIOS if re.fullmatch(pattern, name)]
