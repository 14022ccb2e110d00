"""`to_config` / `from_config`: every marker and option round trips exactly, registered classes
and functions are described by name, and what cannot be described is refused with its place."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from _outputs import assert_same_outputs, round_trip
from torch import Tensor, nn

import torch_circuit
from torch_circuit import Circuit, EndBlock, GetInput, LambdaLayer, SaveInput, StartBlock

# --- Registered things these tests use (the registry is global: names are unique here) ---


@torch_circuit.register
class CfgScale(nn.Module):
    """A learned per-channel scale."""

    def __init__(self, channels: int, init: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels, 1, 1), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight


@torch_circuit.register(name="cfg.Wrap")
class CfgWrap(nn.Module):
    """Arguments of every kind a registered class may take."""

    def __init__(
        self,
        inner: nn.Module,
        sizes: list[int],
        *extra: nn.Module,
        options: dict[str, Any] | None = None,
        norm: type[nn.Module] = nn.LayerNorm,
        act: Any = None,
        **more: Any,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.sizes = sizes
        self.extra = nn.ModuleList(extra)
        self.options = options
        self.norm = norm(sizes[-1])
        self.act = act
        self.more = more

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.inner(x))
        for layer in self.extra:
            x = layer(x)
        return x if self.act is None else self.act(x)


@torch_circuit.register
class CfgGate(nn.Module):
    """An op with parameters: `x * sigmoid(w * saved)`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(channels, 1, 1))

    def forward(self, x: Tensor, saved: Tensor) -> Tensor:
        return x * torch.sigmoid(self.w * saved)


@torch_circuit.register
def cfg_half_add(x: Tensor, saved: Tensor) -> Tensor:
    return x + 0.5 * saved


@torch_circuit.register(name="cfg_double")
def double(x: Tensor) -> Tensor:
    return 2 * x


def same_outputs(a: nn.Module, b: nn.Module, x: Tensor) -> None:
    """With `b` given `a`'s state: bitwise equal outputs in train and eval mode."""
    b.load_state_dict(a.state_dict())
    assert_same_outputs(a, b, x)


def every_marker() -> Circuit:
    return Circuit(
        nn.Conv2d(3, 8, 3, padding=1),
        SaveInput("stem", transform=nn.Conv2d(8, 4, 1)),
        StartBlock("stage", num_repeats=2),
        SaveInput("r"),
        nn.Conv2d(8, 8, 3, padding=1),
        StartBlock("inner", num_repeats=2, share_weights=True),
        nn.BatchNorm2d(8),
        EndBlock("inner"),
        GetInput("r", op=torch.mul),
        SaveInput("r"),
        nn.ReLU(),
        GetInput("r", op=cfg_half_add, transform=nn.Identity()),
        EndBlock("stage"),
        StartBlock("ckpt", checkpoint=True),
        SaveInput("s"),
        CfgScale(8, init=0.5),
        GetInput("s", op=CfgGate(8)),
        EndBlock("ckpt"),
        GetInput("stem", op="cat"),
        LambdaLayer(double),
        double,
        Circuit(nn.Conv2d(12, 4, 1), SaveInput("n"), nn.Tanh(), GetInput("n", op=torch.cat)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def test_every_marker_and_option_round_trips() -> None:
    torch.manual_seed(0)
    model = every_marker()
    rebuilt, config = round_trip(model)
    layers = config["layers"]
    assert layers[1] == {
        "SaveInput": {
            "name": "stem",
            "transform": {"Conv2d": {"in_channels": 8, "out_channels": 4, "kernel_size": 1}},
        }
    }
    assert layers[2] == {"StartBlock": {"name": "stage", "num_repeats": 2}}
    assert layers[5] == {"StartBlock": {"name": "inner", "num_repeats": 2, "share_weights": True}}
    assert layers[8] == {"GetInput": {"name": "r", "op": "mul"}}
    # In a field a bare string is a string, so a module there is always a mapping.
    transform = {"Identity": {}}
    assert layers[11] == {"GetInput": {"name": "r", "op": "cfg_half_add", "transform": transform}}
    assert layers[13] == {"StartBlock": {"name": "ckpt", "checkpoint": True}}
    assert layers[15] == {"CfgScale": {"channels": 8, "init": 0.5}}
    assert layers[16] == {"GetInput": {"name": "s", "op": {"CfgGate": {"channels": 8}}}}
    assert layers[18] == {"GetInput": {"name": "stem", "op": "cat"}}
    assert layers[19] == layers[20] == {"LambdaLayer": "cfg_double"}
    assert layers[21]["Circuit"]["layers"][3] == {"GetInput": {"name": "n", "op": "cat"}}
    assert repr(rebuilt) == repr(model)
    same_outputs(model, rebuilt, torch.randn(2, 3, 6, 6))


def test_the_same_seed_builds_the_same_weights_as_python() -> None:
    torch.manual_seed(3)
    model = every_marker()
    state = torch.random.get_rng_state()
    config = model.to_config()  # describing (and rebuilding on meta) draws no random numbers
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(3)
    rebuilt = Circuit.from_config(config)
    for (key, a), b in zip(model.state_dict().items(), rebuilt.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_registered_class_with_every_kind_of_argument() -> None:
    wrap = CfgWrap(
        nn.Linear(4, 6),
        [4, 6],
        nn.ReLU(),
        nn.Dropout(0.1),
        options={"eps": 1e-3, "names": ["a", "b"]},
        norm=nn.RMSNorm,
        act=double,
        flag=True,
    )
    model = Circuit(wrap)
    rebuilt, config = round_trip(model)
    assert config["layers"][0] == {
        "cfg.Wrap": {
            "inner": {"Linear": {"in_features": 4, "out_features": 6}},
            "sizes": [4, 6],
            "extra": [{"ReLU": {}}, {"Dropout": {"p": 0.1}}],
            "options": {"dict": {"eps": 1e-3, "names": ["a", "b"]}},
            "norm": {"class": "RMSNorm"},
            "act": {"function": "cfg_double"},
            "flag": True,
        }
    }
    inner = rebuilt.get_submodule("0")
    assert isinstance(inner, CfgWrap) and inner.options == {"eps": 1e-3, "names": ["a", "b"]}
    assert inner.more == {"flag": True} and inner.act is double
    same_outputs(model, rebuilt, torch.randn(3, 4))


def test_positional_arguments_are_recorded_by_name() -> None:
    config = Circuit(CfgScale(3, 2.0)).to_config()
    assert config["layers"] == [{"CfgScale": {"channels": 3, "init": 2.0}}]


def test_hand_written_argument_forms() -> None:
    model = Circuit.from_config(
        {
            "format": "torch-circuit",
            "version": 1,
            "layers": [
                {"Conv2d": [3, 4, 3]},  # positional
                {"BatchNorm2d": 4},  # one positional
                "ReLU",  # no arguments
                {"Dropout": None},
                {
                    "Sequential": {
                        "proj": {"Conv2d": {"in_channels": 4, "out_channels": 2, "kernel_size": 1}}
                    }
                },
                {"SaveInput": ["x"]},
                {"CfgScale": [2]},
                "cfg_double",  # a registered function as a layer
                {"GetInput": ["x", "add"]},
            ],
        }
    )
    assert isinstance(model.get_submodule("4.proj"), nn.Conv2d)
    assert isinstance(model.get_submodule("7"), LambdaLayer)
    assert model(torch.randn(1, 3, 5, 5)).shape == (1, 2, 3, 3)


def test_tied_parameters_and_a_module_used_twice() -> None:
    embed = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = embed.weight
    shared = nn.Linear(4, 4)
    model = Circuit(embed, shared, nn.ReLU(), shared, head)
    rebuilt, config = round_trip(model)
    assert config["tied"] == {"3.weight": "1.weight", "3.bias": "1.bias", "4.weight": "0.weight"}
    assert rebuilt.get_submodule("4").weight is rebuilt.get_submodule("0").weight
    assert rebuilt.get_submodule("3").bias is rebuilt.get_submodule("1").bias
    same_outputs(model, rebuilt, torch.randint(0, 10, (2, 3)))


def test_dtype_is_described_once_for_the_model() -> None:
    model = Circuit(nn.Linear(3, 3), nn.BatchNorm1d(3)).half()
    rebuilt, config = round_trip(model)
    assert config["dtype"] == "float16"
    assert {t.dtype for t in rebuilt.parameters()} == {torch.float16}
    assert rebuilt.get_submodule("1").num_batches_tracked.dtype == torch.long
    assert "dtype" not in Circuit(nn.Linear(3, 3)).to_config()


def test_an_untrusted_config_can_be_sized_on_the_meta_device() -> None:
    config = Circuit(nn.Linear(4, 4), nn.BatchNorm1d(4), CfgScale(4)).to_config()
    with torch.device("meta"):
        model = Circuit.from_config(config)
    assert {t.device.type for t in model.state_dict().values()} == {"meta"}
    assert sum(p.numel() for p in model.parameters()) == 32


def test_a_config_is_the_same_after_deepcopy_and_fresh_repeats() -> None:
    model = Circuit(StartBlock("b", num_repeats=3), nn.Linear(2, 2), nn.Dropout(0.2), EndBlock("b"))
    assert copy.deepcopy(model).to_config() == model.to_config()


def test_a_registered_circuit_subclass_is_described_by_its_arguments() -> None:
    @torch_circuit.register(name="cfg.Stage")
    class Stage(Circuit):
        def __init__(self, width: int, repeats: int = 2) -> None:
            super().__init__(
                StartBlock("b", num_repeats=repeats),
                SaveInput("x"),
                nn.Linear(width, width),
                GetInput("x"),
                EndBlock("b"),
            )

    model = Circuit(Stage(4), nn.ReLU(), Stage(4, repeats=3))
    rebuilt, config = round_trip(model)
    assert config["layers"] == [
        {"cfg.Stage": {"width": 4}},
        "ReLU",
        {"cfg.Stage": {"width": 4, "repeats": 3}},
    ]
    same_outputs(model, rebuilt, torch.randn(2, 4))


# --- Refused by to_config: the place, the reason, the fix ---


def test_a_lambda_op_is_refused() -> None:
    model = Circuit(
        nn.Linear(2, 2), SaveInput("x"), nn.ReLU(), GetInput("x", op=lambda a, b: a - b)
    )
    with pytest.raises(ValueError, match=r"layers\[3\]\.GetInput\.op: it is a lambda.*register"):
        model.to_config()


def test_an_unregistered_class_is_refused() -> None:
    class Local(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x

    model = Circuit(StartBlock("b"), nn.ReLU(), Local(), EndBlock("b"))
    with pytest.raises(
        ValueError,
        match=r"layers\[2\] \(in block 'b'\): its class .*Local is not registered; "
        r"decorate its class with @torch_circuit.register",
    ):
        model.to_config()


def test_attributes_changed_after_construction() -> None:
    # A change the constructor reproduces is described as if it had been passed...
    model = Circuit(nn.Conv2d(3, 3, 3), nn.ReLU())
    model.get_submodule("0").stride = (2, 2)
    assert model.to_config()["layers"][0]["Conv2d"]["stride"] == 2
    # ...one it cannot reproduce is refused, with the difference.
    conv = model.get_submodule("0")
    conv.padding = (1, 1)  # its cached _reversed_padding_repeated_twice still says 0
    with pytest.raises(
        ValueError,
        match=r"layers\[0\]: its description does not rebuild it exactly: its attribute "
        r"'_reversed_padding_repeated_twice' is \(0, 0, 0, 0\), but the module its "
        r"description builds has \(1, 1, 1, 1\) \(was it changed after construction\?\)",
    ):
        model.to_config()
    linear = nn.Linear(2, 3)
    linear.in_features = 5
    with pytest.raises(ValueError, match=r"'weight' has shape \(3, 2\), but .* has \(3, 5\)"):
        Circuit(linear).to_config()
    relu = nn.ReLU()
    relu.note = "mine"
    with pytest.raises(ValueError, match=r"an attribute 'note' that the module .* lacks"):
        Circuit(relu).to_config()


def test_a_repeat_changed_after_construction_is_refused() -> None:
    model = Circuit(StartBlock("b", num_repeats=3), nn.Linear(2, 2), nn.Dropout(0.1), EndBlock("b"))
    model.b[2].get_submodule("2").p = 0.3
    with pytest.raises(
        ValueError, match=r"repeat 2 of block 'b' is not a fresh copy of repeat 0.*PerRepeat"
    ):
        model.to_config()


def test_hooks_are_refused_wherever_they_are() -> None:
    model = Circuit(nn.Linear(2, 2), SaveInput("a"), nn.ReLU(), GetInput("a"))
    handle = model.get_submodule("0").register_forward_hook(lambda *args: None)
    with pytest.raises(
        ValueError, match=r"layers\[0\].*1 forward hooks registered after construction"
    ):
        model.to_config()
    handle.remove()
    handle = model.register_forward_pre_hook(lambda *args: None)
    with pytest.raises(ValueError, match=r"the circuit: it has 1 forward pre hooks.*handle.remove"):
        model.to_config()
    handle.remove()
    model.get_submodule("3").register_forward_hook(lambda *args: None)
    with pytest.raises(ValueError, match=r"layers\[3\]: it has 1 forward hooks"):
        model.to_config()


def test_parametrized_layers_are_refused() -> None:
    layer = nn.utils.parametrizations.weight_norm(nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r"layers\[1\]: its parameters are parametrized"):
        Circuit(nn.ReLU(), layer).to_config()


def test_lazy_modules_mixed_dtypes_and_tensor_arguments_are_refused() -> None:
    with pytest.raises(
        ValueError, match=r"LazyLinear is not described: its parameters are not initialised"
    ):
        Circuit(nn.LazyLinear(3)).to_config()
    mixed = Circuit(nn.Linear(2, 2), nn.Linear(2, 2))
    mixed.get_submodule("1").half()
    with pytest.raises(
        ValueError, match=r"layers\[1\].*'weight' is torch.float16, but .* torch.float32"
    ):
        mixed.to_config()
    with pytest.raises(ValueError, match=r"layers\[0\].cfg.Wrap.options.w: it is a tensor"):
        Circuit(CfgWrap(nn.Identity(), [2], options={"w": torch.ones(2)})).to_config()


def test_instances_built_before_registration_and_unregistered_functions() -> None:
    class Late(nn.Module):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.n = n

    early = Late(3)
    torch_circuit.register(Late, name="cfg.Late")
    with pytest.raises(ValueError, match=r"built before its class was registered"):
        Circuit(early).to_config()
    assert Circuit(Late(4)).to_config()["layers"] == [{"cfg.Late": {"n": 4}}]
    with pytest.raises(
        ValueError, match=r"layers\[0\].LambdaLayer: the function .*gelu is not registered"
    ):
        Circuit(torch.nn.functional.gelu).to_config()


def test_a_subclass_of_circuit_and_a_block_out_of_its_circuit_are_refused() -> None:
    class Net(Circuit):
        pass

    with pytest.raises(ValueError, match=r"to_config describes a Circuit; Net subclasses it"):
        Net(nn.ReLU()).to_config()
    with pytest.raises(ValueError, match=r"layers\[0\]: Net subclasses Circuit .*register Net"):
        Circuit(Net(nn.ReLU())).to_config()
    source = Circuit(StartBlock("b"), nn.ReLU(), EndBlock("b"))
    with pytest.raises(ValueError, match=r"layers\[0\]: it is a Block taken out of the circuit"):
        Circuit(source.b).to_config()


# --- Registration rules ---


def test_register_rules() -> None:
    with pytest.raises(ValueError, match=r"'Linear' is taken by torch.nn.Linear"):
        torch_circuit.register(nn.Linear)
    with pytest.raises(ValueError, match=r"already registered for CfgScale"):
        torch_circuit.register(double, name="CfgScale")
    with pytest.raises(ValueError, match=r"has no name of its own; pass one"):
        torch_circuit.register(lambda x: x)
    with pytest.raises(TypeError, match=r"not an nn.Module"):
        torch_circuit.register(dict)
    with pytest.raises(TypeError, match=r"register its class"):
        torch_circuit.register(nn.ReLU())  # type: ignore[call-overload]
    with pytest.raises(ValueError, match=r"not a valid name"):
        torch_circuit.register(double, name="two words")
    assert torch_circuit.register(double, name="cfg_double") is double  # again: nothing new
    half = torch_circuit.register(lambda x: x / 2, name="cfg_half")
    assert Circuit(half).to_config()["layers"] == [{"LambdaLayer": "cfg_half"}]


def test_a_registered_subclass_records_its_own_arguments() -> None:
    @torch_circuit.register(name="cfg.Sub")
    class Sub(CfgScale):
        def __init__(self, width: int) -> None:
            super().__init__(width, init=3.0)

    class Unregistered(CfgScale):
        pass

    assert Circuit(Sub(2)).to_config()["layers"] == [{"cfg.Sub": {"width": 2}}]
    with pytest.raises(ValueError, match="is not registered"):
        Circuit(Unregistered(2)).to_config()
