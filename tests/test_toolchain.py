"""A Circuit is a normal PyTorch module: compile, fx, export, dtypes, copies, saving."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock, regions


def half_residual(current: Tensor, saved: Tensor) -> Tensor:
    return current + 0.5 * saved


def small_model() -> Circuit:
    """Skips, nested and shared blocks, a transform, a function op, cat and a plain callable."""
    return Circuit(
        nn.Conv2d(3, 8, 3, padding=1),  # 0
        nn.BatchNorm2d(8),
        nn.ReLU(),
        SaveInput("stem"),  # 3
        StartBlock("stage", num_repeats=2),  # 4
        SaveInput("residual"),
        nn.Conv2d(8, 8, 3, padding=1),  # 6
        nn.BatchNorm2d(8),
        torch.relu,  # 8
        StartBlock("inner", num_repeats=2, share_weights=True),  # 9
        SaveInput("r"),
        nn.Conv2d(8, 8, 1),  # 11
        GetInput("r", op=half_residual),
        EndBlock("inner"),
        GetInput("residual", transform=nn.Conv2d(8, 8, 1)),  # 14
        GetInput("stem", op="mul"),
        EndBlock("stage"),
        GetInput("stem", op="cat"),  # 17: (B, 16, H, W)
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),  # 20
    )


class HandSmall(nn.Module):
    """``small_model`` written by hand, modules created in forward order."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.stages = nn.ModuleList(
            nn.ModuleDict(
                {
                    "conv": nn.Conv2d(8, 8, 3, padding=1),
                    "bn": nn.BatchNorm2d(8),
                    "inner": nn.Conv2d(8, 8, 1),
                    "project": nn.Conv2d(8, 8, 1),
                }
            )
            for _ in range(2)
        )
        self.fc = nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.conv(x)))
        stem = x
        for stage in self.stages:
            residual = x
            x = torch.relu(stage["bn"](stage["conv"](x)))
            for _ in range(2):
                x = stage["inner"](x) + 0.5 * x
            x = (x + stage["project"](residual)) * stem
        x = torch.cat((x, stem), dim=1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def nested_model() -> Circuit:
    """A Circuit holding Circuits, at the top level and in every repeat of a block."""
    inner = Circuit(SaveInput("r"), nn.Linear(6, 6), nn.Tanh(), GetInput("r"))
    return Circuit(
        nn.Linear(6, 6),
        SaveInput("r"),
        inner,
        GetInput("r", op="mul"),
        StartBlock("stack", num_repeats=2),
        Circuit(SaveInput("r"), nn.Linear(6, 6), nn.ReLU(), GetInput("r", op="cat")),
        nn.Linear(12, 6),
        EndBlock("stack"),
    )


def image() -> Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def vector() -> Tensor:
    return torch.randn(3, 6, generator=torch.Generator().manual_seed(0))


MODELS: dict[str, tuple[Callable[[], Circuit], Callable[[], Tensor]]] = {
    "small": (small_model, image),
    "nested": (nested_model, vector),
}


def assert_same(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def matched_pair() -> tuple[HandSmall, Circuit]:
    hand, circuit = HandSmall(), small_model()
    with torch.no_grad():
        for kind in ("parameters", "buffers"):
            pairs = zip(getattr(hand, kind)(), getattr(circuit, kind)(), strict=True)
            for source, target in pairs:
                target.copy_(source)
    return hand, circuit


# --- torch.compile, fx, export ---


def test_compile_fullgraph_without_graph_breaks() -> None:
    torch._dynamo.reset()
    model = small_model()
    x = image()
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1

    model.eval()
    expected = model(x)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), expected)
    torch._dynamo.reset()


def view(x: Tensor) -> Tensor:
    return x.view(x.shape)


ALIASING: dict[str, Callable[[], Circuit]] = {
    # A skip saved right before a block: repeat 0 gets the same tensor as input and as skip
    # (the shared repro's "save_before_block").
    "save_before_block": lambda: Circuit(
        SaveInput("r"),
        StartBlock("b", num_repeats=3),
        nn.Linear(4, 4),
        GetInput("r"),
        EndBlock("b"),
    ),
    # The block's input is a view of the skip it reads (the repro's "view_of_skip").
    "view_of_skip": lambda: Circuit(
        SaveInput("r"),
        view,
        StartBlock("b", num_repeats=3),
        nn.Linear(4, 4),
        GetInput("r"),
        EndBlock("b"),
    ),
    # A repeat that returns (a view of) its input.
    "view_body": lambda: Circuit(
        nn.Linear(4, 4), StartBlock("b", num_repeats=2), view, EndBlock("b")
    ),
    "identity_body": lambda: Circuit(
        nn.Linear(4, 4),
        StartBlock("b", num_repeats=3),
        nn.Identity(),
        EndBlock("b"),
        nn.Linear(4, 4),
    ),
    # A repeat that returns the outer skip itself.
    "returns_skip": lambda: Circuit(
        nn.Linear(4, 4),
        SaveInput("r"),
        nn.Tanh(),
        StartBlock("b", num_repeats=3),
        nn.Linear(4, 4),
        GetInput("r", op=lambda current, saved: saved),
        EndBlock("b"),
    ),
    # Two skips holding the same tensor, both read in the block.
    "two_names_one_tensor": lambda: Circuit(
        nn.Linear(4, 4),
        SaveInput("a"),
        SaveInput("b"),
        StartBlock("blk", num_repeats=3),
        nn.Linear(4, 4),
        GetInput("a"),
        GetInput("b", op="mul"),
        EndBlock("blk"),
    ),
}


@pytest.mark.parametrize("name", ALIASING)
def test_compile_fullgraph_with_aliased_inputs_and_outputs(name: str) -> None:
    # Dynamo only (backend="eager"): cheap, and it is where the tracing happens.
    torch._dynamo.reset()
    model = ALIASING[name]().eval()
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert_same(compiled(x), model(x))
    torch._dynamo.reset()


@pytest.mark.parametrize("name", ALIASING)
def test_compile_regions_with_aliasing_train_bit_for_bit_like_eager(name: str) -> None:
    torch.manual_seed(0)
    eager = ALIASING[name]()
    traced = copy.deepcopy(eager)
    regions.allow_in_training(traced)  # aot_eager has no Inductor buffer reuse to avoid
    expected_region = name != "two_names_one_tensor"  # two outer skips: unrolled
    assert (set(regions.explain(traced).values()) == {"region"}) is expected_region
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = x.detach().clone().requires_grad_()
    expected = eager(x)
    expected.square().sum().backward()
    torch._dynamo.reset()
    output = torch.compile(traced, fullgraph=True, backend="aot_eager")(y)
    output.square().sum().backward()
    torch._dynamo.reset()
    assert_same(output, expected)
    assert_same(y.grad, x.grad)  # type: ignore[arg-type]
    for (key, p), q in zip(eager.named_parameters(), traced.parameters(), strict=True):
        if p.grad is None:  # "returns_skip": the block's layers do not reach the output
            assert q.grad is None, key
        else:
            assert q.grad is not None and torch.equal(q.grad, p.grad), key


def test_compile_checkpointed_block_trains_like_eager() -> None:
    torch._dynamo.reset()
    eager = Circuit(
        nn.Linear(4, 4),
        SaveInput("x0"),
        StartBlock("b", num_repeats=2, checkpoint=True),
        SaveInput("r"),
        nn.Linear(4, 4),
        nn.BatchNorm1d(4),
        nn.Tanh(),
        GetInput("r"),
        GetInput("x0", op="mul"),
        EndBlock("b"),
    )
    traced = copy.deepcopy(eager)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    expected = eager(x)
    expected.sum().backward()
    output = torch.compile(traced, fullgraph=True, backend="aot_eager")(x)
    output.sum().backward()
    torch.testing.assert_close(output, expected)
    for (name, p), q in zip(eager.named_parameters(), traced.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    for (name, b), c in zip(eager.named_buffers(), traced.buffers(), strict=True):
        torch.testing.assert_close(c, b, msg=name)  # BatchNorm updated once per repeat
    torch._dynamo.reset()


@pytest.mark.parametrize("name", MODELS)
def test_fx_symbolic_trace(name: str) -> None:
    build, make_input = MODELS[name]
    model = build().eval()
    traced = torch.fx.symbolic_trace(model)
    x = make_input()
    assert_same(traced(x), model(x))
    # The graph is flat: every repeat's layers appear, under their keys.
    targets = {node.target for node in traced.graph.nodes if node.op == "call_module"}
    if name == "small":
        assert {"stage.0.6", "stage.1.6", "stage.0.inner.0.11", "stage.1.14.transform"} <= targets
    else:
        assert {"2.1", "stack.0.5.1", "stack.1.5.1", "stack.1.6"} <= targets


@pytest.mark.parametrize("name", MODELS)
def test_export_without_warnings(name: str) -> None:
    build, make_input = MODELS[name]
    model = build().eval()
    x = make_input()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exported = torch.export.export(model, (x,))
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "attribute" in m or "assign" in m], messages
    assert_same(exported.module()(x), model(x))


# --- dtypes, devices, autocast, modes ---


def test_to_float64_converts_every_repeat_and_transform() -> None:
    hand, circuit = matched_pair()
    hand.to(torch.float64)
    circuit.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in circuit.parameters())
    x = image().double()
    assert_same(circuit(x), hand(x))
    assert circuit(x).dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype: torch.dtype) -> None:
    hand, circuit = matched_pair()
    x = image()
    hand.to(dtype)
    try:
        expected = hand(x.to(dtype))
    except (RuntimeError, NotImplementedError) as error:
        pytest.skip(f"{dtype} is not supported on this CPU by plain PyTorch either: {error}")
    model = circuit.half() if dtype == torch.float16 else circuit.bfloat16()
    assert all(p.dtype == dtype for p in model.parameters())
    output = model(x.to(dtype))
    assert output.dtype == dtype
    assert_same(output, expected)


def test_autocast_bfloat16_on_cpu() -> None:
    hand, circuit = matched_pair()
    x = image()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = hand(x)
        output = circuit(x)
    assert output.dtype == torch.bfloat16
    assert_same(output, expected)


def test_train_and_eval_reach_every_repeat_and_transform() -> None:
    hand, circuit = matched_pair()
    x = image()
    circuit.eval()
    hand.eval()
    assert not any(m.training for m in circuit.modules())
    state = {k: v.clone() for k, v in circuit.state_dict().items()}
    assert_same(circuit(x), hand(x))
    for key, value in circuit.state_dict().items():
        assert torch.equal(value, state[key]), f"{key} changed in eval mode"
    circuit.train()
    hand.train()
    assert all(m.training for m in circuit.modules())
    assert_same(circuit(x), hand(x))
    bn = circuit.get_submodule("stage.1.7")
    assert isinstance(bn, nn.BatchNorm2d)
    assert bn.num_batches_tracked.item() == 1


# --- Copies, saving, loading ---


@pytest.mark.parametrize("name", MODELS)
def test_deepcopy_is_independent(name: str) -> None:
    build, make_input = MODELS[name]
    model = build().eval()
    clone = copy.deepcopy(model)
    x = make_input()
    assert_same(clone(x), model(x))
    model_params = list(model.parameters())
    clone_params = list(clone.parameters())
    assert len(model_params) == len(clone_params)
    assert not {id(p) for p in model_params} & {id(p) for p in clone_params}
    expected = model(x)
    with torch.no_grad():
        for p in clone.parameters():
            p.add_(1.0)
    assert_same(model(x), expected)
    assert not torch.equal(clone(x), expected)


def test_deepcopy_keeps_shared_weights_shared() -> None:
    clone = copy.deepcopy(small_model())
    for stage in ("stage.0", "stage.1"):
        assert list(clone.get_submodule(f"{stage}.inner")._modules) == ["0"]


@pytest.mark.parametrize("name", MODELS)
def test_torch_save_and_load_whole_model(name: str, tmp_path: Path) -> None:
    build, make_input = MODELS[name]
    model = build().eval()
    path = tmp_path / "model.pt"
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)
    assert isinstance(loaded, Circuit)
    x = make_input()
    assert_same(loaded(x), model(x))
    assert list(loaded.state_dict()) == list(model.state_dict())


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip_into_a_fresh_circuit(name: str) -> None:
    build, make_input = MODELS[name]
    model = build()
    x = make_input()
    model(x).sum().backward()  # updates BatchNorm statistics
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(0.1 * p.grad)  # type: ignore[operator]
    fresh = build()
    assert not all(
        torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters(), strict=True)
    )
    fresh.load_state_dict(model.state_dict())  # strict: same keys, same shapes
    model.eval()
    fresh.eval()
    assert_same(fresh(x), model(x))
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_nested_circuit_keys_and_order() -> None:
    keys = list(nested_model().state_dict())
    assert keys == [
        "0.weight",
        "0.bias",
        "2.1.weight",
        "2.1.bias",
        "stack.0.5.1.weight",
        "stack.0.5.1.bias",
        "stack.0.6.weight",
        "stack.0.6.bias",
        "stack.1.5.1.weight",
        "stack.1.5.1.bias",
        "stack.1.6.weight",
        "stack.1.6.bias",
    ]


def test_parameters_enumerate_in_forward_order() -> None:
    names = [name for name, _ in small_model().named_parameters()]

    def stage(repeat: int) -> list[str]:
        return [
            f"stage.{repeat}.6.weight",
            f"stage.{repeat}.6.bias",
            f"stage.{repeat}.7.weight",
            f"stage.{repeat}.7.bias",
            f"stage.{repeat}.inner.0.11.weight",  # shared: one repeat only
            f"stage.{repeat}.inner.0.11.bias",
            f"stage.{repeat}.14.transform.weight",
            f"stage.{repeat}.14.transform.bias",
        ]

    assert names == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        *stage(0),
        *stage(1),
        "20.weight",
        "20.bias",
    ]
