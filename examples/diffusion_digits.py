"""A DDPM-style denoiser on scikit-learn's 8x8 digits: a U-Net Circuit conditioned on the timestep.

A denoising diffusion model learns to predict the noise that was added to an image at a random
step `t` of a fixed noising schedule; generating then starts from pure noise and removes a
little at every step (Ho et al., 2020). The network is a small U-Net that takes the noisy image
and `t`: `model(x_t, t)`. Three features of `Circuit` carry it:

* **A named input.** `Circuit(..., inputs=("t",))` makes `t` an argument of `forward`. The
  circuit first turns it into an embedding (sinusoidal features and an MLP), once, and saves
  that as `"temb"`; every residual block is the op of a read of it,
  `GetInput("temb", op=ResBlock(...))`, which computes `block(x, temb)`.
* **Levels as push/pop blocks.** The encoder is one block repeated per level whose
  `SaveInput("skip", push=True)` pushes each level's features onto a stack; the decoder is one
  block whose `GetInput("skip", pop=True, op="cat")` takes them back, deepest first.
* **Per-level widths.** The levels differ in width, so their layers are built per repeat:
  `PerRepeat(lambda i, n: ...)` is called with the repeat's index and count.

The same U-Net is written again by hand (`PlainUNet`); the two are checked equal (weights
copied with `copy_weights`, outputs and gradients compared) before and after training, are
trained side by side on the same batches and noise, and generate from the same noise. Their
samples are scored by a classifier trained on real digits (how confidently it reads each
sample as a digit) and by the distance to the nearest training digit, beside the same scores
for real held-out digits and for noise, so the numbers have a scale.

Run:
    python examples/diffusion_digits.py            # under 2 minutes on 2 CPU cores
    python examples/diffusion_digits.py --smoke    # seconds, still checks equivalence

Writes into `--out` (default `out/diffusion_digits`): `samples.png` (generated digits, the
circuit's beside the hand-written twin's, and real ones), `diffusion.pdf`/`.png` (the
diagram) and `training.png` (training and held-out loss per epoch).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from _common import (
    call,
    check_equivalence,
    example_parser,
    parse_example_args,
    plot_history,
    save_diagram,
    train_side_by_side,
)
from torch import Tensor, nn

from torch_circuit import (
    Circuit,
    EndBlock,
    GetInput,
    PerRepeat,
    SaveInput,
    StartBlock,
    copy_weights,
)

WIDTHS = (16, 32, 64)  # channels at 8x8, at 4x4, and in the middle at 2x2
EMBED = 64  # width of the timestep embedding
STEPS = 200  # diffusion steps: noising goes from t = 0 (clean) to STEPS - 1 (pure noise)


# Layers -----------------------------------------------------------------------------------------


class SinusoidalEmbedding(nn.Module):
    """Integer timesteps (B,) -> (B, dim) sines and cosines of geometrically spaced frequencies."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        frequencies = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
        angles = t.float()[:, None] * frequencies[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=1)


class ResBlock(nn.Module):
    """A residual block conditioned on the timestep: `block(x, temb)`.

    `GroupNorm-SiLU-conv`, plus a per-channel shift computed from the embedding, then
    `GroupNorm-SiLU-conv` again, added to `x` (through a 1x1 conv where the width changes).
    """

    def __init__(self, cin: int, cout: int, embed: int = EMBED) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(8, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(embed, cout)
        self.norm2 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)  # type: ignore[no-any-return]


def switch_to(current: Tensor, saved: Tensor) -> Tensor:
    """A read's op that continues with the value read (the current one stays saved)."""
    return saved


# The model, as a Circuit ------------------------------------------------------------------------


def build_circuit(widths: tuple[int, ...] = WIDTHS, embed: int = EMBED) -> Circuit:
    """Noisy images (B, 1, 8, 8) and timesteps `t` (B,) -> predicted noise (B, 1, 8, 8)."""
    levels = len(widths) - 1

    def up_width(i: int, n: int) -> int:  # the decoder's repeat i works at level n - 1 - i
        return widths[n - 1 - i]

    return Circuit(
        # The timestep embedding, once: the main line carries t for four layers.
        SaveInput("x"),
        GetInput("t", op=switch_to),  # (B,) integer steps
        SinusoidalEmbedding(embed),
        nn.Linear(embed, embed),
        nn.SiLU(),
        nn.Linear(embed, embed),
        SaveInput("temb"),  # (B, embed): what every residual block reads
        GetInput("x", op=switch_to),  # back to the image
        nn.Conv2d(1, widths[0], 3, padding=1),
        # The encoder: one repeat per level, each pushing its features for the decoder.
        StartBlock("down", num_repeats=levels),
        GetInput("temb", op=PerRepeat(lambda i, n: ResBlock(widths[i], widths[i], embed))),
        SaveInput("skip", push=True),
        PerRepeat(lambda i, n: nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1)),
        EndBlock("down"),
        GetInput("temb", op=ResBlock(widths[-1], widths[-1], embed)),  # the middle
        # The decoder: one repeat per level, deepest first, each popping its level's skip.
        StartBlock("up", num_repeats=levels),
        PerRepeat(lambda i, n: nn.ConvTranspose2d(widths[n - i], up_width(i, n), 2, stride=2)),
        GetInput("skip", pop=True, op="cat"),  # (B, 2 * width, H, W)
        GetInput(
            "temb", op=PerRepeat(lambda i, n: ResBlock(2 * up_width(i, n), up_width(i, n), embed))
        ),
        EndBlock("up"),
        nn.GroupNorm(8, widths[0]),
        nn.SiLU(),
        nn.Conv2d(widths[0], 1, 3, padding=1),
        inputs=("t",),
    )


# The same model, by hand ------------------------------------------------------------------------


class PlainUNet(nn.Module):
    """`build_circuit`'s network as one usually writes it (modules in forward order)."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS, embed: int = EMBED) -> None:
        super().__init__()
        levels = len(widths) - 1
        self.time_mlp = nn.Sequential(
            SinusoidalEmbedding(embed), nn.Linear(embed, embed), nn.SiLU(), nn.Linear(embed, embed)
        )
        self.stem = nn.Conv2d(1, widths[0], 3, padding=1)
        self.down = nn.ModuleList(
            nn.ModuleList(
                [
                    ResBlock(widths[i], widths[i], embed),
                    nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1),
                ]
            )
            for i in range(levels)
        )
        self.middle = ResBlock(widths[-1], widths[-1], embed)
        self.up = nn.ModuleList(
            nn.ModuleList(
                [
                    nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2),
                    ResBlock(2 * widths[level], widths[level], embed),
                ]
            )
            for level in reversed(range(levels))
        )
        self.head = nn.Sequential(
            nn.GroupNorm(8, widths[0]), nn.SiLU(), nn.Conv2d(widths[0], 1, 3, padding=1)
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        temb = self.time_mlp(t)
        x = self.stem(x)
        skips = []
        for block, downsample in self.down:  # type: ignore[misc]
            x = block(x, temb)
            skips.append(x)
            x = downsample(x)
        x = self.middle(x, temb)
        for upsample, block in self.up:  # type: ignore[misc]
            x = block(torch.cat((upsample(x), skips.pop()), dim=1), temb)
        return self.head(x)  # type: ignore[no-any-return]


# Diffusion --------------------------------------------------------------------------------------


class Schedule:
    """The DDPM noising schedule: `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise`."""

    def __init__(self, steps: int = STEPS) -> None:
        self.steps = steps
        # The cosine schedule of Nichol & Dhariwal (2021): it keeps small images legible for
        # longer than a linear one.
        s = 0.008
        f = torch.cos((torch.arange(steps + 1) / steps + s) / (1 + s) * math.pi / 2) ** 2
        abar = f / f[0]
        self.betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
        self.alphas = 1 - self.betas
        self.abar = torch.cumprod(self.alphas, dim=0)

    def noisy(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        abar = self.abar[t][:, None, None, None]
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    @torch.no_grad()
    def sample(self, model: nn.Module, count: int, seed: int) -> Tensor:
        """Ancestral sampling from pure noise (DDPM, with the predicted clean image clipped to
        [-1, 1] at every step). The noise is drawn from `seed`: two models given the same seed
        see the same noise."""
        gen = torch.Generator().manual_seed(seed)
        model.eval()
        x = torch.randn(count, 1, 8, 8, generator=gen)
        for step in reversed(range(self.steps)):
            t = torch.full((count,), step, dtype=torch.long)
            abar, beta = self.abar[step], self.betas[step]
            abar_prev = self.abar[step - 1] if step > 0 else torch.tensor(1.0)
            x0 = ((x - (1 - abar).sqrt() * model(x, t)) / abar.sqrt()).clamp(-1, 1)
            # The mean and variance of q(x_{t-1} | x_t, x0).
            x = (beta * abar_prev.sqrt() * x0 + (1 - abar_prev) * self.alphas[step].sqrt() * x) / (
                1 - abar
            )
            if step > 0:
                variance = beta * (1 - abar_prev) / (1 - abar)
                x = x + variance.sqrt() * torch.randn(x.shape, generator=gen)
        return x.clamp(-1, 1)


# Data and scores --------------------------------------------------------------------------------


def load_digits_split(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's 1,797 digits scaled to [-1, 1]: (train images, labels, test, labels)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 8 - 1
    labels = torch.tensor(digits.target)
    split = train_test_split(images, labels, test_size=0.2, random_state=seed, stratify=labels)
    return split[0], split[2], split[1], split[3]


class Judge:
    """Scores a set of 8x8 images in [-1, 1] against the real training digits.

    Args:
        train_images: the digits the denoiser was trained on, (N, 1, 8, 8) in [-1, 1].
        train_labels: their classes, (N,).
    """

    def __init__(self, train_images: Tensor, train_labels: Tensor) -> None:
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits  # installed with scikit-learn

        self.train = _pixels(train_images)
        # Strongly regularised (C=0.01): as accurate on held-out digits as the default C=1, and
        # much less sure of itself on noise, so that its confidence tells the two apart.
        self.classifier = LogisticRegression(C=0.01, max_iter=3000)
        # One BLAS thread: a fit this small takes a second alone, and far longer (30 s and
        # more) when BLAS threads compete for a busy machine's cores.
        with threadpool_limits(limits=1):
            self.classifier.fit(self.train.numpy(), train_labels.numpy())

    def accuracy(self, images: Tensor, labels: Tensor) -> float:
        """The classifier's accuracy on labelled digits."""
        predicted = self.classifier.predict(_pixels(images).numpy())
        return float((torch.tensor(predicted) == labels).float().mean())

    def scores(self, images: Tensor) -> Scores:
        """How digit-like `images` are: see `Scores`."""
        pixels = _pixels(images)
        probabilities = torch.tensor(self.classifier.predict_proba(pixels.numpy()))
        nearest = torch.cdist(pixels, self.train).min(dim=1).values
        return Scores(
            confidence=float(probabilities.max(dim=1).values.mean()),
            digits=len(probabilities.argmax(dim=1).unique()),
            distance=float(nearest.mean()),
        )


@dataclass
class Scores:
    """How digit-like a set of images is.

    Attributes:
        confidence: the mean probability the classifier gives its top class (real digits
            score high, noise low).
        digits: how many of the ten digits occur among the classifier's readings (a model
            that generates only a few kinds of digit scores low).
        distance: the mean Euclidean distance to the nearest training digit, in the data's
            pixel units (0 to 16).
    """

    confidence: float
    digits: int
    distance: float


def _pixels(images: Tensor) -> Tensor:
    """(N, 1, 8, 8) in [-1, 1] -> (N, 64) in the data set's own units, 0 to 16."""
    return ((images.reshape(len(images), -1) + 1) * 8).double()


def noise_like(images: Tensor, count: int, seed: int) -> Tensor:
    """`count` images of Gaussian noise with `images`' own per-pixel mean and spread, clamped
    to [-1, 1]: blurry blobs where digits have ink, but no digit."""
    gen = torch.Generator().manual_seed(seed)
    mean, std = images.mean(dim=0), images.std(dim=0)
    return (mean + std * torch.randn((count, *mean.shape), generator=gen)).clamp(-1, 1)


def plot_samples(rows: dict[str, Tensor], path: Path, per_row: int = 16) -> None:
    """One row band per set of images, `per_row` images wide."""
    import matplotlib.pyplot as plt

    bands = {name: images[: 2 * per_row] for name, images in rows.items()}
    lines = sum(math.ceil(len(images) / per_row) for images in bands.values())
    fig, axes = plt.subplots(lines, per_row, figsize=(per_row * 0.5, lines * 0.55 + 0.3))
    line = 0
    for name, images in bands.items():
        for index in range(math.ceil(len(images) / per_row) * per_row):
            ax = axes[line + index // per_row, index % per_row]
            if index < len(images):
                ax.imshow(images[index, 0], cmap="gray_r", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
        axes[line, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        line += math.ceil(len(images) / per_row)
    fig.suptitle("Generated digits (8x8): the circuit's, the hand-written twin's, real ones")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"saved {path}")


# Training ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = example_parser(__doc__, out="out/diffusion_digits")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--samples", type=int, default=200, help="digits generated per model")
    parser.add_argument("--diffusion-steps", type=int, default=STEPS)
    return parse_example_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    epochs, steps, samples, diffusion_steps = (
        (1, 3, 16, 20)
        if args.smoke
        else (args.epochs, args.steps_per_epoch, args.samples, args.diffusion_steps)
    )
    schedule = Schedule(diffusion_steps)
    train_images, train_labels, test_images, test_labels = load_digits_split(args.seed)
    print(
        f"digits: {len(train_images)} training and {len(test_images)} held-out 8x8 images; "
        f"{epochs} epochs of {steps} batches of {args.batch_size}, {diffusion_steps} noise levels"
    )

    torch.manual_seed(args.seed)
    circuit = build_circuit()
    print(circuit)
    plain = PlainUNet()
    # Both models are called as model(x_t, t); the example input reaches every layer.
    example = (test_images[:2], torch.tensor([0, diffusion_steps - 1]))
    print(f"[copy] circuit -> hand-written twin: {copy_weights(circuit, plain, example)}")
    models = {"circuit": circuit, "plain": plain}  # called as model(x_t, t)
    check = noised(schedule, test_images[:64], torch.Generator().manual_seed(1))
    check_equivalence(*models.values(), *check, F.mse_loss, "after building")

    def batches(epoch: int) -> list[tuple[tuple[Tensor, Tensor], Tensor]]:
        """Random training digits at random noise levels: ((x_t, t), noise) per batch."""
        gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        index = torch.randint(0, len(train_images), (steps, args.batch_size), generator=gen)
        return [noised(schedule, train_images[i], gen) for i in index]

    held_out = noised(schedule, test_images, torch.Generator().manual_seed(2))

    def held_out_loss(model: nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            return float(F.mse_loss(call(model, held_out[0]), held_out[1]))

    history = train_side_by_side(
        models,
        batches,
        F.mse_loss,
        held_out_loss,
        epochs=epochs,
        lr=args.lr,
        metric_name="held-out loss",
    )
    check_equivalence(*models.values(), *check, F.mse_loss, "after training")

    sampling = time.perf_counter()
    generated = {
        "circuit": schedule.sample(circuit, samples, seed=args.seed + 7),
        "hand-written twin": schedule.sample(plain, samples, seed=args.seed + 7),
    }
    sampling = time.perf_counter() - sampling
    same = torch.equal(generated["circuit"], generated["hand-written twin"])
    print(
        f"generated {samples} digits per model from the same noise in {sampling:.1f}s; "
        f"the two sets are {'identical' if same else 'different'}"
    )
    rows = {
        **generated,
        "real held-out digits": test_images[:samples],
        "noise": noise_like(train_images, samples, seed=args.seed + 8),
    }
    judge = Judge(train_images, train_labels)
    print(
        "scores (a logistic-regression classifier fitted on the training digits, "
        f"{judge.accuracy(test_images, test_labels):.1%} accurate on the held-out ones):"
    )
    print(f"  {'images':22} {'confidence':>10} {'digits':>7} {'distance to nearest':>20}")
    for name, images in rows.items():
        score = judge.scores(images)
        print(f"  {name:22} {score.confidence:10.3f} {score.digits:4d}/10 {score.distance:20.2f}")

    args.out.mkdir(parents=True, exist_ok=True)
    plot_samples(rows, args.out / "samples.png")
    plot_history(history, args.out / "training.png", "Diffusion U-Net on digits: circuit and twin")
    save_diagram(circuit, args.out, "diffusion")
    print(f"done in {time.perf_counter() - started:.0f}s; all equivalence checks passed")
    return 0


def noised(
    schedule: Schedule, images: Tensor, gen: torch.Generator
) -> tuple[tuple[Tensor, Tensor], Tensor]:
    """`images` noised at random levels: `((x_t, t), noise)`, drawn from `gen`."""
    t = torch.randint(0, schedule.steps, (len(images),), generator=gen)
    noise = torch.randn(images.shape, generator=gen)
    return (schedule.noisy(images, t, noise), t), noise


if __name__ == "__main__":
    sys.exit(main())
