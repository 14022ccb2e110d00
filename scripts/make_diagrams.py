"""Regenerate the diagrams committed under ``docs/images``, and measure the example zoo.

Run from the repository root::

    python scripts/make_diagrams.py          # the images of the docs
    python scripts/make_diagrams.py --sizes  # every zoo diagram's size, folded and expanded

The models here are also the ones the layout and rendering tests check, so the committed
images show exactly what the tests hold to (no overlapping boxes, separate skip lanes, no
diagram taller than three times its width). The screenshot of the interactive page,
``docs/images/html_view.png``, is taken by the browser test:
``UPDATE_SCREENSHOTS=1 python -m pytest tests/test_html_browser.py -k screenshot``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from torch_circuit import Circuit, EndBlock, GetInput, Output, PerRepeat, SaveInput, StartBlock

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


def resnet_stage(blocks: int = 50, width: int = 16) -> Circuit:
    """A stem, one stage of ``blocks`` residual blocks, and a head; a long skip spans the whole
    stage, so it is live wherever the expanded stage wraps into a new column."""
    return Circuit(
        nn.Conv2d(3, width, 3, padding=1),
        SaveInput("stem"),
        StartBlock("stage", num_repeats=blocks),
        SaveInput("residual"),
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        GetInput("residual"),
        nn.ReLU(),
        EndBlock("stage"),
        GetInput("stem"),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 10),
    )


class TimeShift(nn.Module):
    """Adds a projection of the timestep embedding `t` to each channel of `x`."""

    def __init__(self, time_dim: int, channels: int) -> None:
        super().__init__()
        self.project = nn.Linear(time_dim, channels)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return x + self.project(t)[:, :, None, None]  # (B, C, H, W) + (B, C, 1, 1)


def conditioned_unet(levels: int = 3, width: int = 16, time_dim: int = 32) -> Circuit:
    """A timestep-conditioned U-Net with the new markers: the encoder and the decoder are one
    repeated block each, paired level by level through a push/pop stack; widths double per
    level (`PerRepeat`); every level reads the named input `t`; the decoder returns each
    level's features and the head the prediction (`Output`)."""

    def channels(level: int) -> int:
        return width * 2**level

    return Circuit(
        ("stem", nn.Conv2d(1, width, 3, padding=1)),
        StartBlock("down", num_repeats=levels),
        GetInput("t", op=PerRepeat(lambda i, n: TimeShift(time_dim, channels(i)))),
        SaveInput("skip", push=True),
        PerRepeat(lambda i, n: nn.Conv2d(channels(i), channels(i + 1), 3, stride=2, padding=1)),
        nn.ReLU(),
        EndBlock("down"),
        ("middle", nn.Conv2d(channels(levels), channels(levels), 3, padding=1)),
        StartBlock("up", num_repeats=levels),
        PerRepeat(
            lambda i, n: nn.ConvTranspose2d(channels(n - i), channels(n - i - 1), 2, stride=2)
        ),
        GetInput("skip", pop=True, op="cat"),  # (B, 2C, H, W)
        PerRepeat(
            lambda i, n: nn.Conv2d(2 * channels(n - i - 1), channels(n - i - 1), 3, padding=1)
        ),
        nn.ReLU(),
        Output("features"),
        EndBlock("up"),
        ("head", nn.Conv2d(width, 1, 1)),
        Output("noise"),
        inputs=("t",),
    )


def _example(name: str) -> ModuleType:
    """A script of ``examples/``, imported as a module (its ``main`` does not run)."""
    module_name = f"_example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def zoo() -> list[tuple[str, Callable[[], Circuit], dict[str, Any]]]:
    """Every model the docs draw and every example's model, with the inputs for its shapes
    (`input_shape`, and `input_shapes` for a model with named inputs)."""
    tokens = torch.zeros(1, 16, dtype=torch.long)

    def main_input(shape: Any) -> dict[str, Any]:
        return {"input_shape": shape}

    return [
        ("quickstart", quickstart, main_input((1, 3, 32, 32))),
        ("unet", unet, main_input((1, 3, 64, 64))),
        ("transformer", transformer, main_input(tokens)),
        ("deep_mlp", deep_mlp, main_input((8, 32))),
        ("resnet_stage_50", resnet_stage, main_input((1, 3, 16, 16))),
        (
            "conditioned_unet",
            conditioned_unet,
            {"input_shape": (1, 1, 32, 32), "input_shapes": {"t": (1, 32)}},
        ),
        (
            "examples/resnet_mnist",
            _example("resnet_mnist").build_circuit,
            main_input((1, 1, 28, 28)),
        ),
        (
            "examples/unet_segmentation",
            _example("unet_segmentation").build_circuit,
            main_input((1, 1, 32, 32)),
        ),
        (
            "examples/transformer_encoder",
            _example("transformer_encoder").build_circuit,
            {
                "input_shape": torch.zeros(1, 10, dtype=torch.long),
                "input_shapes": {"mask": torch.zeros(1, 10, dtype=torch.bool)},
            },
        ),
        (
            "examples/diffusion_digits",
            _example("diffusion_digits").build_circuit,
            {"input_shape": (1, 1, 8, 8), "input_shapes": {"t": torch.zeros(1, dtype=torch.long)}},
        ),
        (
            "examples/train_distributed",
            lambda: _example("train_distributed").resnet(False),
            main_input((1, 3, 16, 16)),
        ),
    ]


def sizes() -> None:
    """Print the size of every zoo diagram, folded and expanded, at the PNG resolution."""
    from torch_circuit.diagram.layout import layout_circuit
    from torch_circuit.diagram.render import PNG_DPI

    for name, build, shapes in zoo():
        for expanded in (False, True):
            layout = layout_circuit(build(), expanded=expanded, **shapes)
            width, height = round(layout.width * PNG_DPI), round(layout.height * PNG_DPI)
            view = "expanded" if expanded else "folded"
            print(
                f"{name:30} {view:9} {width:5} x {height:5} px  height/width {height / width:.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", action="store_true", help="print the zoo's diagram sizes")
    if parser.parse_args().sizes:
        sizes()
        return
    IMAGES.mkdir(parents=True, exist_ok=True)
    shapes = {name: shapes for name, _, shapes in zoo()}
    jobs = [
        ("quickstart_folded.png", quickstart(), False, shapes["quickstart"]),
        ("quickstart_expanded.png", quickstart(), True, shapes["quickstart"]),
        ("unet.png", unet(), False, shapes["unet"]),
        ("transformer_expanded.png", transformer(), True, shapes["transformer"]),
        ("deep_200_layers.png", deep_mlp(), True, shapes["deep_mlp"]),
        ("conditioned_unet_folded.png", conditioned_unet(), False, shapes["conditioned_unet"]),
        ("conditioned_unet_expanded.png", conditioned_unet(), True, shapes["conditioned_unet"]),
    ]
    for name, model, expanded, inputs in jobs:
        path = IMAGES / name
        model.visualize(save_path=str(path), expanded=expanded, **inputs)
        print(f"wrote {path.relative_to(IMAGES.parent.parent)}", file=sys.stderr)


if __name__ == "__main__":
    main()
