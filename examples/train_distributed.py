"""Train a Circuit on several processes (DDP, FSDP2 or a 2-stage pipeline) and check it
against the same training in one process.

Run it as a plain script and it starts its own processes (2 by default); or start it with
torchrun. It uses NCCL when every process gets a GPU of its own, gloo on the CPU otherwise::

    python examples/train_distributed.py --mode all        # starts 2 processes itself
    torchrun --nproc-per-node 2 examples/train_distributed.py --mode ddp
    torchrun --nproc-per-node 2 examples/train_distributed.py --mode fsdp --checkpoint
    torchrun --nproc-per-node 2 examples/train_distributed.py --mode pipeline

After each mode, every process trains the same model on the same global batches in one
process and compares: the losses of every step and the final weights must agree to float
rounding, else the script fails. The data is random (no download): the point is the wiring,
which is the same for real data.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.distributed.pipelining import Schedule1F1B
from torch.nn.parallel import DistributedDataParallel

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock
from torch_circuit.distributed import pipeline_stage, shard

MODES = ("ddp", "fsdp", "pipeline")
MICROBATCHES = 4
# Float32 rounding: the processes sum gradients in another order than one process does.
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}

Batches = list[tuple[Tensor, Tensor]]
Result = tuple[list[float], dict[str, Tensor]]  # the loss of every step, the final weights


def resnet(checkpoint: bool) -> Circuit:
    """A small ResNet for 3x16x16 images: stem, 4 residual repeats, head.

    GroupNorm rather than BatchNorm: BatchNorm's statistics are those of each process's
    slice of the batch, so it cannot match one process that sees the whole batch (on GPUs,
    `nn.SyncBatchNorm.convert_sync_batchnorm(model)` gives it the global statistics).
    """
    torch.manual_seed(0)  # every rank builds the same weights
    return Circuit(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.GroupNorm(8, 32),
        nn.ReLU(),
        StartBlock("resnet", num_repeats=4, checkpoint=checkpoint),
        SaveInput("residual"),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.GroupNorm(8, 32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.GroupNorm(8, 32),
        GetInput("residual"),
        nn.ReLU(),
        EndBlock("resnet"),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def batches(steps: int, batch_size: int, device: torch.device) -> Batches:
    """The same global batches on every rank (seeded), as a DistributedSampler would give."""
    generator = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(batch_size, 3, 16, 16, generator=generator).to(device),
            torch.randint(0, 10, (batch_size,), generator=generator).to(device),
        )
        for _ in range(steps)
    ]


def optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def train_one_process(args: argparse.Namespace) -> Result:
    """The reference: one process, the whole global batch at every step."""
    model = resnet(args.checkpoint).to(args.device)
    opt = optimizer(model)
    losses = []
    for x, y in batches(args.steps, args.batch_size, args.device):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, model.state_dict()


def train_data_parallel(
    model: nn.Module, mode: str, args: argparse.Namespace, state: Callable[[], dict[str, Tensor]]
) -> Result:
    rank, world = dist.get_rank(), dist.get_world_size()
    opt = optimizer(model)
    losses = []
    for step, (x, y) in enumerate(batches(args.steps, args.batch_size, args.device), start=1):
        # each rank trains on its slice of the global batch; gradients are averaged
        loss = nn.functional.cross_entropy(model(x.chunk(world)[rank]), y.chunk(world)[rank])
        opt.zero_grad()
        loss.backward()
        opt.step()
        total = loss.detach()
        dist.all_reduce(total)
        losses.append(total.item() / world)
        if rank == 0:
            print(f"[{mode}] step {step} loss {losses[-1]:.4f}", flush=True)
    return losses, state()


def train_ddp(args: argparse.Namespace) -> Result:
    model = resnet(args.checkpoint).to(args.device)
    ids = [args.device.index] if args.device.type == "cuda" else None
    ddp = DistributedDataParallel(model, device_ids=ids)
    return train_data_parallel(ddp, "ddp", args, model.state_dict)


def train_fsdp(args: argparse.Namespace) -> Result:
    model = shard(resnet(args.checkpoint).to(args.device))

    def full_state() -> dict[str, Tensor]:  # each rank holds a shard; gather every tensor
        return {key: value.full_tensor() for key, value in model.state_dict().items()}

    return train_data_parallel(model, "fsdp", args, full_state)


def train_pipeline(args: argparse.Namespace) -> Result:
    # every rank builds the whole circuit and keeps only its stage
    model = resnet(args.checkpoint).to(args.device)
    stage = pipeline_stage(model, device=args.device)  # cut where parameters balance
    del model
    loss_fn = nn.functional.cross_entropy
    schedule = Schedule1F1B(stage, n_microbatches=MICROBATCHES, loss_fn=loss_fn)
    opt = optimizer(stage.submod)
    losses = []
    for step, (x, y) in enumerate(batches(args.steps, args.batch_size, args.device), start=1):
        opt.zero_grad()
        step_losses: list[Tensor] = []
        # the first stage feeds the inputs, the last one computes the loss
        inputs = (x,) if stage.is_first else ()
        if stage.is_last:
            schedule.step(*inputs, target=y, losses=step_losses)
        else:
            schedule.step(*inputs)
        opt.step()
        # equal microbatches: the mean of their losses is the loss of the whole batch
        loss = torch.stack(step_losses).mean() if step_losses else torch.zeros((), device=x.device)
        dist.broadcast(loss, src=dist.get_world_size() - 1)
        losses.append(loss.item())
        if dist.get_rank() == 0:
            print(f"[pipeline] step {step} loss {losses[-1]:.4f}", flush=True)
    # this rank's stage holds its part of the weights, under the model's own keys
    return losses, stage.submod.state_dict()


def check_parity(mode: str, result: Result, reference: Result) -> None:
    """Compare with one process on every rank; rank 0 prints, any rank's mismatch fails."""
    (losses, state), (ref_losses, ref_state) = result, reference
    loss_gap = max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True))
    weight_gap = max((state[key] - ref_state[key]).abs().max().item() for key in state)
    close = torch.allclose(torch.tensor(losses), torch.tensor(ref_losses), **TOLERANCE) and all(
        torch.allclose(state[key], ref_state[key], **TOLERANCE) for key in state
    )
    device = next(iter(state.values())).device
    gaps = torch.tensor([loss_gap, weight_gap, 0.0 if close else 1.0], device=device)
    dist.all_reduce(gaps, op=dist.ReduceOp.MAX)  # a pipeline stage compares only its weights
    loss_gap, weight_gap, failed = gaps.tolist()
    if failed:
        if dist.get_rank() == 0:
            print(
                f"[{mode}] differs from one process: largest loss difference {loss_gap:.2e}, "
                f"largest weight difference {weight_gap:.2e} (tolerance {TOLERANCE})",
                file=sys.stderr,
                flush=True,
            )
        raise SystemExit(1)
    if dist.get_rank() == 0:
        print(
            f"[{mode}] matches one process: largest loss difference {loss_gap:.1e}, largest "
            f"weight difference {weight_gap:.1e} over {len(losses)} steps",
            flush=True,
        )


def run(args: argparse.Namespace) -> None:
    """One process's part, under torchrun or started by `spawn`: the environment says which."""
    world = int(os.environ["WORLD_SIZE"])
    if torch.cuda.is_available() and torch.cuda.device_count() >= world:
        args.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(args.device)
        dist.init_process_group("nccl")
    else:
        args.device = torch.device("cpu")
        dist.init_process_group("gloo")
    trainers = {"ddp": train_ddp, "fsdp": train_fsdp, "pipeline": train_pipeline}
    try:
        reference = train_one_process(args)
        for mode in MODES if args.mode == "all" else [args.mode]:
            check_parity(mode, trainers[mode](args), reference)
    finally:
        dist.destroy_process_group()


def spawn(args: argparse.Namespace) -> None:
    """Start `args.nproc` processes on this machine, as torchrun would, and wait for them."""
    with socket.socket() as free:  # a free port for the rendezvous
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    print(f"starting {args.nproc} processes (or start them with torchrun)", flush=True)
    try:
        mp.spawn(_spawned, args=(args, port), nprocs=args.nproc)
    except mp.ProcessExitedException as error:  # its message is printed above
        raise SystemExit(
            f"process {error.error_index} exited with code {error.exit_code}"
        ) from None


def _spawned(rank: int, args: argparse.Namespace, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(args.nproc),
    )
    torch.set_num_threads(1)  # as torchrun does: the processes share the cores
    run(args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=[*MODES, "all"], default="ddp")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--checkpoint", action="store_true", help="recompute each repeat")
    parser.add_argument(
        "--nproc", type=int, default=2, help="processes to start when run without torchrun"
    )
    args = parser.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", args.nproc))
    if args.batch_size % world or args.batch_size % MICROBATCHES:
        # equal slices and microbatches, so that their mean losses average to the batch's
        parser.error(
            f"--batch-size must divide into {world} processes and {MICROBATCHES} microbatches"
        )
    if "WORLD_SIZE" in os.environ:  # started by torchrun (or another launcher)
        run(args)
    else:
        spawn(args)


if __name__ == "__main__":
    sys.exit(main())
