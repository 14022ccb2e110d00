"""Random valid circuits against a small, independent interpreter of the flat layer list.

The interpreter knows only the documented semantics: layers run in order; a block runs its body
``num_repeats`` times, each repeat in a fresh scope; a read takes the nearest save of its name,
looking outwards (named inputs are saves before the first layer); a read of several names
passes them in order; saves made inside a block vanish at its end; outputs are returned as a
dict, a tuple per execution inside blocks. It takes each repeat's modules from the Circuit by
their documented keys (``<position>`` at the top level, ``<block>.<repeat>.<position>`` inside
blocks, repeat 0 only when weights are shared).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from torch_circuit import (
    Circuit,
    EndBlock,
    GetInput,
    Output,
    SaveInput,
    StartBlock,
    UnusedSaveWarning,
)

WIDTH = 3
NAMES = ("a", "b", "i0")  # few names, so scopes shadow and rebind often (i0 may be an input)
INPUTS = ("i0", "i1")


def blend(current: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """The op of a read of two names."""
    return current + 0.5 * first - 0.25 * second


class Gate(nn.Module):
    """A module used as an op: ``current + scale * saved``, with a trained scale."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.rand(WIDTH, dtype=torch.float64) + 0.5)

    def forward(self, current: Tensor, saved: Tensor) -> Tensor:
        return current + self.scale * saved


def lerp(current: Tensor, saved: Tensor) -> Tensor:
    return 0.75 * current + 0.25 * saved


def cat_first(current: Tensor, saved: Tensor) -> Tensor:
    return torch.cat((current, saved), dim=1)


# What the interpreter does for each op spec; a Gate is fetched from the Circuit instead.
REFERENCE_OPS: dict[Any, Callable[[Tensor, Tensor], Tensor]] = {
    "add": lambda current, saved: current + saved,
    "mul": lambda current, saved: current * saved,
    "cat": cat_first,
    torch.add: lambda current, saved: current + saved,
    torch.mul: lambda current, saved: current * saved,
    torch.cat: cat_first,
    lerp: lerp,
}
OPS = (*REFERENCE_OPS, "gate", "lambda")


def linear(width_in: int = WIDTH) -> nn.Linear:
    return nn.Linear(width_in, WIDTH, dtype=torch.float64)


def halve(x: Tensor) -> Tensor:
    return x * 0.5


@dataclass
class Builder:
    """Draws a valid layer list: reads name only saves visible where they stand."""

    data: st.DataObject
    layers: list[Any] = field(default_factory=list)
    op_specs: dict[int, Any] = field(default_factory=dict)
    block_ids: itertools.count[int] = field(default_factory=itertools.count)
    output_ids: itertools.count[int] = field(default_factory=itertools.count)

    def body(self, scopes: list[set[str]], depth: int) -> None:
        for _ in range(self.data.draw(st.integers(1, 6), label="length")):
            visible = sorted(set().union(*scopes))
            kinds = ["layer", "callable", "save", "save", "output"]
            kinds += ["read", "read"] if visible else []
            kinds += ["reads"] if len(visible) > 1 else []
            kinds += ["block"] if depth < 3 else []
            kind = self.data.draw(st.sampled_from(kinds), label="kind")
            if kind == "output":
                self.layers.append(Output(f"o{next(self.output_ids)}"))
                continue
            if kind == "reads":
                names = self.data.draw(
                    st.lists(st.sampled_from(visible), min_size=2, max_size=2, unique=True),
                    label="names",
                )
                self.layers.append(GetInput(tuple(names), op=blend))
                continue
            if kind == "layer":
                self.layers.append(self.data.draw(st.sampled_from([linear, nn.Tanh, nn.Sigmoid]))())
            elif kind == "callable":
                self.layers.append(self.data.draw(st.sampled_from([torch.tanh, halve])))
            elif kind == "save":
                name = self.data.draw(st.sampled_from(NAMES), label="save")
                self.layers.append(SaveInput(name, transform=self.maybe_transform()))
                scopes[-1].add(name)
            elif kind == "read":
                self.read(self.data.draw(st.sampled_from(visible), label="read"))
            else:
                self.block(scopes, depth)

    def maybe_transform(self) -> nn.Module | None:
        return linear() if self.data.draw(st.booleans(), label="transform") else None

    def read(self, name: str) -> None:
        spec = self.data.draw(st.sampled_from(OPS), label="op")
        op: Any = spec
        if spec == "gate":
            op = Gate()
        elif spec == "lambda":
            op = lambda current, saved: current - saved  # noqa: E731
        read = GetInput(name, op=op, transform=self.maybe_transform())
        self.op_specs[id(read)] = spec
        self.layers.append(read)
        if spec in ("cat", torch.cat):
            self.layers.append(linear(2 * WIDTH))  # (B, 2W) -> (B, W)

    def block(self, scopes: list[set[str]], depth: int) -> None:
        name = f"block{next(self.block_ids)}"
        repeats = self.data.draw(st.integers(1, 3), label="repeats")
        shared = self.data.draw(st.booleans(), label="share_weights")
        # Checkpointing changes only what backward recomputes; the interpreter ignores it.
        checkpoint = self.data.draw(st.booleans(), label="checkpoint")
        self.layers.append(
            StartBlock(name, num_repeats=repeats, share_weights=shared, checkpoint=checkpoint)
        )
        self.body([*scopes, set()], depth + 1)
        self.layers.append(EndBlock(name))


class Interpreter:
    """Runs a layer list with the Circuit's modules, looked up by their documented keys."""

    def __init__(self, layers: list[Any], op_specs: dict[int, Any], model: Circuit) -> None:
        self.layers = layers
        self.op_specs = op_specs  # id(GetInput) -> the op as the builder chose it
        self.model = model
        self.visited: set[str] = set()
        self.outputs: dict[str, list[Tensor]] = {}

    def result(self, x: Tensor) -> Any:
        """What the circuit returns: `x`, or its outputs in declaration order."""
        if not self.outputs:
            return x
        top_level = {item.name for item in self.top_level_outputs()}
        order = [item.name for item in self.layers if isinstance(item, Output)]
        return {
            name: self.outputs[name][0] if name in top_level else tuple(self.outputs[name])
            for name in order
        }

    def top_level_outputs(self) -> list[Output]:
        depth, found = 0, []
        for item in self.layers:
            depth += isinstance(item, StartBlock) - isinstance(item, EndBlock)
            if depth == 0 and isinstance(item, Output):
                found.append(item)
        return found

    def module(self, key: str, original: Any, is_original_repeat: bool) -> nn.Module:
        found = self.model.get_submodule(key)
        self.visited.add(key)
        # Repeat 0 at every level holds the very modules passed in; other repeats hold copies.
        assert (found is original) == is_original_repeat, key
        assert type(found) is type(original), key
        return found

    def end_of(self, start: int) -> int:
        name = self.layers[start].name
        return next(
            index
            for index in range(start + 1, len(self.layers))
            if isinstance(self.layers[index], EndBlock) and self.layers[index].name == name
        )

    def run(
        self,
        x: Tensor,
        start: int = 0,
        end: int | None = None,
        prefix: str = "",
        scopes: tuple[dict[str, Tensor], ...] = (),
        original: bool = True,
    ) -> Tensor:
        end = len(self.layers) if end is None else end
        scopes = (*scopes, {})  # this scope's own saves
        position = start
        while position < end:
            item = self.layers[position]
            key = f"{prefix}{position}"
            if isinstance(item, StartBlock):
                close = self.end_of(position)
                for repeat in range(item.num_repeats):
                    index = 0 if item.share_weights else repeat
                    x = self.run(
                        x,
                        position + 1,
                        close,
                        f"{prefix}{item.name}.{index}.",
                        scopes,
                        original and index == 0,
                    )
                position = close + 1
                continue
            if isinstance(item, SaveInput):
                value = x
                if item.transform is not None:
                    value = self.module(f"{key}.transform", item.transform, original)(x)
                scopes[-1][item.name] = value
            elif isinstance(item, GetInput) and isinstance(item.name, tuple):
                values = [
                    next(scope[name] for scope in reversed(scopes) if name in scope)
                    for name in item.name
                ]
                x = blend(x, *values)
            elif isinstance(item, GetInput):
                saved = next(scope[item.name] for scope in reversed(scopes) if item.name in scope)
                if item.transform is not None:
                    saved = self.module(f"{key}.transform", item.transform, original)(saved)
                x = self.combine(item, key, x, saved, original)
            elif isinstance(item, Output):
                self.outputs.setdefault(item.name, []).append(x)
            elif isinstance(item, nn.Module):
                x = self.module(key, item, original)(x)
            else:
                x = item(x)  # a plain callable: call it as given
            position += 1
        return x

    def combine(self, read: GetInput, key: str, x: Tensor, saved: Tensor, original: bool) -> Tensor:
        spec = self.op_specs[id(read)]
        if spec == "gate":
            return self.module(f"{key}.op", read.op, original)(x, saved)
        if spec == "lambda":
            return x - saved
        return REFERENCE_OPS[spec](x, saved)


@pytest.mark.filterwarnings("ignore::torch_circuit.UnusedSaveWarning")
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_circuits_match_the_interpreter(data: st.DataObject) -> None:
    inputs = data.draw(st.lists(st.sampled_from(INPUTS), unique=True, max_size=2), label="inputs")
    builder = Builder(data)
    builder.body([set(inputs)], depth=0)
    layers = builder.layers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedSaveWarning)
        model = Circuit(*layers, inputs=tuple(inputs))

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, WIDTH, dtype=torch.float64, generator=generator)
    values = {
        name: torch.randn(4, WIDTH, dtype=torch.float64, generator=generator) for name in inputs
    }
    by_keyword = data.draw(st.booleans(), label="keywords")
    leaves = {
        name: (v.clone().requires_grad_(), v.clone().requires_grad_()) for name, v in values.items()
    }
    x_circuit = x.clone().requires_grad_()
    x_reference = x.clone().requires_grad_()
    interpreter = Interpreter(layers, builder.op_specs, model)
    reference_inputs = {name: pair[1] for name, pair in leaves.items()}
    expected = interpreter.result(interpreter.run(x_reference, scopes=(reference_inputs,)))
    circuit_inputs = [leaves[name][0] for name in inputs]
    if by_keyword:
        actual = model(x_circuit, **dict(zip(inputs, circuit_inputs, strict=True)))
    else:
        actual = model(x_circuit, *circuit_inputs)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)

    # Every parameter of the Circuit belongs to a module the interpreter used.
    for name, _ in model.named_parameters():
        assert any(name.startswith(key + ".") for key in interpreter.visited), name

    def loss(result: Any) -> Tensor:
        total = torch.zeros((), dtype=torch.float64)
        for index, leaf in enumerate(tree_leaves(result)):
            weights = torch.linspace(-1, 1 + index, leaf.numel(), dtype=torch.float64)
            total = total + (leaf * weights.view_as(leaf)).sum()
        return total

    grads_circuit = torch.autograd.grad(
        loss(actual), [x_circuit, *circuit_inputs], allow_unused=True
    )
    grads_reference = torch.autograd.grad(
        loss(expected), [x_reference, *(leaves[name][1] for name in inputs)], allow_unused=True
    )
    for grad_circuit, grad_reference in zip(grads_circuit, grads_reference, strict=True):
        torch.testing.assert_close(grad_circuit, grad_reference, rtol=0, atol=0, equal_nan=True)
