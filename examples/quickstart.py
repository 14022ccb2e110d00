"""The README's Quick Start: a ResNet-style Circuit, its output, size and diagram.

Run: python examples/quickstart.py [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn as nn

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock


def build_model() -> Circuit:
    """The Quick Start model: a stem, three independent residual blocks, a classifier."""
    return Circuit(
        nn.Conv2d(3, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        # Repeatable ResNet block
        StartBlock("resnet", num_repeats=3),
        SaveInput("residual"),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        GetInput("residual", op=torch.add),  # Add skip connection
        EndBlock("resnet"),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/quickstart"))
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_model()
    x = torch.randn(1, 3, 32, 32)
    output = model(x)
    print(output)
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    print(model)

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "resnet_example.pdf"
    model.visualize(save_path=str(path))
    print(f"diagram: {path}")


if __name__ == "__main__":
    main()
