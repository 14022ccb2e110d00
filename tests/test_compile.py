"""Compiling a Circuit: whole-model with repeated bodies as regions, and in-place regional."""

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


def test_whole_model_compile_traces_repeats_as_one_reused_region() -> None:
    torch._dynamo.reset()
    model = residual_mlp(3)
    x = torch.randn(2, 16)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0
    graph = explanation.graphs[0]
    subgraph_calls = [node for node in graph.graph.nodes if "invoke_subgraph" in str(node.target)]
    assert len(subgraph_calls) == 3
    assert len({node.args[1] for node in subgraph_calls}) == 1  # one body, called 3 times
