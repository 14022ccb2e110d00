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

from torch_circuit import Circuit, EndBlock, GetInput, Output, SaveInput, StartBlock

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


def combine(x: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
    """The op of a read of several names in the random circuits: the values summed in."""
    return x + sum(values)


@st.composite
def circuits(draw: st.DrawFn, stacks: bool = False) -> Circuit:
    """Random valid circuits of `nn.Linear(3, 3)` layers: skips (some with transforms),
    nested and shared blocks, named inputs, reads of several names, outputs, and push/pop
    stacks across two blocks (always, with `stacks`)."""
    counter = itertools.count()
    inputs = [f"in{index}" for index in range(draw(st.integers(0, 2)))]

    def transform() -> nn.Module | None:
        return draw(st.sampled_from([None, None, None, nn.Linear(3, 3)]))

    def scope(depth: int, visible: list[str]) -> list[Any]:
        items: list[Any] = []
        local: list[str] = []
        kinds = ["layer", "save", "read", "multi", "output"]
        for _ in range(draw(st.integers(1, 5))):
            kind = draw(st.sampled_from([*kinds, "block"] if depth < 2 else kinds))
            names = local + visible
            if kind == "layer":
                items.append(nn.Linear(3, 3))
            elif kind == "save":
                name = f"s{next(counter)}"
                items.append(SaveInput(name, transform=transform()))
                local.append(name)
            elif kind == "read" and names:
                name = draw(st.sampled_from(names))
                op = draw(st.sampled_from(["add", "mul"]))
                items.append(GetInput(name, op=op, transform=transform()))
            elif kind == "multi" and len(names) > 1:
                chosen = draw(st.lists(st.sampled_from(names), min_size=2, max_size=3))
                items.append(GetInput(tuple(chosen), op=combine))
            elif kind == "output":
                items.append(Output(f"o{next(counter)}"))
            elif kind == "block":
                name = f"b{next(counter)}"
                repeats = draw(st.integers(1, 3))
                shared = draw(st.booleans())
                body = scope(depth + 1, visible + local)
                items += [StartBlock(name, repeats, shared), *body, EndBlock(name)]
            else:
                items.append(nn.ReLU())
        return items

    layers = scope(0, list(inputs))
    if stacks or draw(st.booleans()):
        layers = with_stack(draw, layers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Circuit(*layers, inputs=tuple(inputs))


def with_stack(draw: st.DrawFn, layers: list[Any]) -> list[Any]:
    """`layers` with an encoder block pushing onto the stack `p` once per repeat (itself in
    an outer repeated block, or not) and, later, one or two decoder blocks popping from it,
    at most as many times as it was pushed."""
    pushes = draw(st.integers(1, 3))
    encoder = [StartBlock("enc", pushes), nn.ReLU(), SaveInput("p", push=True), EndBlock("enc")]
    if draw(st.booleans()):
        outer = draw(st.integers(2, 3))
        encoder = [StartBlock("outer", outer), *encoder, EndBlock("outer")]
        pushes *= outer
    first = draw(st.integers(1, pushes))
    second = draw(st.integers(0, pushes - first))
    decoders = [
        [StartBlock(name, pops), GetInput("p", pop=True), nn.ReLU(), EndBlock(name)]
        for name, pops in (("dec", first), ("dec2", second))
        if pops
    ]
    depth, between = 0, [0]  # where the top level may take a block
    for index, item in enumerate(layers):
        depth += isinstance(item, StartBlock) - isinstance(item, EndBlock)
        if depth == 0:
            between.append(index + 1)
    cuts = sorted(draw(st.lists(st.sampled_from(between), min_size=3, max_size=3)))
    parts = [layers[: cuts[0]], layers[cuts[0] : cuts[1]], layers[cuts[1] : cuts[2]]]
    result = [*parts[0], *encoder, *parts[1]]
    for decoder, part in zip(decoders, (parts[2], layers[cuts[2] :]), strict=False):
        result += [*decoder, *part]
    if len(decoders) == 1:
        result += layers[cuts[2] :]
    return result


def input_shapes(model: Circuit, shape: tuple[int, ...] = (2, 3)) -> dict[str, Any]:
    """`shape` for each named input of `model`, as `input_shapes=` takes them."""
    return {node.name: shape for node in model.input_nodes}
