"""Train a Circuit on several processes: DDP, FSDP2 (``shard``) or a 2-stage pipeline.

Run it with torchrun; it uses NCCL on GPUs and gloo on CPUs::

    torchrun --nproc-per-node 2 examples/train_distributed.py --mode ddp
    torchrun --nproc-per-node 2 examples/train_distributed.py --mode fsdp --checkpoint
    torchrun --nproc-per-node 2 examples/train_distributed.py --mode pipeline
    torchrun --nproc-per-node 2 examples/train_distributed.py --mode all --steps 5

The data is random (no download): the point is the wiring, which is the same for real data.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import Schedule1F1B
from torch.nn.parallel import DistributedDataParallel

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock
from torch_circuit.distributed import pipeline_stage, shard


def resnet(checkpoint: bool) -> Circuit:
    """A small ResNet for 3x16x16 images: stem, 4 residual repeats, head."""
    torch.manual_seed(0)  # every rank builds the same weights
    return Circuit(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        StartBlock("resnet", num_repeats=4, checkpoint=checkpoint),
        SaveInput("residual"),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        GetInput("residual"),
        nn.ReLU(),
        EndBlock("resnet"),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def batches(steps: int, batch_size: int, device: torch.device) -> list[tuple[torch.Tensor, ...]]:
    """The same global batches on every rank (seeded), as a DistributedSampler would give."""
    generator = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(batch_size, 3, 16, 16, generator=generator).to(device),
            torch.randint(0, 10, (batch_size,), generator=generator).to(device),
        )
        for _ in range(steps)
    ]


def train_data_parallel(model: nn.Module, mode: str, args: argparse.Namespace) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step, (x, y) in enumerate(batches(args.steps, args.batch_size, args.device), start=1):
        # each rank trains on its slice of the global batch; gradients are averaged
        loss = nn.functional.cross_entropy(model(x.chunk(world)[rank]), y.chunk(world)[rank])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total = loss.detach()
        dist.all_reduce(total)
        if rank == 0:
            print(f"[{mode}] step {step} loss {total.item() / world:.4f}", flush=True)


def train_pipeline(args: argparse.Namespace) -> None:
    # every rank builds the whole circuit and keeps only its stage
    model = resnet(args.checkpoint).to(args.device)
    stage = pipeline_stage(model, device=args.device)  # cut where parameters balance
    del model
    schedule = Schedule1F1B(stage, n_microbatches=4, loss_fn=nn.functional.cross_entropy)
    optimizer = torch.optim.SGD(stage.submod.parameters(), lr=0.05, momentum=0.9)
    for step, (x, y) in enumerate(batches(args.steps, args.batch_size, args.device), start=1):
        optimizer.zero_grad()
        losses: list[torch.Tensor] = []
        # the first stage feeds the inputs, the last one computes the loss
        inputs = (x,) if stage.is_first else ()
        if stage.is_last:
            schedule.step(*inputs, target=y, losses=losses)
            mean = torch.stack(losses).mean().item()
            print(f"[pipeline] step {step} loss {mean:.4f} (stage {stage.stage_index})", flush=True)
        else:
            schedule.step(*inputs)
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["ddp", "fsdp", "pipeline", "all"], default="ddp")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--checkpoint", action="store_true", help="recompute each repeat")
    args = parser.parse_args()

    if torch.cuda.is_available():
        args.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(args.device)
        dist.init_process_group("nccl")
    else:
        args.device = torch.device("cpu")
        dist.init_process_group("gloo")
    try:
        modes = ["ddp", "fsdp", "pipeline"] if args.mode == "all" else [args.mode]
        for mode in modes:
            if mode == "ddp":
                model = resnet(args.checkpoint).to(args.device)
                ids = [args.device.index] if args.device.type == "cuda" else None
                train_data_parallel(DistributedDataParallel(model, device_ids=ids), mode, args)
            elif mode == "fsdp":
                model = shard(resnet(args.checkpoint).to(args.device))
                train_data_parallel(model, mode, args)
            else:
                train_pipeline(args)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
