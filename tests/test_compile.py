"""``Circuit.compile()``: regional compilation, one compiled body for all repeats.

Whole-model ``torch.compile`` is tested in test_toolchain.py.
"""

from __future__ import annotations

import torch
import torch._dynamo
import torch._dynamo.utils
from torch import nn

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock


def residual_mlp(num_repeats: int, width: int = 16) -> Circuit:
    torch.manual_seed(0)
    return Circuit(
        nn.Linear(width, width),
        StartBlock("block", num_repeats=num_repeats),
        SaveInput("residual"),
        nn.LayerNorm(width),
        nn.Linear(width, width),
        nn.GELU(),
        nn.Linear(width, width),
        GetInput("residual"),
        EndBlock("block"),
        nn.Linear(width, 1),
    )


def grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_regional_compile_compiles_the_repeated_body_once() -> None:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager, compiled = residual_mlp(4), residual_mlp(4)
    compiled.compile(fullgraph=True)
    x = torch.randn(3, 16)
    eager(x).sum().backward()
    compiled(x).sum().backward()
    torch.testing.assert_close(compiled(x), eager(x))
    torch.testing.assert_close(grads(compiled), grads(eager))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def test_compile_without_repeated_blocks_compiles_the_whole_model() -> None:
    model = Circuit(
        nn.Linear(4, 4), Circuit(nn.ReLU()), StartBlock("once"), nn.Tanh(), EndBlock("once")
    )
    model.compile()
    assert compiled(model)
    assert not compiled(model.once[0])


def test_compile_with_repeated_blocks_compiles_repeats_and_nested_circuits() -> None:
    inner = Circuit(nn.ReLU())
    model = Circuit(
        inner,
        StartBlock("tied", num_repeats=3, share_weights=True),
        nn.Linear(4, 4),
        EndBlock("tied"),
        StartBlock("own", num_repeats=2),
        nn.Linear(4, 4),
        EndBlock("own"),
    )
    model.compile()
    assert not compiled(model)
    assert compiled(inner)
    assert all(compiled(repeat) for repeat in [*model.tied, *model.own])
