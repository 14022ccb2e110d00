"""The `torch-circuit` console command: draw or summarise a model without writing a script.

The model is a config file (`.json`, `.yaml`, `.yml`), a folder written by
`torch_circuit.save`, or `MODULE:FACTORY`: a function that takes no arguments and returns a
`Circuit`. `MODULE` is a dotted module name importable from the current folder
(`mypkg.models`) or a path to a Python file (`examples/resnet_mnist.py`), which is run
like a script: its folder goes first on `sys.path`. A config that names registered classes
needs the module that registers them: `--import MODULE` imports it first (a config itself
never makes anything be imported).

For example:

    $ torch-circuit draw examples/configs/unet.yaml -o unet.svg
    $ torch-circuit summary model.json --input-shape 1,3,32,32
    $ torch-circuit draw examples/resnet_mnist.py:build_circuit -o resnet.pdf
    $ torch-circuit draw mypkg.models:make_unet -o unet.png --expanded
    $ torch-circuit draw examples/resnet_mnist.py:build_circuit -o resnet.html
    $ torch-circuit summary examples/resnet_mnist.py:build_circuit --input-shape 1,1,8,8
    $ torch-circuit draw encoder.yaml -o encoder.html --input-shape 1,16:long \
          --input-shape mask=1,16:bool

`--input-shape` may be given once per input: `SHAPE` for the main input, `NAME=SHAPE` for a
named input (`Circuit(..., inputs=...)`). A shape is a float tensor unless it ends in a dtype,
`:bool`, `:long` (token ids), `:int`, `:half`, `:bfloat16`, `:float` or `:double`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from .circuit import Circuit
from .config.files import CONFIG_FILE, YAML_SUFFIXES, read_config
from .diagram.files import FORMATS
from .diagram.geometry import Direction
from .diagram.view import DiagramTooLargeError
from .shapes import ShapeError

__all__ = [
    "DTYPES",
    "CommandError",
    "InputSpec",
    "load_circuit",
    "load_config_file",
    "load_model",
    "main",
    "parse_input",
    "parse_shape",
]


class CommandError(Exception):
    """An expected mistake on the command line: reported in one line, without a traceback."""


def load_circuit(spec: str) -> Circuit:
    """Import `MODULE:FACTORY`, call the factory with no arguments and return its `Circuit`.

    Args:
        spec: `module.name:factory` or `path/to/file.py:factory`. An attribute that is
            already a `Circuit` is returned as it is.

    Raises:
        CommandError: the spec is malformed, the module does not import, the factory is
            missing or fails, or it returns something other than a `Circuit`.

    Examples:
        >>> model = load_circuit("examples/resnet_mnist.py:build_circuit")
    """
    module_name, sep, factory_name = spec.rpartition(":")
    if not sep or not module_name or not factory_name.isidentifier():
        raise CommandError(
            f"expected MODULE:FACTORY, got {spec!r}; for example "
            "examples/resnet_mnist.py:build_circuit or mypkg.models:make_model, or a config "
            "file such as model.yaml."
        )
    module = _import(module_name)
    factory = getattr(module, factory_name, None)
    if factory is None:
        found = sorted(
            name
            for name, value in vars(module).items()
            if callable(value) and not name.startswith("_") and not isinstance(value, type)
        )
        raise CommandError(
            f"{module_name} has no {factory_name!r}; functions there: {found}. "
            "Name a function that returns a Circuit."
        )
    if isinstance(factory, Circuit):
        return factory
    if not callable(factory):
        raise CommandError(
            f"{spec} is a {type(factory).__name__}, not a function; name a function that "
            "returns a Circuit."
        )
    try:
        model = factory()
    except Exception as error:  # the user's factory failed: report it in one line
        raise CommandError(
            f"calling {spec}() failed with {type(error).__name__}: {error}. The factory must "
            "build the model with no arguments."
        ) from error
    if not isinstance(model, Circuit):
        raise CommandError(
            f"{spec}() returned a {type(model).__name__}, not a torch_circuit.Circuit; "
            "torch-circuit can only draw and summarise Circuits."
        )
    return model


def is_config_path(spec: str) -> bool:
    """Whether `spec` names a config file or a saved model's folder, not `MODULE:FACTORY`."""
    path = Path(spec)
    suffix = path.suffix.lower()
    return suffix == ".json" or suffix in YAML_SUFFIXES or (path / CONFIG_FILE).is_file()


def load_config_file(path: str) -> Circuit:
    """Build the `Circuit` a config file (or a saved model's folder) describes.

    Raises:
        CommandError: the file is missing, unreadable, or does not describe a circuit; the
            message gives the file and the place in it.
    """
    try:
        return Circuit.from_config(read_config(path))
    except FileNotFoundError:
        raise CommandError(f"no such config file: {path!r}.") from None
    except ImportError as error:  # PyYAML missing
        raise CommandError(str(error)) from error
    except (TypeError, ValueError) as error:
        hint = ""
        if "register" in str(error):
            hint = (
                " If a module of yours registers that class, import it first: "
                "--import MODULE (a dotted name or a .py file)."
            )
        raise CommandError(f"{path}: {error}{hint}") from error


def load_model(spec: str, imports: Sequence[str] = ()) -> Circuit:
    """The `Circuit` named on the command line, after importing `imports` (in order)."""
    for module_name in imports:
        _import(module_name)
    return load_config_file(spec) if is_config_path(spec) else load_circuit(spec)


def _import(module_name: str) -> ModuleType:
    """Import a dotted module name from the current folder, or a `.py` file by path."""
    is_path = module_name.endswith(".py") or "/" in module_name or "\\" in module_name
    try:
        if is_path:
            return _import_file(Path(module_name))
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))  # like `python -m`: the current folder
        return importlib.import_module(module_name)
    except CommandError:
        raise
    except ImportError as error:
        hint = ""
        as_file = Path(*module_name.split(".")).with_suffix(".py")
        if not is_path and as_file.is_file():
            hint = (
                f" To load {as_file} as a script, with the modules beside it importable, "
                f"name the file: {as_file.as_posix()}:FACTORY."
            )
        raise CommandError(f"cannot import {module_name!r}: {error}.{hint}") from error
    except Exception as error:  # the module itself raised while importing
        raise CommandError(
            f"importing {module_name!r} failed with {type(error).__name__}: {error}."
        ) from error


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise CommandError(f"no such Python file: {str(path)!r}.")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # as `python path/to/file.py` would: its neighbours import
    name = f"_torch_circuit_cli_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CommandError(f"cannot load {str(path)!r} as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    spec.loader.exec_module(module)
    return module


def parse_shape(text: str) -> tuple[int, ...]:
    """`"1,3,32,32"` (or `"1x3x32x32"`) -> `(1, 3, 32, 32)`."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(part) for part in parts)
    except ValueError:
        shape = ()
    if not shape or any(size <= 0 for size in shape):
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, like 1,3,32,32 (or "
            f"mask=1,16:bool for a named input); got {text!r}"
        )
    return shape


DTYPES: dict[str, torch.dtype] = {
    "bool": torch.bool,
    "long": torch.long,
    "int64": torch.int64,
    "int": torch.int32,
    "int32": torch.int32,
    "half": torch.float16,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float": torch.float32,
    "float32": torch.float32,
    "double": torch.float64,
    "float64": torch.float64,
}
"""The dtypes a shape on the command line may end in (`1,16:bool`)."""


@dataclass(frozen=True)
class InputSpec:
    """One `--input-shape`: the input it is for (`None`: the main one), its shape, its dtype
    (`None`: float)."""

    name: str | None
    shape: tuple[int, ...]
    dtype: torch.dtype | None = None
    text: str = ""

    def example(self) -> tuple[int, ...] | torch.Tensor:
        """The shape as `input_shape` takes it; with a dtype, a tensor of zeros of that type."""
        if self.dtype is None:
            return self.shape
        return torch.zeros(self.shape, dtype=self.dtype)


def parse_input(text: str) -> InputSpec:
    """`"1,16"`, `"1,16:long"` or `"mask=1,16:bool"` as an `InputSpec`."""
    name, sep, rest = text.partition("=")
    if not sep:
        name, rest = "", text
    elif not name.isidentifier():
        raise argparse.ArgumentTypeError(
            f"expected NAME=SHAPE with NAME an input's name, like mask=1,16; got {text!r}"
        )
    shape_text, colon, dtype_name = rest.partition(":")
    dtype = None
    if colon:
        dtype = DTYPES.get(dtype_name.lower())
        if dtype is None:
            raise argparse.ArgumentTypeError(
                f"unknown dtype {dtype_name!r} in {text!r}; use one of {', '.join(DTYPES)}, "
                "e.g. mask=1,16:bool"
            )
    return InputSpec(name or None, parse_shape(shape_text), dtype, text)


def input_shapes(
    model: Circuit, specs: Sequence[InputSpec]
) -> tuple[tuple[int, ...] | torch.Tensor | None, dict[str, tuple[int, ...] | torch.Tensor]]:
    """The main input's shape and the named inputs' from the `--input-shape` options.

    Raises:
        CommandError: two shapes for one input, a name the model does not take, named
            inputs' shapes without the main one's, or a required named input left out.
    """
    main_shape: tuple[int, ...] | torch.Tensor | None = None
    named: dict[str, tuple[int, ...] | torch.Tensor] = {}
    declared = [node.name for node in model.input_nodes]
    for spec in specs:
        if spec.name is None:
            if main_shape is not None:
                raise CommandError(
                    f"--input-shape {spec.text}: the main input has a shape already; give "
                    "it once, and a named input's as NAME=SHAPE (mask=1,16:bool)."
                )
            main_shape = spec.example()
            continue
        if spec.name not in declared:
            takes = f"its named inputs are {declared}" if declared else "it has none"
            raise CommandError(
                f"--input-shape {spec.text}: the model takes no input {spec.name!r}; {takes}."
            )
        if spec.name in named:
            raise CommandError(f"--input-shape {spec.text}: {spec.name!r} has a shape already.")
        named[spec.name] = spec.example()
    if main_shape is None and named:
        raise CommandError(
            "--input-shape: named inputs' shapes need the main input's too, e.g. "
            "--input-shape 1,16 --input-shape mask=1,16:bool."
        )
    if main_shape is not None:
        required = [n.name for n in model.input_nodes if n.required and n.name not in named]
        if required:
            example = " ".join(f"--input-shape {name}=1,16" for name in required)
            raise CommandError(
                f"--input-shape: the model also needs its named inputs {required}; give each "
                f"a shape, e.g. {example} (add :bool for a mask)."
            )
    return main_shape, named


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `torch-circuit` and its `draw` and `summary` commands."""
    parser = argparse.ArgumentParser(
        prog="torch-circuit",
        description="Draw or summarise a Circuit: a config file, or one a factory returns.",
        epilog="MODEL is a config file (.json, .yaml, .yml), a folder written by "
        "torch_circuit.save, or MODULE:FACTORY: a dotted module or a .py file, then the name "
        "of a function that takes no arguments and returns a Circuit.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    draw = commands.add_parser(
        "draw", help="save the architecture diagram (PDF, PNG, SVG, or an interactive HTML page)"
    )
    draw.add_argument("factory", metavar="MODEL")
    _add_import(draw)
    draw.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="FILE",
        help="where to save; the extension picks .pdf, .png, .svg or .html (a page to open "
        "in a browser: click a block to expand it, hover a layer for its details)",
    )
    draw.add_argument(
        "--expanded",
        action="store_true",
        help="draw every repeat of every block instead of one frame labelled ×N (an HTML page "
        "opens expanded)",
    )
    _add_input_shape(draw, "label every edge with its tensor shape")
    draw.add_argument(
        "--direction",
        choices=("down", "right"),
        default="down",
        help="run the flow down columns (the default) or left to right along rows",
    )

    summary = commands.add_parser("summary", help="print a table of layers, shapes, parameters")
    summary.add_argument("factory", metavar="MODEL")
    _add_import(summary)
    _add_input_shape(summary, "show each layer's output shape")
    return parser


def _add_input_shape(command: argparse.ArgumentParser, purpose: str) -> None:
    command.add_argument(
        "--input-shape",
        dest="input_shapes",
        type=parse_input,
        action="append",
        default=[],
        metavar="[NAME=]SHAPE[:DTYPE]",
        help=f"{purpose}: the input's shape, e.g. 1,3,32,32 (1,16:long for token ids); once "
        "more for each named input, e.g. mask=1,16:bool",
    )


def _add_import(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module (dotted name or .py file) first, e.g. the one that registers "
        "the classes a config names; may be repeated",
    )


def run_draw(
    model: Circuit,
    output: Path,
    expanded: bool,
    specs: Sequence[InputSpec] = (),
    direction: Direction = "down",
) -> str:
    """Save the diagram to `output`; return the line to print."""
    if output.suffix.lower() not in FORMATS:
        raise CommandError(
            f"cannot tell the format of {str(output)!r}: end the file name in {', '.join(FORMATS)}."
        )
    input_shape, named = input_shapes(model, specs)
    output.parent.mkdir(parents=True, exist_ok=True)
    with _shape_errors(specs):
        try:
            model.visualize(
                save_path=str(output),
                show_repeats=not expanded,
                input_shape=input_shape,
                input_shapes=named or None,
                direction=direction,
            )
        except DiagramTooLargeError as error:
            hint = " (leave out --expanded)" if expanded else ""
            raise CommandError(f"{error}{hint}") from error
    return f"saved {output}"


def run_summary(model: Circuit, specs: Sequence[InputSpec] = ()) -> str:
    """The model's summary table."""
    input_shape, named = input_shapes(model, specs)
    with _shape_errors(specs):
        return model.summary(input_shape=input_shape, input_shapes=named or None)


@contextlib.contextmanager
def _shape_errors(specs: Sequence[InputSpec]) -> Iterator[None]:
    """Report in one line an `--input-shape` the model cannot take; anything else keeps its
    traceback (a bug, not a mistake on the command line)."""
    try:
        yield
    except ShapeError as error:
        if not specs:  # pragma: no cover - shapes are only traced with a shape
            raise
        lines = str(error).splitlines() or [type(error).__name__]
        given = " ".join(f"--input-shape {spec.text}" for spec in specs)
        raise CommandError(f"{given}: {lines[0]}") from error


def main(argv: Sequence[str] | None = None) -> int:
    """Run `torch-circuit`; return the exit status (0 on success, 1 on an expected mistake).

    Argument errors exit with status 2 through `argparse`.
    """
    args = build_parser().parse_args(argv)
    try:
        model = load_model(args.factory, args.imports)
        if args.command == "draw":
            draw = run_draw(model, args.output, args.expanded, args.input_shapes, args.direction)
            print(draw)
        else:
            print(run_summary(model, args.input_shapes))
    except CommandError as error:
        print(f"torch-circuit: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
