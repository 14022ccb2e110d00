"""Named inputs, reads of several names, outputs, per-repeat layers and stacks through the
PyTorch tool chain: torch.compile without graph breaks, torch.export with keyword inputs and
dict outputs, torch.fx where fx can, torch.jit.trace, copies and saving."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from torch_circuit import Circuit, EndBlock, GetInput, Output, PerRepeat, SaveInput, StartBlock


def masked_scale(x: Tensor, mask: Tensor, scale: Tensor) -> Tensor:
    return x * mask * scale


def add_skip(x: Tensor, skip: Tensor) -> Tensor:
    return x + skip


def linear(index: int, count: int) -> nn.Module:
    return nn.Linear(4, 4)


def everything() -> Circuit:
    """Every new kind of marker at once, and a checkpointed block that pops."""
    torch.manual_seed(0)
    return Circuit(
        ("stem", nn.Linear(4, 4)),
        StartBlock("layer", num_repeats=3),
        SaveInput("x"),
        GetInput(("mask", "scale"), op=masked_scale),
        nn.Tanh(),
        GetInput("x"),
        Output("hidden"),
        EndBlock("layer"),
        StartBlock("down", num_repeats=2),
        SaveInput("skip", push=True),
        PerRepeat(linear),  # a module-level function: the model pickles
        EndBlock("down"),
        StartBlock("up", num_repeats=2, checkpoint=True),
        GetInput("skip", pop=True, op=add_skip),
        nn.LayerNorm(4),
        EndBlock("up"),
        ("head", nn.Linear(4, 2)),
        Output("last"),
        inputs={"mask": None, "scale": 2.0},
    )


def call() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(3, 4, generator=generator), (
        torch.rand(3, 4, generator=generator) > 0.3
    ).float()


def assert_same(actual: Any, expected: Any) -> None:
    actual_leaves, expected_leaves = tree_leaves(actual), tree_leaves(expected)
    assert len(actual_leaves) == len(expected_leaves)
    for a, e in zip(actual_leaves, expected_leaves, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def test_compile_fullgraph_has_no_graph_breaks() -> None:
    torch._dynamo.reset()
    model = everything()
    x, mask = call()
    explanation = torch._dynamo.explain(model)(x, mask=mask)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    assert_same(compiled(x, mask=mask), model(x, mask=mask))
    assert_same(compiled(x, mask), model(x, mask))
    torch._dynamo.reset()


def test_compiled_gradients_match_eager() -> None:
    torch._dynamo.reset()
    eager, compiled_model = everything(), everything()
    compiled = torch.compile(compiled_model, fullgraph=True, backend="aot_eager")
    x, mask = call()
    for model in (eager, compiled):
        out = model(x, mask)
        (out["last"].sum() + sum(h.sum() for h in out["hidden"])).backward()
    for (name, a), b in zip(eager.named_parameters(), compiled_model.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, msg=name)
    torch._dynamo.reset()


def test_export_takes_keyword_inputs_and_returns_the_dict() -> None:
    model = everything().eval()
    x, mask = call()
    exported = torch.export.export(model, (x,), {"mask": mask})
    assert [
        spec.arg.name
        for spec in exported.graph_signature.input_specs
        if spec.kind.name == "USER_INPUT"
    ] == ["x", "mask"]
    result = exported.module()(x, mask=mask)
    assert list(result) == ["hidden", "last"] and len(result["hidden"]) == 3
    assert_same(result, model(x, mask=mask))


def test_fx_traces_outputs_stacks_and_per_repeat_layers() -> None:
    model = Circuit(
        nn.Linear(4, 4),
        StartBlock("b", num_repeats=2),
        SaveInput("r"),
        PerRepeat(lambda i, n: nn.Linear(4, 4)),
        GetInput("r"),
        Output("h"),
        EndBlock("b"),
        StartBlock("d", num_repeats=2),
        SaveInput("s", push=True),
        EndBlock("d"),
        StartBlock("u", num_repeats=2),
        GetInput("s", pop=True),
        EndBlock("u"),
        Output("last"),
    )
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 4)
    assert_same(traced(x), model(x))


def test_fx_cannot_trace_named_inputs_and_says_what_to_use() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "torch.fx.symbolic_trace cannot trace a Circuit with named inputs: forward binds "
            "them from *args and **kwargs"
        ),
    ):
        torch.fx.symbolic_trace(everything())


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
def test_jit_trace_runs_a_circuit_with_one_output() -> None:
    model = Circuit(
        nn.Linear(4, 4),
        StartBlock("b", num_repeats=2),
        SaveInput("r"),
        nn.ReLU(),
        GetInput("r"),
        EndBlock("b"),
    ).eval()
    x = torch.randn(2, 4)
    traced = torch.jit.trace(model, (x,))
    assert_same(traced(x), model(x))


def test_deepcopy_and_torch_save_keep_everything(tmp_path: Path) -> None:
    model = everything().eval()
    x, mask = call()
    clone = copy.deepcopy(model)
    assert_same(clone(x, mask), model(x, mask))
    path = tmp_path / "model.pt"
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)
    assert_same(loaded(x, mask), model(x, mask))
    assert loaded.input_nodes == model.input_nodes


def test_a_state_dict_round_trip_into_a_fresh_build() -> None:
    trained, fresh = everything(), everything()
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(0.5)
    fresh.load_state_dict(trained.state_dict())
    x, mask = call()
    assert_same(fresh.eval()(x, mask), trained.eval()(x, mask))
