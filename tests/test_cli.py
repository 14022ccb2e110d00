"""The torch-circuit command: draw and summary of a factory's Circuit; one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from torch_circuit import Circuit
from torch_circuit.cli import DTYPES, InputSpec, load_circuit, main, parse_input, parse_shape

MODELS = """
import torch
from torch import nn
from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock


def small():
    return Circuit(
        nn.Conv2d(3, 8, 3, padding=1),
        StartBlock("stage", num_repeats=2),
        SaveInput("residual"),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        GetInput("residual"),
        EndBlock("stage"),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


prebuilt = small()
not_a_model = 42


def sequential():
    return nn.Sequential(nn.Linear(2, 2))


def needs_args(width):
    return small()


def broken():
    raise RuntimeError("weights file missing")


def masked_fill(x, mask):
    return x.masked_fill(mask.unsqueeze(-1), 0.0)


def encoder():
    return Circuit(
        nn.Embedding(100, 8),
        StartBlock("layer", num_repeats=2),
        SaveInput("x"),
        GetInput("mask", op=masked_fill),
        GetInput("x"),
        EndBlock("layer"),
        inputs=("mask",),
    )
"""


@pytest.fixture
def models_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(MODELS)
    return path


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("torch-circuit: error: ")
    return lines[0]


# draw ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pdf", ".png", ".svg"])
def test_draw_saves_the_diagram(
    models_file: Path, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "figs" / f"small{suffix}"
    assert main(["draw", f"{models_file}:small", "-o", str(output)]) == 0
    assert output.stat().st_size > 0
    assert capsys.readouterr().out.strip() == f"saved {output}"


def test_draw_passes_expanded_and_input_shape_on(
    models_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def spy(self: Circuit, save_path: str | None = None, **kwargs: Any) -> object:
        calls.append({"save_path": save_path, **kwargs})
        return None

    monkeypatch.setattr(Circuit, "visualize", spy)
    monkeypatch.setattr("matplotlib.pyplot.close", lambda figure: None)
    output = str(tmp_path / "a.png")
    assert main(["draw", f"{models_file}:small", "-o", output]) == 0
    assert main(["draw", f"{models_file}:small", "-o", output, "--expanded"]) == 0
    assert main(["draw", f"{models_file}:small", "-o", output, "--input-shape", "2,3,16,16"]) == 0
    assert [c["show_repeats"] for c in calls] == [True, False, True]
    assert [c["input_shape"] for c in calls] == [None, None, (2, 3, 16, 16)]
    assert {c["save_path"] for c in calls} == {output}


def test_draw_expanded_shows_every_repeat(models_file: Path, tmp_path: Path) -> None:
    folded, expanded = tmp_path / "folded.png", tmp_path / "expanded.png"
    assert main(["draw", f"{models_file}:small", "-o", str(folded)]) == 0
    assert main(["draw", f"{models_file}:small", "-o", str(expanded), "--expanded"]) == 0
    # Two repeats drawn out make a larger picture than one frame labelled ×2 (wrapped into
    # columns, it may be the less tall of the two).
    assert _png_area(expanded) > _png_area(folded)


def _png_area(path: Path) -> int:
    header = path.read_bytes()
    return int.from_bytes(header[16:20], "big") * int.from_bytes(header[20:24], "big")  # IHDR


def test_draw_rejects_an_unknown_extension(
    models_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["draw", f"{models_file}:small", "-o", str(tmp_path / "a.jpg")]) == 1
    assert "end the file name in .pdf, .png, .svg" in error_line(capsys)


# summary ---------------------------------------------------------------------------------------


def test_summary_prints_the_table_with_shapes(
    models_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["summary", f"{models_file}:small", "--input-shape", "1,3,32,32"]) == 0
    out = capsys.readouterr().out
    assert "stage ×2" in out
    assert "(1, 8, 32, 32)" in out
    assert "(1, 10)" in out


def test_summary_without_input_shape(models_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", f"{models_file}:small"]) == 0
    assert "stage" in capsys.readouterr().out


def test_summary_of_a_wrong_input_shape_is_one_line(
    models_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["summary", f"{models_file}:small", "--input-shape", "1,1,32,32"]) == 1
    line = error_line(capsys)
    assert line.startswith("torch-circuit: error: --input-shape 1,1,32,32: ")
    assert "Conv2d" in line


@pytest.mark.parametrize(
    ("text", "shape"), [("1,3,32,32", (1, 3, 32, 32)), ("1x3x8x8", (1, 3, 8, 8)), ("5", (5,))]
)
def test_parse_shape(text: str, shape: tuple[int, ...]) -> None:
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["", "1,,3", "a,b", "1,0,3", "-1,3"])
def test_bad_input_shape_is_an_argument_error(
    text: str, models_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["summary", f"{models_file}:small", f"--input-shape={text}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "positive integers separated by commas, like 1,3,32,32" in err
    assert "Traceback" not in err


# named inputs and dtypes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("1,16", InputSpec(None, (1, 16), None, "1,16")),
        ("1,16:long", InputSpec(None, (1, 16), torch.long, "1,16:long")),
        ("mask=1,16:bool", InputSpec("mask", (1, 16), torch.bool, "mask=1,16:bool")),
        ("t=4x32", InputSpec("t", (4, 32), None, "t=4x32")),
    ],
)
def test_parse_input(text: str, spec: InputSpec) -> None:
    assert parse_input(text) == spec


def test_a_dtype_gives_a_tensor_of_it_and_no_dtype_a_shape() -> None:
    example = parse_input("mask=2,3:bool").example()
    assert isinstance(example, torch.Tensor) and example.dtype is torch.bool
    assert tuple(example.shape) == (2, 3)
    assert parse_input("2,3").example() == (2, 3)
    assert DTYPES["long"] is torch.long and DTYPES["half"] is torch.float16


@pytest.mark.parametrize("command", ["draw", "summary"])
def test_named_inputs_take_their_shapes_and_dtypes(
    command: str, models_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shapes = ["--input-shape", "1,16:long", "--input-shape", "mask=1,16:bool"]
    extra = ["-o", str(tmp_path / "e.html")] if command == "draw" else []
    assert main([command, f"{models_file}:encoder", *extra, *shapes]) == 0
    out = capsys.readouterr().out
    if command == "summary":
        assert "input 'mask'" in out and "(1, 16, 8)" in out
    else:
        page = (tmp_path / "e.html").read_text(encoding="utf-8")
        assert "named input 'mask' of forward (required)" in page
        assert '"shape": "(1, 16)"' in page


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (
            ["1,16:long"],
            "--input-shape: the model also needs its named inputs ['mask']; give each a shape, "
            "e.g. --input-shape mask=1,16 (add :bool for a mask).",
        ),
        (
            ["mask=1,16:bool"],
            "--input-shape: named inputs' shapes need the main input's too, e.g. --input-shape "
            "1,16 --input-shape mask=1,16:bool.",
        ),
        (
            ["1,16:long", "2,16:long"],
            "--input-shape 2,16:long: the main input has a shape already; give it once, and a "
            "named input's as NAME=SHAPE (mask=1,16:bool).",
        ),
        (
            ["1,16:long", "masks=1,16"],
            "--input-shape masks=1,16: the model takes no input 'masks'; its named inputs are "
            "['mask'].",
        ),
        (
            ["1,16:long", "mask=1,16:bool", "mask=1,16:bool"],
            "--input-shape mask=1,16:bool: 'mask' has a shape already.",
        ),
        (
            ["1,16:long", "mask=1,17:bool"],
            "--input-shape 1,16:long --input-shape mask=1,17:bool: input_shape (1, 16) does not "
            "fit the circuit: GetInput('mask', op=masked_fill) at position 3",
        ),
    ],
)
def test_bad_named_input_shapes_are_one_line(
    shapes: list[str], message: str, models_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["summary", f"{models_file}:encoder"]
    for shape in shapes:
        argv += ["--input-shape", shape]
    assert main(argv) == 1
    assert error_line(capsys).startswith(f"torch-circuit: error: {message}")


def test_a_shape_for_a_model_without_named_inputs_names_none(
    models_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["summary", f"{models_file}:small", "--input-shape", "1,3,8,8", "--input-shape", "m=1"]
    assert main(argv) == 1
    assert error_line(capsys) == (
        "torch-circuit: error: --input-shape m=1: the model takes no input 'm'; it has none."
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mask=1,16:boolean", "unknown dtype 'boolean' in 'mask=1,16:boolean'; use one of bool"),
        ("2mask=1,16", "expected NAME=SHAPE with NAME an input's name, like mask=1,16"),
        ("mask=", "expected positive integers separated by commas, like 1,3,32,32"),
    ],
)
def test_a_malformed_named_shape_is_an_argument_error(
    text: str, message: str, models_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["summary", f"{models_file}:encoder", f"--input-shape={text}"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# finding the factory ---------------------------------------------------------------------------


def test_dotted_module_from_the_current_folder(
    models_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(models_file.parent)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    assert main(["summary", "my_models:small"]) == 0
    assert "stage" in capsys.readouterr().out


def test_an_attribute_that_is_already_a_circuit(models_file: Path) -> None:
    assert isinstance(load_circuit(f"{models_file}:prebuilt"), Circuit)


def test_the_examples_factories_load() -> None:
    root = Path(__file__).resolve().parents[1]
    for name in ("resnet_mnist", "unet_segmentation", "transformer_encoder"):
        assert isinstance(load_circuit(f"{root}/examples/{name}.py:build_circuit"), Circuit)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("my_models", r"expected MODULE:FACTORY, got 'my_models'; for example"),
        (":small", r"expected MODULE:FACTORY, got ':small'"),
        ("my_models:", r"expected MODULE:FACTORY"),
        ("no_such_module_xyz:make", r"cannot import 'no_such_module_xyz': No module named"),
        ("{dir}/missing.py:make", r"no such Python file: '.*missing\.py'"),
        ("{file}:nope", r"has no 'nope'; functions there: \[.*'small'.*\]\. Name a function"),
        ("{file}:not_a_model", r"is a int, not a function"),
        (
            "{file}:sequential",
            r"sequential\(\) returned a Sequential, not a torch_circuit\.Circuit",
        ),
        ("{file}:needs_args", r"needs_args\(\) failed with TypeError: .*with no arguments"),
        ("{file}:broken", r"broken\(\) failed with RuntimeError: weights file missing"),
    ],
)
def test_expected_mistakes_are_one_line_and_exit_1(
    spec: str,
    message: str,
    models_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = spec.format(file=models_file, dir=tmp_path)
    for argv in (["draw", spec, "-o", str(tmp_path / "x.png")], ["summary", spec]):
        assert main(argv) == 1
        assert re.search(message, error_line(capsys)), message
    assert not (tmp_path / "x.png").exists()


def test_a_module_that_fails_to_import_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad_models.py"
    bad.write_text("import torch\nimport not_installed_pkg_xyz\n")
    assert main(["summary", f"{bad}:make"]) == 1
    assert "cannot import" in error_line(capsys)
    syntax = tmp_path / "syntax_models.py"
    syntax.write_text("def make(:\n")
    assert main(["summary", f"{syntax}:make"]) == 1
    assert "failed with SyntaxError" in error_line(capsys)


@pytest.mark.parametrize("how", ["console script", "python -m"])
def test_command_runs_without_traceback(how: str, models_file: Path) -> None:
    # pip install puts the `torch-circuit` script beside the interpreter (pyproject's scripts).
    script = Path(sys.executable).with_name("torch-circuit")
    command = (
        [str(script)] if how == "console script" else [sys.executable, "-m", "torch_circuit.cli"]
    )
    ok = subprocess.run(
        [*command, "summary", f"{models_file}:small"], capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    assert "stage" in ok.stdout
    bad = subprocess.run(
        [*command, "draw", f"{models_file}:sequential", "-o", "x.png"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"torch-circuit: error: {models_file}:sequential() returned a Sequential, not a "
        "torch_circuit.Circuit; torch-circuit can only draw and summarise Circuits."
    ]


def test_help_lists_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "draw" in out and "summary" in out and "MODULE:FACTORY" in out


def test_a_script_folder_loads_by_path_and_the_dotted_form_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Like examples/: a script that imports a helper module beside it.
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "helper_xyz.py").write_text(MODELS)
    (scripts / "model_xyz.py").write_text("from helper_xyz import small\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert main(["summary", "scripts/model_xyz.py:small"]) == 0
    capsys.readouterr()
    monkeypatch.delitem(sys.modules, "helper_xyz")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(scripts)])
    assert main(["summary", "scripts.model_xyz:small"]) == 1
    assert error_line(capsys).endswith(
        "No module named 'helper_xyz'. To load scripts/model_xyz.py as a script, with the "
        "modules beside it importable, name the file: scripts/model_xyz.py:FACTORY."
    )


def test_an_unexpected_error_keeps_its_traceback(
    models_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only an input shape the model cannot take is reported in one line; a bug is not hidden.
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug in the renderer")

    monkeypatch.setattr(Circuit, "visualize", broken)
    argv = [
        "draw",
        f"{models_file}:small",
        "-o",
        str(tmp_path / "a.svg"),
        "--input-shape",
        "1,3,8,8",
    ]
    with pytest.raises(RuntimeError, match="a bug in the renderer"):
        main(argv)


def test_draw_does_not_import_pyplot(models_file: Path, tmp_path: Path) -> None:
    code = (
        "import sys; from torch_circuit.cli import main; "
        f"main(['draw', {str(models_file) + ':small'!r}, '-o', {str(tmp_path / 'a.svg')!r}]); "
        "print('matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
