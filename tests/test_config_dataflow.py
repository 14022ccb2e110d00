"""Configs of what goes beyond one tensor: named inputs, reads of several names, outputs, push
and pop, `PerRepeat` (as a layer, an op and a transform) and named layers round trip exactly,
`load` restores exactly the outputs, and what cannot be described is refused with its place."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from _outputs import assert_same_outputs, round_trip
from torch import Tensor, nn

import torch_circuit
from torch_circuit import (
    Circuit,
    EndBlock,
    GetInput,
    Output,
    PerRepeat,
    SaveInput,
    StartBlock,
)

# --- Registered ops, modules and factories (the registry is global: names are unique) ---


@torch_circuit.register
def cfd_scaled(x: Tensor, mask: Tensor | None) -> Tensor:
    return x if mask is None else x * mask


@torch_circuit.register
def cfd_mix(x: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return x + k * v


@torch_circuit.register
class CfdAttend(nn.Module):
    """An op with parameters reading two names: `x + proj(memory) * mask`."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, memory: Tensor, mask: Tensor) -> Tensor:
        return x + self.proj(memory) * mask


@torch_circuit.register
class CfdGate(nn.Module):
    """An op with parameters: `x * sigmoid(w * saved)`, `w` filled with `init`."""

    def __init__(self, width: int, init: float = 1.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((width,), init))

    def forward(self, x: Tensor, saved: Tensor) -> Tensor:
        return x * torch.sigmoid(self.w * saved)


@torch_circuit.register
def cfd_widen(index: int, count: int) -> nn.Module:
    return nn.Linear(4 * (index + 1), 4 * (index + 2))


@torch_circuit.register
def cfd_drop(index: int, count: int) -> nn.Module:
    return nn.Dropout(0.5 * index / max(count - 1, 1))


@torch_circuit.register
def cfd_gate(index: int, count: int) -> nn.Module:
    return CfdGate(4, init=float(index + 1))


@torch_circuit.register
def cfd_project(index: int, count: int) -> nn.Module:
    return nn.Linear(4, 4, bias=index % 2 == 0)


@torch_circuit.register(name="cfd.Level")
class CfdLevel(nn.Module):
    """A registered class used as a factory: `CfdLevel(index, count)`."""

    def __init__(self, index: int, count: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((4,), index / count))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def lin(width: int = 4) -> nn.Linear:
    return nn.Linear(width, width)


# --- Named inputs ---


def test_required_inputs_round_trip_and_bind_as_in_python() -> None:
    model = Circuit(lin(), GetInput("mask", op=cfd_scaled), lin(), inputs=("mask",))
    rebuilt, config = round_trip(model)
    assert config["inputs"] == ["mask"]
    assert config["layers"][1] == {"GetInput": {"name": "mask", "op": "cfd_scaled"}}
    assert rebuilt.input_nodes == model.input_nodes
    x, mask = torch.randn(3, 4), (torch.rand(3, 4) > 0.5).float()
    rebuilt.load_state_dict(model.state_dict())
    assert_same_outputs(model, rebuilt, x, mask)
    assert_same_outputs(model, rebuilt, x, mask=mask)
    with pytest.raises(TypeError, match=r"missing the input 'mask'"):
        rebuilt(x)


def test_inputs_with_defaults_round_trip() -> None:
    layers = (
        GetInput("mask", op=cfd_scaled),
        StartBlock("b", num_repeats=2),
        GetInput("mask", op=cfd_scaled),  # an input is visible in every repeat
        lin(),
        GetInput("scale", op="mul"),
        EndBlock("b"),
    )
    defaults = {"mask": None, "scale": 0.5, "flag": True}
    with pytest.warns(UserWarning, match=r"input 'flag' is never read"):
        model = Circuit(*layers, inputs=defaults)
    with pytest.warns(UserWarning, match=r"input 'flag' is never read"):
        rebuilt, config = round_trip(model)
    assert config["inputs"] == defaults
    assert [(n.name, n.required, n.default) for n in rebuilt.input_nodes] == [
        (n.name, n.required, n.default) for n in model.input_nodes
    ]
    rebuilt.load_state_dict(model.state_dict())
    assert_same_outputs(model, rebuilt, torch.randn(2, 4))  # the defaults
    assert_same_outputs(model, rebuilt, torch.randn(2, 4), mask=torch.rand(2, 4), scale=2.0)


def test_a_nested_circuit_keeps_its_own_inputs() -> None:
    inner = Circuit(GetInput("mask", op=cfd_scaled), lin(), inputs={"mask": None})
    model = Circuit(lin(), inner)
    rebuilt, config = round_trip(model)
    assert config["layers"][1] == {
        "Circuit": {
            "inputs": {"mask": None},
            "layers": [{"GetInput": {"name": "mask", "op": "cfd_scaled"}}, config_of(lin())],
        }
    }
    assert "inputs" not in config
    rebuilt.load_state_dict(model.state_dict())
    assert_same_outputs(model, rebuilt, torch.randn(2, 4))


def config_of(layer: nn.Module) -> Any:
    return Circuit(layer).to_config()["layers"][0]


# --- Reads of several names ---


def test_reads_of_several_names_round_trip() -> None:
    model = Circuit(
        lin(),
        SaveInput("k"),
        lin(),
        SaveInput("v"),
        GetInput(("k", "v"), op=cfd_mix),
        GetInput(("memory", "mask"), op=CfdAttend(4)),
        GetInput(("v",), op=torch.add),  # a tuple of one name stays a tuple
        inputs=("memory", "mask"),
    )
    rebuilt, config = round_trip(model)
    layers = config["layers"]
    assert layers[4] == {"GetInput": {"name": ["k", "v"], "op": "cfd_mix"}}
    assert layers[5] == {
        "GetInput": {"name": ["memory", "mask"], "op": {"CfdAttend": {"width": 4}}}
    }
    assert layers[6] == {"GetInput": {"name": ["v"]}}
    assert rebuilt.get_submodule("6").name == ("v",)
    rebuilt.load_state_dict(model.state_dict())
    x, memory, mask = torch.randn(2, 4), torch.randn(2, 4), torch.rand(2, 4)
    assert_same_outputs(model, rebuilt, x, memory, mask)


# --- Outputs ---


def outputs_model() -> Circuit:
    return Circuit(
        lin(),
        Output("stem"),
        StartBlock("outer", num_repeats=2),
        StartBlock("inner", num_repeats=3),
        lin(),
        nn.Dropout(0.2),
        Output("hidden"),  # one tensor per execution: 6, in execution order
        EndBlock("inner"),
        EndBlock("outer"),
        StartBlock("tied", num_repeats=2, share_weights=True),
        lin(),
        Output("tied_out"),
        EndBlock("tied"),
        nn.Tanh(),
        Output("last"),
    )


def test_outputs_round_trip_top_level_and_in_blocks() -> None:
    torch.manual_seed(0)
    model = outputs_model()
    rebuilt, config = round_trip(model)
    assert config["layers"][1] == {"Output": "stem"}
    assert config["layers"][6] == {"Output": "hidden"}
    rebuilt.load_state_dict(model.state_dict())
    out = rebuilt(torch.randn(2, 4))
    assert list(out) == ["stem", "hidden", "tied_out", "last"]
    assert len(out["hidden"]) == 6 and len(out["tied_out"]) == 2
    assert_same_outputs(model, rebuilt, torch.randn(2, 4))


def test_load_restores_exactly_the_outputs(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = outputs_model()
    x = torch.randn(5, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # weights that are not the initial ones
        optimizer.zero_grad()
        model(x)["last"].square().mean().backward()
        optimizer.step()
    loaded = torch_circuit.load(torch_circuit.save(model, tmp_path / "outputs"))
    assert loaded.to_config() == model.to_config()
    assert_same_outputs(model, loaded, x)


# --- Skips that outlive their block: push and pop ---


def test_push_and_pop_round_trip() -> None:
    model = Circuit(
        nn.Conv2d(1, 4, 3, padding=1),
        StartBlock("down", num_repeats=2),
        nn.Conv2d(4, 4, 3, padding=1),
        SaveInput("skip", push=True),
        nn.MaxPool2d(2),
        EndBlock("down"),
        StartBlock("up", num_repeats=2),
        nn.Upsample(scale_factor=2),
        GetInput("skip", op="cat", pop=True),
        nn.Conv2d(8, 4, 3, padding=1),
        EndBlock("up"),
    )
    rebuilt, config = round_trip(model)
    assert config["layers"][3] == {"SaveInput": {"name": "skip", "push": True}}
    assert config["layers"][8] == {"GetInput": {"name": "skip", "op": "cat", "pop": True}}
    rebuilt.load_state_dict(model.state_dict())
    assert_same_outputs(model, rebuilt, torch.randn(2, 1, 8, 8))


# --- PerRepeat ---


def test_per_repeat_layers_round_trip() -> None:
    torch.manual_seed(2)
    model = Circuit(
        PerRepeat(cfd_widen),  # outside any block: (0, 1), 4 -> 8
        nn.Linear(8, 4),
        StartBlock("stage", num_repeats=3),
        PerRepeat(cfd_widen),  # 4 -> 8, 8 -> 12, 12 -> 16: widths differ per repeat
        nn.ReLU(),
        PerRepeat(cfd_widen),
        EndBlock("stage"),
        StartBlock("outer", num_repeats=2),
        StartBlock("inner", num_repeats=2),
        nn.Linear(16, 16),
        ("drop", PerRepeat(cfd_drop)),  # index 0..3 across the nested repeats, count 4
        PerRepeat(CfdLevel),
        EndBlock("inner"),
        EndBlock("outer"),
    )
    # The widths above only chain for this model's repeat 0; these layers never run together.
    rebuilt, config = round_trip(model)
    layers = config["layers"]
    assert layers[0] == layers[3] == {"PerRepeat": "cfd_widen"}
    assert layers[10] == ["drop", {"PerRepeat": "cfd_drop"}]
    assert layers[11] == {"PerRepeat": "cfd.Level"}
    widths = [rebuilt.get_submodule(f"stage.{r}.3").in_features for r in range(3)]
    assert widths == [4, 8, 12]
    rates = [rebuilt.get_submodule(f"outer.{o}.inner.{i}.drop").p for o in (0, 1) for i in (0, 1)]
    assert rates == pytest.approx([0.0, 0.5 / 3, 1.0 / 3, 0.5])
    assert rebuilt.get_submodule("outer.1.inner.1.11").scale[0].item() == 0.75
    assert repr(rebuilt) == repr(model)


def test_a_per_repeat_stochastic_depth_computes_the_same() -> None:
    torch.manual_seed(3)
    model = Circuit(
        StartBlock("layer", num_repeats=4),
        SaveInput("x"),
        lin(),
        nn.GELU(),
        PerRepeat(cfd_drop),
        GetInput("x"),
        EndBlock("layer"),
    )
    rebuilt, _ = round_trip(model)
    rebuilt.load_state_dict(model.state_dict())
    assert_same_outputs(model, rebuilt, torch.randn(8, 4))


def test_per_repeat_ops_and_transforms_round_trip() -> None:
    torch.manual_seed(4)
    model = Circuit(
        StartBlock("b", num_repeats=3),
        SaveInput("x", transform=PerRepeat(cfd_project)),
        lin(),
        GetInput("x", op=PerRepeat(cfd_gate)),
        SaveInput("y"),
        nn.Tanh(),
        GetInput("y", op=CfdGate(4), transform=PerRepeat(cfd_project)),
        EndBlock("b"),
    )
    rebuilt, config = round_trip(model)
    layers = config["layers"]
    assert layers[1] == {"SaveInput": {"name": "x", "transform": {"PerRepeat": "cfd_project"}}}
    assert layers[3] == {"GetInput": {"name": "x", "op": {"PerRepeat": "cfd_gate"}}}
    assert layers[6] == {
        "GetInput": {
            "name": "y",
            "op": {"CfdGate": {"width": 4}},
            "transform": {"PerRepeat": "cfd_project"},
        }
    }
    assert [rebuilt.get_submodule(f"b.{r}.3.op").w[0].item() for r in range(3)] == [1, 2, 3]
    assert [rebuilt.get_submodule(f"b.{r}.1.transform").bias is None for r in range(3)] == [
        False,
        True,
        False,
    ]
    rebuilt.load_state_dict(model.state_dict())
    assert_same_outputs(model, rebuilt, torch.randn(2, 4))


# --- Named layers ---


def test_named_layers_round_trip_with_their_keys() -> None:
    model = Circuit(
        ("stem", nn.Conv2d(3, 4, 3, padding=1)),
        StartBlock("stage", num_repeats=2),
        ("skip", SaveInput("r")),  # markers may be named too
        ("conv", nn.Conv2d(4, 4, 3, padding=1)),
        ("add", GetInput("r")),
        ("tap", Output("features")),
        EndBlock("stage"),
        ("head", Circuit(nn.AdaptiveAvgPool2d(1), ("flat", nn.Flatten()))),
        nn.Linear(4, 2),
        Output("logits"),
    )
    rebuilt, config = round_trip(model)
    layers = config["layers"]
    assert layers[0] == ["stem", config_of(nn.Conv2d(3, 4, 3, padding=1))]
    assert layers[2] == ["skip", {"SaveInput": "r"}]
    assert layers[4] == ["add", {"GetInput": "r"}]
    assert layers[5] == ["tap", {"Output": "features"}]
    assert layers[7][0] == "head" and layers[7][1]["Circuit"]["layers"][1] == ["flat", "Flatten"]
    assert layers[8] == config_of(nn.Linear(4, 2))
    assert list(rebuilt.state_dict()) == [
        "stem.weight",
        "stem.bias",
        "stage.0.conv.weight",
        "stage.0.conv.bias",
        "stage.1.conv.weight",
        "stage.1.conv.bias",
        "8.weight",
        "8.bias",
    ]
    assert isinstance(rebuilt.get_submodule("stage.1.add"), GetInput)
    rebuilt.load_state_dict(model.state_dict())
    assert_same_outputs(model, rebuilt, torch.randn(2, 3, 5, 5))


def test_hand_written_forms_of_the_new_entries() -> None:
    model = Circuit.from_config(
        {
            "format": "torch-circuit",
            "version": 1,
            "inputs": ["memory", "mask"],
            "layers": [
                {"PerRepeat": {"factory": "cfd_widen"}},  # mapping form: 4 -> 8
                {"PerRepeat": ["cfd_drop"]},  # positional form
                ["fc", {"Linear": [8, 4]}],
                {"SaveInput": ["k", None]},
                {"GetInput": [["memory", "mask"], {"CfdAttend": [4]}]},
                {"GetInput": {"name": "k", "op": {"PerRepeat": {"factory": "cfd_gate"}}}},
                {"Output": {"name": "y"}},
            ],
        }
    )
    assert isinstance(model.get_submodule("0"), nn.Linear)
    assert isinstance(model.get_submodule("fc"), nn.Linear)
    assert isinstance(model.get_submodule("5.op"), CfdGate)
    out = model(torch.randn(2, 4), torch.randn(2, 4), mask=torch.ones(2, 4))
    assert list(out) == ["y"] and out["y"].shape == (2, 4)


# --- Refused by to_config: the place, the reason, the fix ---


def test_an_unregistered_factory_is_refused_with_its_place() -> None:
    model = Circuit(
        StartBlock("b", num_repeats=2),
        lin(),
        PerRepeat(lambda i, n: nn.Dropout(0.1 * i)),
        EndBlock("b"),
    )
    with pytest.raises(
        ValueError,
        match=r"^to_config cannot describe layers\[2\] \(in block 'b'\): its PerRepeat factory "
        r"a lambda is not registered, .*; define it as a function \(index, count\) -> module "
        r"and register it",
    ):
        model.to_config()

    def local(index: int, count: int) -> nn.Module:
        return CfdGate(4)

    model = Circuit(SaveInput("x"), lin(), GetInput("x", op=PerRepeat(local)))
    with pytest.raises(
        ValueError,
        match=r"layers\[2\]\.GetInput\.op: its PerRepeat factory .*local is not registered",
    ):
        model.to_config()


def test_a_per_repeat_module_changed_after_construction_is_refused() -> None:
    model = Circuit(StartBlock("b", num_repeats=3), lin(), PerRepeat(cfd_drop), EndBlock("b"))
    model.get_submodule("b.1.2").p = 0.9
    with pytest.raises(
        ValueError,
        match=r"layers\[2\] \(in block 'b'\): the module PerRepeat\(cfd_drop\) built for index "
        r"1 of 3 is not what the factory builds for it: its attribute 'p' is 0.9, but the "
        r"module its description builds has 0.25",
    ):
        model.to_config()
    model = Circuit(SaveInput("x"), GetInput("x", op=PerRepeat(cfd_gate)))
    model.get_submodule("1.op").register_forward_hook(lambda *args: None)
    with pytest.raises(
        ValueError, match=r"layers\[1\]\.GetInput\.op: .*index 0 of 1 .*1 forward hooks"
    ):
        model.to_config()


def test_repeats_still_differ_only_where_per_repeat_builds_them() -> None:
    model = Circuit(StartBlock("b", num_repeats=2), PerRepeat(cfd_drop), lin(), EndBlock("b"))
    model.to_config()  # the dropout rates differ by design
    model.get_submodule("b.1.2").in_features = 7
    with pytest.raises(
        ValueError,
        match=r"layers\[0\] \(in block 'b'\): repeat 1 of block 'b' is not a fresh copy of "
        r"repeat 0: its attribute 'in_features' \(at 2\) is 7",
    ):
        model.to_config()


def test_an_input_default_that_is_not_plain_data_is_refused() -> None:
    model = Circuit(GetInput("mask", op=cfd_scaled), inputs={"mask": torch.ones(1)})
    with pytest.raises(
        ValueError,
        match=r"^to_config cannot describe inputs.mask: its default is a Tensor, .*declare the "
        r"default None",
    ):
        model.to_config()
    nested = Circuit(lin(), model)
    with pytest.raises(ValueError, match=r"describe layers\[1\]\.Circuit\.inputs\.mask"):
        nested.to_config()


def test_hooks_on_outputs_are_refused() -> None:
    model = Circuit(lin(), Output("y"))
    model.get_submodule("1").register_forward_hook(lambda *args: None)
    with pytest.raises(ValueError, match=r"layers\[1\]: it has 1 forward hooks"):
        model.to_config()


def test_a_failing_factory_in_a_file_says_where() -> None:
    @torch_circuit.register(name="cfd_failing")
    def failing(index: int, count: int) -> nn.Module:
        if index == 1:
            raise ValueError("no second level")
        return nn.Identity()

    document = {
        "format": "torch-circuit",
        "version": 1,
        "layers": [
            {"StartBlock": {"name": "b", "num_repeats": 2}},
            {"PerRepeat": "cfd_failing"},
            {"EndBlock": "b"},
        ],
    }
    with (
        warnings.catch_warnings(),
        pytest.raises(
            ValueError,
            match=r"^layers: no second level \(torch_circuit: PerRepeat\(failing\) at position 1, "
            r"building index 1 of 2 in repeat 1 of 2 of block 'b'\)",
        ),
    ):
        Circuit.from_config(document)
