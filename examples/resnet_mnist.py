"""A ResNet written as a Circuit, proved equal to the same network written by hand.

By default it trains on the handwritten digits that ship with scikit-learn (1,797 real 8x8
scans; no download), so it runs offline. ``--dataset mnist`` uses torchvision's MNIST instead
(28x28; ``--download`` fetches it where a network allows).

The script builds the ResNet twice, as a ``Circuit`` and as a plain ``nn.Module``, copies the
Circuit's weights into the plain model (``torch_circuit.copy_weights``: tensors paired in the
order the models first use them on an example batch), prints the largest difference
in their outputs and gradients, then trains both side by side (same seed, same batches, same
optimizer) and checks after every epoch that their losses, accuracies and weights still agree.

Run:
    python examples/resnet_mnist.py                  # digits, under a minute on 2 CPU cores
    python examples/resnet_mnist.py --smoke          # a few steps, still checks equivalence
    python examples/resnet_mnist.py --dataset mnist --data-dir data --download

Writes into ``--out`` (default ``out/resnet_mnist``): ``resnet.pdf``/``resnet.png`` (the
diagram) and ``training.png`` (loss and accuracy per epoch for both models).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _common import (
    check_equivalence,
    example_parser,
    fail,
    format_metric,
    parse_example_args,
    plot_history,
    save_diagram,
    train_side_by_side,
)
from torch import Tensor, nn

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock, copy_weights

TARGET_ACCURACY = 0.95


# The model, as a Circuit ------------------------------------------------------------------------


def build_circuit(in_channels: int = 1, num_classes: int = 10, width: int = 32) -> Circuit:
    """A small ResNet: a stem, two residual stages with a projection shortcut between them."""
    return Circuit(
        # stem: (B, 1, H, W) -> (B, width, H, W)
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        # stage 1: two independent residual blocks
        StartBlock("stage1", num_repeats=2),
        SaveInput("residual"),
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        GetInput("residual"),  # x + residual
        nn.ReLU(),
        EndBlock("stage1"),
        # downsampling block: (B, width, H, W) -> (B, 2 width, H/2, W/2); the shortcut needs a
        # strided 1x1 projection to match, given as the GetInput's transform
        SaveInput("residual"),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        GetInput("residual", transform=Projection(width, 2 * width)),
        nn.ReLU(),
        # stage 2: one more residual block at the new width
        StartBlock("stage2", num_repeats=1),
        SaveInput("residual"),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        GetInput("residual"),
        nn.ReLU(),
        EndBlock("stage2"),
        # head: (B, 2 width, H/2, W/2) -> (B, num_classes)
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


class Projection(nn.Sequential):
    """The strided 1x1 conv-bn shortcut of a downsampling residual block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False),
            nn.BatchNorm2d(out_channels),
        )


# The same model, by hand ------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn, plus the input (projected when the shape changes), then relu."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = Projection(in_channels, out_channels) if stride != 1 else None

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(out + residual)


class PlainResNet(nn.Module):
    """``build_circuit``'s network as one usually writes it in PyTorch."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.stage1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        self.down = BasicBlock(width, 2 * width, stride=2)
        self.stage2 = nn.Sequential(BasicBlock(2 * width, 2 * width))
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# Data -------------------------------------------------------------------------------------------


class DatasetUnavailableError(Exception):
    """The requested data set cannot be loaded; the message says how to get it."""


Split = tuple[Tensor, Tensor]


def load_digits() -> tuple[Split, Split]:
    """scikit-learn's 8x8 digits as normalised (N, 1, 8, 8) images, split 80/20, stratified."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=0.2, stratify=labels.numpy(), random_state=0
    )
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])


def load_mnist(data_dir: Path, download: bool) -> tuple[Split, Split]:
    """torchvision's MNIST as normalised (N, 1, 28, 28) images, or ``DatasetUnavailableError``."""
    try:
        from torchvision.datasets import MNIST
    except ImportError as error:
        raise DatasetUnavailableError(
            f"--dataset mnist needs torchvision, which is not installed ({error}). "
            "Install it with `pip install torchvision`, or leave out --dataset to use the "
            "scikit-learn digits that need no download."
        ) from None
    splits = []
    for train in (True, False):
        try:
            dataset = MNIST(str(data_dir), train=train, download=download)
        except (RuntimeError, OSError) as error:  # files missing, or the download failed
            if download:
                raise DatasetUnavailableError(
                    f"downloading MNIST into {data_dir} failed ({error}). Copy the MNIST files "
                    f"into {data_dir}/MNIST/raw, or leave out --dataset to use the scikit-learn "
                    "digits."
                ) from None
            raise DatasetUnavailableError(
                f"MNIST files are not in {data_dir}/MNIST ({error}). Add --download to fetch "
                "them (needs a network), or leave out --dataset to use the scikit-learn digits."
            ) from None
        images = dataset.data.float().unsqueeze(1) / 255.0
        splits.append(((images - 0.1307) / 0.3081, dataset.targets.long()))
    return splits[0], splits[1]


# Training ---------------------------------------------------------------------------------------


def accuracy(model: nn.Module, split: Split, batch_size: int = 1000) -> float:
    """The fraction of ``split`` that ``model`` classifies correctly, in eval mode."""
    images, labels = split
    model.eval()
    with torch.no_grad():
        correct = sum(
            int((model(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum())
            for i in range(0, len(labels), batch_size)
        )
    return correct / len(labels)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = example_parser(__doc__, out="out/resnet_mnist")
    parser.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="MNIST's folder")
    parser.add_argument("--download", action="store_true", help="fetch MNIST if missing")
    parser.add_argument("--epochs", type=int, help="default: 10 on digits, 2 on MNIST")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    return parse_example_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        if args.dataset == "mnist":
            train, test = load_mnist(args.data_dir, args.download)
        else:
            train, test = load_digits()
    except DatasetUnavailableError as error:
        return fail(str(error))
    epochs = args.epochs or (10 if args.dataset == "digits" else 2)
    max_steps = None
    if args.smoke:
        epochs, max_steps, test = 2, 3, (test[0][:200], test[1][:200])
    print(
        f"{args.dataset}: {len(train[1])} training and {len(test[1])} test images "
        f"of shape {tuple(train[0].shape[1:])}"
    )

    torch.manual_seed(args.seed)
    circuit = build_circuit()
    plain = PlainResNet()
    copy_weights(circuit, plain, train[0][:1])  # pairs tensors by first use on the example
    print(circuit)
    print(f"parameters: {sum(p.numel() for p in circuit.parameters()):,} in each model")

    # Equal outputs and gradients on one batch, straight after copying the weights.
    loss_fn = nn.CrossEntropyLoss()
    check_equivalence(
        circuit, plain, train[0][:64], train[1][:64], loss_fn, label="after copying the weights"
    )

    def batches(epoch: int) -> list[tuple[Tensor, Tensor]]:
        # One shuffled order per epoch, drawn from its own generator and shared by both models.
        order = torch.randperm(len(train[1]), generator=torch.Generator().manual_seed(epoch))
        chunks = order.split(args.batch_size)
        return [(train[0][idx], train[1][idx]) for idx in chunks]

    history = train_side_by_side(
        {"circuit": circuit, "plain": plain},
        batches,
        loss_fn,
        lambda model: accuracy(model, test),
        epochs=epochs,
        lr=args.lr,
        metric_name="accuracy",
        max_steps=max_steps,
    )
    check_equivalence(circuit, plain, test[0][:64], test[1][:64], loss_fn, label="after training")

    args.out.mkdir(parents=True, exist_ok=True)
    plot_history(history, args.out / "training.png", f"ResNet on {args.dataset}: Circuit vs plain")
    save_diagram(circuit, args.out, "resnet", input_shape=(1, *train[0].shape[1:]))

    final = history.epochs[-1]["circuit"].metric
    verdict = "reached" if final >= TARGET_ACCURACY else "below"
    print(
        f"final test accuracy {format_metric('accuracy', final).strip()} ({verdict} the "
        f"{TARGET_ACCURACY:.0%} target) in {time.perf_counter() - started:.0f}s; "
        "all equivalence checks passed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
