"""A U-Net as a flat Circuit: ``cat`` skips carry encoder features across to the decoder.

The data are generated: noisy 32x32 images of circles and squares, each pixel labelled
background (0), circle (1) or square (2). The U-Net learns to segment them; its score is the
intersection over union (IoU) of the predicted circle and square masks with the true ones,
averaged over the two classes.

Each encoder and decoder level is a named block (``StartBlock("enc1")`` ... ``EndBlock``), so
its layers are grouped in the diagram and keyed ``enc1.0.<position>`` in the ``state_dict``.
Skips are saved between blocks: a name saved inside a block is not visible after it ends.

Before and after training, the script copies the Circuit's weights into the same U-Net written
by hand and checks that outputs and gradients agree.

Run:
    python examples/unet_segmentation.py            # about a minute on 2 CPU cores
    python examples/unet_segmentation.py --smoke    # a few steps, still checks equivalence

Writes into ``--out`` (default ``out/unet_segmentation``): ``unet.pdf``/``unet.png`` (the
diagram), ``training.png`` (loss and IoU per epoch) and ``predictions.png`` (images, true and
predicted masks).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import torch
from _common import (
    check_equivalence,
    example_parser,
    parse_example_args,
    plot_history,
    save_diagram,
    train_side_by_side,
)
from torch import Tensor, nn

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock, copy_weights

TARGET_IOU = 0.8
NUM_CLASSES = 3  # background, circle, square


# The model, as a Circuit ------------------------------------------------------------------------


def double_conv(in_channels: int, out_channels: int) -> list[nn.Module]:
    """Two 3x3 conv-bn-relu layers: one level of the U-Net."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


def build_circuit(in_channels: int = 1, num_classes: int = NUM_CLASSES, width: int = 16) -> Circuit:
    """A two-level U-Net; ``GetInput(..., op="cat")`` concatenates on channels, decoder first."""
    w = width
    return Circuit(
        StartBlock("enc1"),
        *double_conv(in_channels, w),  # (B, w, H, W)
        EndBlock("enc1"),
        SaveInput("skip1"),
        nn.MaxPool2d(2),
        StartBlock("enc2"),
        *double_conv(w, 2 * w),  # (B, 2w, H/2, W/2)
        EndBlock("enc2"),
        SaveInput("skip2"),
        nn.MaxPool2d(2),
        StartBlock("bottleneck"),
        *double_conv(2 * w, 4 * w),  # (B, 4w, H/4, W/4)
        EndBlock("bottleneck"),
        nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2),  # (B, 2w, H/2, W/2)
        GetInput("skip2", op="cat"),  # (B, 4w, H/2, W/2)
        StartBlock("dec2"),
        *double_conv(4 * w, 2 * w),
        EndBlock("dec2"),
        nn.ConvTranspose2d(2 * w, w, 2, stride=2),  # (B, w, H, W)
        GetInput("skip1", op="cat"),  # (B, 2w, H, W)
        StartBlock("dec1"),
        *double_conv(2 * w, w),
        EndBlock("dec1"),
        nn.Conv2d(w, num_classes, 1),  # (B, classes, H, W): per-pixel logits
    )


# The same model, by hand ------------------------------------------------------------------------


class PlainUNet(nn.Module):
    """``build_circuit``'s network as one usually writes it (modules in forward order)."""

    def __init__(self, in_channels: int = 1, num_classes: int = NUM_CLASSES, width: int = 16):
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(*double_conv(in_channels, w))
        self.enc2 = nn.Sequential(*double_conv(w, 2 * w))
        self.bottleneck = nn.Sequential(*double_conv(2 * w, 4 * w))
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = nn.Sequential(*double_conv(4 * w, 2 * w))
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = nn.Sequential(*double_conv(2 * w, w))
        self.head = nn.Conv2d(w, num_classes, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        skip1 = self.enc1(x)
        skip2 = self.enc2(self.pool(skip1))
        x = self.bottleneck(self.pool(skip2))
        x = self.dec2(torch.cat((self.up2(x), skip2), dim=1))
        x = self.dec1(torch.cat((self.up1(x), skip1), dim=1))
        return self.head(x)


# Data -------------------------------------------------------------------------------------------


def make_shapes(count: int, size: int = 32, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``count`` noisy images with 1-3 circles and squares, and their per-pixel class masks.

    Returns:
        images ``(count, 1, size, size)`` float and masks ``(count, size, size)`` long, with
        0 = background, 1 = circle, 2 = square. A later shape covers an earlier one.
    """
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = torch.zeros(count, size, size)
    masks = torch.zeros(count, size, size, dtype=torch.long)
    for i in range(count):
        for _ in range(int(torch.randint(1, 4, (), generator=gen))):
            radius = 3 + 5 * float(torch.rand((), generator=gen))
            cy, cx = (radius + (size - 2 * radius) * torch.rand(2, generator=gen)).tolist()
            is_square = bool(torch.rand((), generator=gen) < 0.5)
            if is_square:  # a square of the same area as the circle would have
                half = radius * math.sqrt(math.pi) / 2
                inside = ((ys - cy).abs() <= half) & ((xs - cx).abs() <= half)
            else:
                inside = (ys - cy) ** 2 + (xs - cx) ** 2 <= radius**2
            images[i][inside] = 0.5 + 0.5 * float(torch.rand((), generator=gen))
            masks[i][inside] = 2 if is_square else 1
    images += 0.15 * torch.randn(images.shape, generator=gen)
    return images.unsqueeze(1), masks


def mean_iou(model: nn.Module, images: Tensor, masks: Tensor, batch_size: int = 256) -> float:
    """Intersection over union of predicted and true masks, per shape class, then averaged."""
    model.eval()
    with torch.no_grad():
        predicted = torch.cat(
            [model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
        )
    ious = []
    for cls in range(1, NUM_CLASSES):
        pred, true = predicted == cls, masks == cls
        ious.append(float((pred & true).sum()) / max(int((pred | true).sum()), 1))
    return sum(ious) / len(ious)


def plot_predictions(model: nn.Module, images: Tensor, masks: Tensor, path: Path) -> None:
    """Save a grid: input image, true mask and predicted mask for a few test images."""
    import matplotlib.pyplot as plt

    model.eval()
    with torch.no_grad():
        predicted = model(images).argmax(1)
    fig, axes = plt.subplots(3, len(images), figsize=(1.6 * len(images), 5))
    for col in range(len(images)):
        axes[0, col].imshow(images[col, 0], cmap="gray")
        axes[1, col].imshow(masks[col], cmap="viridis", vmin=0, vmax=NUM_CLASSES - 1)
        axes[2, col].imshow(predicted[col], cmap="viridis", vmin=0, vmax=NUM_CLASSES - 1)
    for row, title in enumerate(("image", "true mask", "predicted")):
        axes[row, 0].set_ylabel(title)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("U-Net on generated shapes (yellow: square, teal: circle)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"saved {path}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = example_parser(__doc__, out="out/unet_segmentation")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    return parse_example_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    train_size, test_size, epochs, max_steps = args.train_size, 500, args.epochs, None
    if args.smoke:
        train_size, test_size, epochs, max_steps = 64, 32, 1, 2
    train_images, train_masks = make_shapes(train_size, seed=args.seed)
    test_images, test_masks = make_shapes(test_size, seed=args.seed + 1)
    print(f"shapes: {train_size} training and {test_size} test images of 32x32")

    torch.manual_seed(args.seed)
    circuit = build_circuit()
    print(circuit)
    loss_fn = nn.CrossEntropyLoss()
    check_against_plain(circuit, test_images[:16], test_masks[:16], "after building")

    def batches(epoch: int) -> list[tuple[Tensor, Tensor]]:
        order = torch.randperm(train_size, generator=torch.Generator().manual_seed(epoch))
        return [(train_images[idx], train_masks[idx]) for idx in order.split(args.batch_size)]

    history = train_side_by_side(
        {"circuit": circuit},
        batches,
        loss_fn,
        lambda model: mean_iou(model, test_images, test_masks),
        epochs=epochs,
        lr=args.lr,
        metric_name="IoU",
        max_steps=max_steps,
    )
    check_against_plain(circuit, test_images[:16], test_masks[:16], "after training")

    args.out.mkdir(parents=True, exist_ok=True)
    plot_history(history, args.out / "training.png", "U-Net Circuit on generated shapes")
    plot_predictions(circuit, test_images[:8], test_masks[:8], args.out / "predictions.png")
    save_diagram(circuit, args.out, "unet", input_shape=(1, 1, 32, 32))

    final = history.epochs[-1]["circuit"].metric
    verdict = "reached" if final >= TARGET_IOU else "below"
    print(
        f"final test IoU {final:.4f} ({verdict} the {TARGET_IOU} target) in "
        f"{time.perf_counter() - started:.0f}s; all equivalence checks passed"
    )
    return 0


def check_against_plain(circuit: Circuit, images: Tensor, masks: Tensor, label: str) -> None:
    """Copy the Circuit's weights into a hand-written U-Net; compare outputs and gradients.

    Runs on a copy of the Circuit, so that BatchNorm's running statistics stay untouched.
    """
    circuit = copy.deepcopy(circuit)
    plain = PlainUNet()
    copy_weights(circuit, plain, images[:1])
    plain.train(circuit.training)
    check_equivalence(circuit, plain, images, masks, nn.CrossEntropyLoss(), label)


if __name__ == "__main__":
    sys.exit(main())
