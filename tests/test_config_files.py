"""`save`/`load` (JSON config + safetensors, no pickle), JSON and YAML files, the example
configs against their Python-built models, and the CLI on config files."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from _outputs import assert_same_outputs
from safetensors import safe_open
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 - torch's own spelling

import torch_circuit
from torch_circuit import Circuit, EndBlock, GetInput, Output, SaveInput, StartBlock
from torch_circuit.cli import main
from torch_circuit.config.files import to_json, to_yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CONFIGS = EXAMPLES / "configs"


def quickstart() -> Circuit:
    return Circuit(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        StartBlock("resnet", num_repeats=3),
        SaveInput("residual"),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        GetInput("residual", op=torch.add),
        EndBlock("resnet"),
        StartBlock("tied", num_repeats=2, share_weights=True),
        nn.Conv2d(8, 8, 1),
        nn.Dropout(0.2),
        EndBlock("tied"),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def trained(model: nn.Module, x: Tensor) -> nn.Module:
    """A few steps of SGD, so that weights and BatchNorm statistics are not the initial ones."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    return model


def test_save_and_load_restore_exactly_the_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    model = trained(quickstart(), x)
    assert model.get_submodule("1").num_batches_tracked.item() == 3
    folder = torch_circuit.save(model, tmp_path / "qs")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    state = torch.random.get_rng_state()
    loaded = torch_circuit.load(folder)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert loaded.to_config() == model.to_config()
    assert loaded.training
    assert torch.equal(loaded.get_submodule("1").running_var, model.get_submodule("1").running_var)
    assert loaded.get_submodule("1").num_batches_tracked.item() == 3
    assert loaded.tied[0] is loaded.tied[1]  # still one set of weights
    assert_same_outputs(model, loaded, x)


def test_tied_tensors_are_stored_once(tmp_path: Path) -> None:
    embed = nn.Embedding(10, 6)
    head = nn.Linear(6, 10, bias=False)
    head.weight = embed.weight
    model = Circuit(embed, nn.LayerNorm(6), head)
    torch_circuit.save(model, tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as weights:
        assert sorted(weights.keys()) == ["0.weight", "1.bias", "1.weight"]
    loaded = torch_circuit.load(tmp_path)
    assert loaded.get_submodule("2").weight is loaded.get_submodule("0").weight
    assert_same_outputs(model, loaded, torch.randint(0, 10, (2, 5)))


def test_a_half_precision_model_loads_as_half(tmp_path: Path) -> None:
    model = Circuit(nn.Linear(4, 4), nn.GELU()).to(torch.bfloat16)
    loaded = torch_circuit.load(torch_circuit.save(model, tmp_path))
    assert loaded.get_submodule("0").weight.dtype == torch.bfloat16
    assert_same_outputs(model, loaded, torch.randn(2, 4, dtype=torch.bfloat16))


def test_loading_unpickles_nothing_and_imports_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch_circuit.save(quickstart(), tmp_path)
    torch_circuit.load(tmp_path)  # warm: what loading imports on first use is imported now

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading must not unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    modules = set(sys.modules)
    torch_circuit.load(tmp_path)
    assert set(sys.modules) == modules


def test_load_names_what_does_not_fit(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"has no model.safetensors; load takes a folder"):
        torch_circuit.load(tmp_path)
    torch_circuit.save(Circuit(nn.Linear(2, 3)), tmp_path / "a")
    torch_circuit.save(Circuit(nn.Linear(2, 4)), tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").replace(tmp_path / "b" / "model.safetensors")
    with pytest.raises(
        ValueError,
        match=r"0.weight is torch.float32 \(3, 2\), but the config builds torch.float32 \(4, 2\)",
    ):
        torch_circuit.load(tmp_path / "b")
    torch_circuit.save(Circuit(nn.Linear(2, 3), nn.Linear(3, 3)), tmp_path / "c")
    (tmp_path / "c" / "model.safetensors").write_bytes(
        (tmp_path / "b" / "model.safetensors").read_bytes()
    )
    with pytest.raises(ValueError, match=r"missing \['1.weight', '1.bias'\], unexpected \[\]"):
        torch_circuit.load(tmp_path / "c")


def test_save_refuses_what_to_config_refuses(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"layers\[1\].GetInput.op: it is a lambda"):
        torch_circuit.save(Circuit(SaveInput("a"), GetInput("a", op=lambda x, y: x)), tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


# --- JSON and YAML files ---


def test_json_and_yaml_files_round_trip(tmp_path: Path) -> None:
    model = quickstart()
    config = model.to_config()
    for name in ("m.json", "m.yaml", "m.yml"):
        path = torch_circuit.write_config(model, tmp_path / name)
        assert torch_circuit.read_config(path) == config
    # One layer per line, in both formats.
    json_lines = to_json(config).splitlines()
    assert '    {"SaveInput": "residual"},' in json_lines
    assert len(json_lines) == len(config["layers"]) + 6
    yaml_lines = to_yaml(config).splitlines()
    assert "- SaveInput: residual" in yaml_lines
    assert "- StartBlock: {name: tied, num_repeats: 2, share_weights: true}" in yaml_lines
    assert "- AdaptiveAvgPool2d: {output_size: [1, 1]}" in yaml_lines
    assert torch_circuit.read_config(torch_circuit.save(model, tmp_path / "saved")) == config


def test_reading_bad_files(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"format": "torch-circuit",\n "layers": [}')
    with pytest.raises(ValueError, match=r"bad.json: not valid JSON: .* line 2 column"):
        torch_circuit.read_config(bad_json)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("format: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(
        ValueError, match=r"unsafe.yaml: not valid YAML: could not determine a constructor"
    ):
        torch_circuit.read_config(unsafe)
    listing = tmp_path / "list.yaml"
    listing.write_text("- ReLU\n")
    with pytest.raises(ValueError, match=r"a config is a mapping, this file holds a list"):
        torch_circuit.read_config(listing)
    with pytest.raises(ValueError, match=r"cannot tell the format of .*model.toml"):
        torch_circuit.read_config(tmp_path / "model.toml")
    with pytest.raises(FileNotFoundError):
        torch_circuit.read_config(tmp_path / "missing.yaml")


# --- The example configs build what the Python examples build ---


@pytest.fixture
def examples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))


@pytest.mark.parametrize(
    ("config", "module", "builder", "make_input"),
    [
        ("quickstart.yaml", "quickstart", "build_model", lambda: torch.randn(2, 3, 16, 16)),
        ("unet.yaml", "unet_segmentation", "build_circuit", lambda: torch.randn(2, 1, 16, 16)),
        (
            "transformer.yaml",
            "transformer_encoder",
            "build_circuit",
            lambda: torch.randint(0, 10, (2, 10)),
        ),
    ],
)
def test_example_configs_match_their_python_models(
    examples: None, config: str, module: str, builder: str, make_input: object
) -> None:
    python = getattr(__import__(module), builder)()
    from_file = Circuit.from_config(torch_circuit.read_config(CONFIGS / config))
    assert from_file.to_config() == python.to_config()  # same structure, argument for argument
    assert repr(from_file) == repr(python)
    from_file.load_state_dict(python.state_dict())
    assert callable(make_input)
    assert_same_outputs(python, from_file, make_input())


# A config written by hand, with no Python model behind it: named input, push/pop, outputs,
# named layers. Checked against the same model built in Python and its hand-written twin.


def time_projection(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Unflatten(1, (width, 1, 1)))


def timestep_unet(width: int = 16, levels: int = 2) -> Circuit:
    """examples/configs/timestep_unet.yaml, written in Python."""
    return Circuit(
        ("stem", nn.Conv2d(1, width, 3, padding=1)),
        StartBlock("down", num_repeats=levels),
        ("add_time", GetInput("time", transform=time_projection(width))),
        ("conv", nn.Conv2d(width, width, 3, padding=1)),
        ("norm", nn.GroupNorm(4, width)),
        nn.SiLU(),
        SaveInput("skip", push=True),
        nn.MaxPool2d(2),
        EndBlock("down"),
        ("middle", nn.Conv2d(width, width, 3, padding=1)),
        nn.SiLU(),
        StartBlock("up", num_repeats=levels),
        nn.Upsample(scale_factor=2),
        GetInput("skip", op="cat", pop=True),
        ("conv", nn.Conv2d(2 * width, width, 3, padding=1)),
        ("norm", nn.GroupNorm(4, width)),
        nn.SiLU(),
        ("add_time", GetInput("time", transform=time_projection(width))),
        Output("features"),
        EndBlock("up"),
        ("head", nn.Conv2d(width, 1, 1)),
        Output("noise"),
        inputs=("time",),
    )


class PlainLevel(nn.Module):
    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.time = time_projection(width)
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.norm = nn.GroupNorm(4, width)


class PlainTimestepUNet(nn.Module):
    """The same U-Net written by hand, as a user would without torch-circuit."""

    def __init__(self, width: int = 16, levels: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.down = nn.ModuleList(PlainLevel(width, width) for _ in range(levels))
        self.middle = nn.Conv2d(width, width, 3, padding=1)
        self.up = nn.ModuleList(PlainLevel(2 * width, width) for _ in range(levels))
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x: Tensor, time: Tensor) -> dict[str, Any]:
        x = self.stem(x)
        skips = []
        for level in self.down:
            x = x + level.time(time)
            x = F.silu(level.norm(level.conv(x)))
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = F.silu(self.middle(x))
        features = []
        for level in self.up:
            x = torch.cat((F.interpolate(x, scale_factor=2.0), skips.pop()), dim=1)
            x = F.silu(level.norm(level.conv(x)))
            x = x + level.time(time)
            features.append(x)
        return {"features": tuple(features), "noise": self.head(x)}


def test_the_hand_written_timestep_unet_config_is_the_python_model() -> None:
    torch.manual_seed(0)
    python = timestep_unet()
    from_file = Circuit.from_config(torch_circuit.read_config(CONFIGS / "timestep_unet.yaml"))
    assert from_file.to_config() == python.to_config()
    assert repr(from_file) == repr(python)
    assert list(from_file.state_dict())[:4] == [
        "stem.weight",
        "stem.bias",
        "down.0.add_time.transform.0.weight",
        "down.0.add_time.transform.0.bias",
    ]
    from_file.load_state_dict(python.state_dict())
    x, time = torch.randn(2, 1, 8, 8), torch.randn(2, 16)
    assert_same_outputs(python, from_file, x, time)
    out = from_file(x, time=time)
    assert list(out) == ["features", "noise"]
    assert [tuple(f.shape) for f in out["features"]] == [(2, 16, 4, 4), (2, 16, 8, 8)]


def test_the_timestep_unet_config_equals_its_hand_written_twin() -> None:
    torch.manual_seed(1)
    model = Circuit.from_config(torch_circuit.read_config(CONFIGS / "timestep_unet.yaml"))
    plain = PlainTimestepUNet()
    x, time = torch.randn(3, 1, 8, 8), torch.randn(3, 16)
    report = torch_circuit.copy_weights(plain, model, (x, time))
    assert len(report.copied) == len(list(model.state_dict()))
    outputs = []
    for net in (plain, model):
        out = net(x, time)
        (out["noise"].square().sum() + sum(f.sum() for f in out["features"])).backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
    source, target = dict(plain.named_parameters()), dict(model.named_parameters())
    for source_key, target_key in report.copied:
        torch.testing.assert_close(
            target[target_key].grad, source[source_key].grad, rtol=0, atol=0, msg=target_key
        )


def test_the_docs_show_the_example_configs_as_they_are() -> None:
    docs = (ROOT / "docs" / "config.md").read_text()
    for name in ("quickstart.yaml", "unet.yaml", "transformer.yaml", "timestep_unet.yaml"):
        assert (CONFIGS / name).read_text().rstrip() in docs, name


# --- The command line on config files ---


def test_cli_draws_and_summarises_config_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svg = tmp_path / "unet.svg"
    assert main(["draw", str(CONFIGS / "unet.yaml"), "-o", str(svg)]) == 0
    assert svg.read_text().lstrip().startswith("<?xml")
    assert main(["draw", str(CONFIGS / "timestep_unet.yaml"), "-o", str(svg)]) == 0
    assert main(["summary", str(CONFIGS / "timestep_unet.yaml")]) == 0
    table = capsys.readouterr().out
    assert "input 'time'" in table and "up.1.add_time" in table
    json_file = torch_circuit.write_config(quickstart(), tmp_path / "model.json")
    assert main(["summary", str(json_file), "--input-shape", "1,3,32,32"]) == 0
    table = capsys.readouterr().out
    assert "(1, 8, 32, 32)" in table and "resnet" in table
    torch_circuit.save(quickstart(), tmp_path / "saved")
    assert main(["summary", str(tmp_path / "saved")]) == 0


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`torch-circuit ARGS` in a fresh process: nothing registered but what it imports."""
    return subprocess.run(
        [sys.executable, "-m", "torch_circuit.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )


def test_cli_config_with_registered_classes_needs_their_module() -> None:
    config = str(CONFIGS / "transformer.yaml")
    result = cli("summary", config)
    assert result.returncode == 1
    assert "transformer.yaml: layers[1]: unknown type 'AddPositions'" in result.stderr
    assert "--import MODULE" in result.stderr
    result = cli("summary", config, "--import", str(EXAMPLES / "transformer_encoder.py"))
    assert result.returncode == 0, result.stderr
    assert "SelfAttention" in result.stdout


def test_cli_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: torch-circuit\nversion: 1\nlayers:\n- Conv2d: {in_channels: 3}\n")
    result = cli("summary", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "bad.yaml: layers[0].Conv2d: missing the argument 'out_channels'" in result.stderr


def test_the_size_and_load_benchmark_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "config_io.py"), "--quick"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "torch_circuit.save" in result.stdout
    assert result.stdout.count("ratio") >= 5


def test_a_config_round_trips_through_json_text() -> None:
    config = quickstart().to_config()
    assert json.loads(to_json(config)) == config
