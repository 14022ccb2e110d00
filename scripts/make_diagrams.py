"""Regenerate the diagrams committed under ``docs/images``.

Run from the repository root::

    python scripts/make_diagrams.py

The models here are also the ones the layout and rendering tests check, so the committed
images show exactly what the tests hold to (no overlapping boxes, separate skip lanes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor, nn

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"

sys.path.insert(0, str(ROOT / "examples"))
from quickstart import build_model as build_quickstart  # noqa: E402


def quickstart() -> Circuit:
    """The seed README's Quick Start, verbatim, as ``examples/quickstart.py`` builds it."""
    return build_quickstart()


def _down(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.MaxPool2d(2), nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]


def _up(c_in: int, c_out: int, skip: str) -> list[object]:
    return [
        nn.ConvTranspose2d(c_in, c_out, 2, stride=2),
        GetInput(skip, op="cat"),  # (B, 2 * c_out, H, W)
        nn.Conv2d(2 * c_out, c_out, 3, padding=1),
        nn.ReLU(),
    ]


def unet() -> Circuit:
    """A U-Net whose four ``cat`` skips nest: enc1 spans enc2, which spans enc3, ..."""
    return Circuit(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        SaveInput("enc1"),
        *_down(16, 32),
        SaveInput("enc2"),
        *_down(32, 64),
        SaveInput("enc3"),
        *_down(64, 128),
        SaveInput("enc4"),
        *_down(128, 256),
        *_up(256, 128, "enc4"),
        *_up(128, 64, "enc3"),
        *_up(64, 32, "enc2"),
        *_up(32, 16, "enc1"),
        nn.Conv2d(16, 2, 1),
    )


class SelfAttention(nn.Module):
    """Multi-head self-attention of a ``(B, T, D)`` sequence, returning ``(B, T, D)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.attention(x, x, x, need_weights=False)
        return out


def transformer(layers: int = 12, dim: int = 64, vocab: int = 1000) -> Circuit:
    """A pre-norm transformer: both residuals of a layer reuse the skip name ``x``."""
    return Circuit(
        nn.Embedding(vocab, dim),  # (B, T) -> (B, T, D)
        StartBlock("layer", num_repeats=layers),
        SaveInput("x"),
        nn.LayerNorm(dim),
        SelfAttention(dim, 4),
        GetInput("x"),
        SaveInput("x"),
        nn.LayerNorm(dim),
        nn.Linear(dim, 4 * dim),
        nn.GELU(),
        nn.Linear(4 * dim, dim),
        GetInput("x"),
        EndBlock("layer"),
        nn.LayerNorm(dim),
        nn.Linear(dim, vocab),
    )


def deep_mlp(repeats: int = 66, dim: int = 64) -> Circuit:
    """200 layers: a stem, 66 residual blocks of three layers, and a head."""
    return Circuit(
        nn.Linear(32, dim),
        StartBlock("block", num_repeats=repeats),
        SaveInput("h"),
        nn.Linear(dim, dim),
        nn.BatchNorm1d(dim),
        nn.ReLU(),
        GetInput("h"),
        EndBlock("block"),
        nn.Linear(dim, 10),
    )


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    jobs = [
        ("quickstart_folded.png", quickstart(), True, (1, 3, 32, 32)),
        ("quickstart_expanded.png", quickstart(), False, (1, 3, 32, 32)),
        ("unet.png", unet(), True, (1, 3, 64, 64)),
        ("transformer_expanded.png", transformer(), False, torch.zeros(1, 16, dtype=torch.long)),
        ("deep_200_layers.png", deep_mlp(), False, (8, 32)),
    ]
    for name, model, folded, shape in jobs:
        path = IMAGES / name
        model.visualize(save_path=str(path), show_repeats=folded, input_shape=shape)
        print(f"wrote {path.relative_to(IMAGES.parent.parent)}", file=sys.stderr)


if __name__ == "__main__":
    main()
