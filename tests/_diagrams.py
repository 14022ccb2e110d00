"""What the diagram tests share: the models drawn in docs/images, a nested model, a layer with
markup in its repr, random valid circuits, and golden-file checks."""

from __future__ import annotations

import importlib.util
import itertools
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"


def _load_models() -> ModuleType:
    """The models drawn in docs/images, from the script that draws them."""
    spec = importlib.util.spec_from_file_location(
        "make_diagrams", ROOT / "scripts/make_diagrams.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


models = _load_models()


def nested() -> Circuit:
    """Blocks in a block: `stage` (StartBlock at position 2, 2 repeats) holds `unit` (position
    4, 3 shared repeats); the skip `outer`, saved before both, is read in every unit repeat."""
    return Circuit(
        nn.Linear(4, 4),
        SaveInput("outer"),
        StartBlock("stage", num_repeats=2),
        SaveInput("s"),
        StartBlock("unit", num_repeats=3, share_weights=True),
        SaveInput("u"),
        nn.Linear(4, 4),
        GetInput("u"),
        GetInput("outer", op=torch.mul),
        EndBlock("unit"),
        GetInput("s"),
        EndBlock("stage"),
        nn.Linear(4, 2),
    )


class Hostile(nn.Module):
    """An identity whose repr carries markup: a page must show it as text, never run it."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.markup = markup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return self.markup


def check_golden(name: str, text: str) -> None:
    """Compare ``text`` with ``tests/golden/<name>``; ``UPDATE_GOLDEN=1`` rewrites the file."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing; run UPDATE_GOLDEN=1 pytest"
    assert text == path.read_text(encoding="utf-8")


@st.composite
def circuits(draw: st.DrawFn) -> Circuit:
    counter = itertools.count()

    def scope(depth: int, visible: list[str]) -> list[Any]:
        items: list[Any] = []
        local: list[str] = []
        for _ in range(draw(st.integers(1, 5))):
            kind = draw(
                st.sampled_from(
                    ["layer", "save", "read", "block"] if depth < 2 else ["layer", "save", "read"]
                )
            )
            if kind == "layer":
                items.append(nn.Linear(3, 3))
            elif kind == "save":
                name = f"s{next(counter)}"
                items.append(SaveInput(name))
                local.append(name)
            elif kind == "read" and (local or visible):
                name = draw(st.sampled_from(local + visible))
                items.append(GetInput(name, op=draw(st.sampled_from(["add", "mul"]))))
            elif kind == "block":
                name = f"b{next(counter)}"
                repeats = draw(st.integers(1, 3))
                shared = draw(st.booleans())
                body = scope(depth + 1, visible + local)
                items += [StartBlock(name, repeats, shared), *body, EndBlock(name)]
            else:
                items.append(nn.ReLU())
        return items

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Circuit(*scope(0, []))
