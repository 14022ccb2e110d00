"""Compiling a `Circuit`: `Circuit.compile()`, and whole-model `torch.compile` with each
block's repeats as one nested compile region (`torch_circuit.regions`).

Aliasing cases and the no-graph-break check are in test_toolchain.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch._dynamo
import torch._dynamo.utils
from torch import nn
from torch._dynamo.backends.debugging import aot_eager

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock
from torch_circuit.regions import allow_in_training, explain, unrolled


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


def two_stages() -> Circuit:
    """Two residual blocks with a layer between them: the pattern that Inductor's buffer
    reuse miscompiles when regions run in training (see `torch_circuit.regions`)."""
    torch.manual_seed(0)
    stage = [SaveInput("r"), nn.Linear(8, 8), nn.Tanh(), GetInput("r")]
    return Circuit(
        nn.Linear(8, 8),
        StartBlock("a", num_repeats=3),
        *stage,
        EndBlock("a"),
        nn.Linear(8, 8),
        StartBlock("b", num_repeats=3),
        *copy.deepcopy(stage),
        EndBlock("b"),
        nn.Linear(8, 1),
    )


def test_model_compile_is_one_inductor_graph_with_regions_that_train_right() -> None:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager = two_stages()
    compiled = copy.deepcopy(eager)
    compiled.compile(fullgraph=True)
    assert compiled_module(compiled)
    assert explain(compiled) == {"a": "region", "b": "region"}
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        eager(x).square().sum().backward()
        compiled(x).square().sum().backward()
    torch.testing.assert_close(compiled(x), eager(x))
    torch.testing.assert_close(grads(compiled), grads(eager))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


def compiled_module(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def test_model_compile_compiles_the_whole_model_in_place() -> None:
    inner = Circuit(nn.ReLU())
    model = Circuit(
        inner, StartBlock("own", num_repeats=2), nn.Linear(4, 4), EndBlock("own"), nn.Tanh()
    )
    model.compile(backend="aot_eager")
    assert compiled_module(model)
    assert not compiled_module(inner) and not compiled_module(model.own[0])
    assert explain(model) == {"own": "region"}  # regions in training: aot_eager is safe


def test_model_compile_without_a_safe_inductor_setting_trains_unrolled() -> None:
    for kwargs in ({"mode": "reduce-overhead"}, {"options": {"allow_buffer_reuse": True}}):
        model = residual_mlp(3)
        model.compile(**kwargs)
        assert explain(model)["block"].startswith("unrolled: autograd is recording"), kwargs
        with torch.no_grad():
            assert explain(model) == {"block": "region"}


# --- torch.compile(model): each block's body traced once, as a nested compile region ---


def regions_of(model: nn.Module, x: torch.Tensor, train: bool = False) -> tuple[int, int]:
    """`(invoke_subgraph calls, distinct bodies)` in the graph Dynamo traces of `model`."""
    found: list[tuple[int, int]] = []

    def backend(gm: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> object:
        calls = [n for n in gm.graph.nodes if n.target is torch.ops.higher_order.invoke_subgraph]
        found.append((len(calls), len({str(n.args[1]) for n in calls})))
        return aot_eager(gm, inputs)

    torch._dynamo.reset()
    out = torch.compile(model, fullgraph=True, backend=backend)(x)
    if train:
        out.sum().backward()
    torch._dynamo.reset()
    assert len(found) == 1
    return found[0]


def test_repeats_of_a_block_share_one_traced_region() -> None:
    model = residual_mlp(6)
    with torch.no_grad():  # inference: regions by default
        assert explain(model) == {"block": "region"}
        assert regions_of(model, torch.randn(3, 16)) == (6, 1)
    # Training: unrolled unless asked for (Inductor's buffer reuse, see regions.py).
    assert explain(model)["block"].startswith("unrolled: autograd is recording")
    assert regions_of(model, torch.randn(3, 16), train=True) == (0, 0)
    allow_in_training(model)
    assert explain(model) == {"block": "region"}
    assert regions_of(model, torch.randn(3, 16), train=True) == (6, 1)


def test_unrolled_switch_traces_every_repeat_inline() -> None:
    model = residual_mlp(4)
    with unrolled(), torch.no_grad():
        assert regions_of(model, torch.randn(3, 16)) == (0, 0)
        assert explain(model) == {
            "block": "unrolled: regions are switched off (torch_circuit.regions.unrolled())"
        }


def test_blocks_that_cannot_be_regions_are_unrolled_with_the_reason() -> None:
    model = Circuit(
        StartBlock("norm", num_repeats=3),
        nn.Linear(4, 4),
        nn.BatchNorm1d(4),
        EndBlock("norm"),
        StartBlock("inplace", num_repeats=3),
        nn.Linear(4, 4),
        nn.ReLU(inplace=True),
        EndBlock("inplace"),
        StartBlock("once"),
        nn.Linear(4, 4),
        EndBlock("once"),
        StartBlock("fine", num_repeats=3),
        nn.Linear(4, 4),
        EndBlock("fine"),
    )
    allow_in_training(model)
    reasons = explain(model)
    assert reasons["norm"].startswith("unrolled: layer 2 (BatchNorm1d) has buffers")
    assert reasons["inplace"] == "unrolled: layer 6 (ReLU) works in place (inplace=True)"
    assert reasons["once"] == "unrolled: it runs once"
    assert reasons["fine"] == "region"
    assert explain(model.eval())["norm"] == "region"  # eval() BatchNorm only reads its buffers
    # Training: only "fine" runs as a region (repeat 0 inlined, 1-2 stamped out).
    assert regions_of(model.train(), torch.randn(5, 4, requires_grad=True), True) == (3, 1)


def trains_like_eager(build: Callable[[], Circuit], x: torch.Tensor) -> None:
    """Forward, backward and buffers of the compiled model bit-for-bit those of eager."""
    torch.manual_seed(0)
    eager = build()
    traced = copy.deepcopy(eager)
    allow_in_training(traced)  # aot_eager: no Inductor buffer reuse
    expected = eager(x)
    expected.square().sum().backward()
    torch._dynamo.reset()
    output = torch.compile(traced, fullgraph=True, backend="aot_eager")(x)
    output.square().sum().backward()
    torch._dynamo.reset()
    assert torch.equal(output, expected)
    for (name, p), q in zip(eager.named_parameters(), traced.parameters(), strict=True):
        assert torch.equal(q.grad, p.grad), name  # type: ignore[arg-type]
    for (name, b), c in zip(eager.named_buffers(), traced.buffers(), strict=True):
        assert torch.equal(c, b), name


def test_regions_with_shared_weights_nested_blocks_and_checkpoint_train_like_eager() -> None:
    def build() -> Circuit:
        return Circuit(
            nn.Linear(4, 4),
            SaveInput("x0"),
            StartBlock("outer", num_repeats=3, checkpoint=2),
            SaveInput("r"),
            nn.Linear(4, 4),
            StartBlock("tied", num_repeats=3, share_weights=True),
            SaveInput("t"),
            nn.Linear(4, 4),
            nn.Tanh(),
            GetInput("t"),
            EndBlock("tied"),
            GetInput("r"),
            GetInput("x0", op="mul"),
            EndBlock("outer"),
        )

    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    model = build()
    allow_in_training(model)
    assert explain(model) == {
        "outer": "unrolled: its body holds the repeated block 'tied', which runs as a region; "
        "regions inside regions fail to compile for training (torch 2.13, 2.14.1)",
        "outer.0.tied": "region",
        "outer.1.tied": "region",
        "outer.2.tied": "region",
    }
    trains_like_eager(build, x)
