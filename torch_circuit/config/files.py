"""Save and load a model as a folder of a JSON config and safetensors weights; read and
write configs as JSON or YAML.

Nothing here unpickles: the config is read with `json` (or `yaml.safe_load`), the weights with
`safetensors`, which stores raw tensor bytes and a JSON header.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..circuit import Circuit
from .format import VERSION

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "load",
    "read_config",
    "save",
    "to_json",
    "to_yaml",
    "write_config",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
YAML_SUFFIXES = (".yaml", ".yml")

PathLike = str | os.PathLike[str]


def save(model: Circuit, path: PathLike) -> Path:
    """Write `model` to the folder `path`: `config.json` and `model.safetensors`.

    The weights file holds every parameter and persistent buffer (BatchNorm statistics
    included) under its `state_dict` key, once: a tensor tied to another is listed in the
    config's `tied` instead. Nothing is pickled.

    Args:
        model: the circuit to save; `model.to_config()` must be able to describe it.
        path: the folder to write (created if needed; the two files are replaced).

    Returns:
        The folder.

    Raises:
        ValueError: the model cannot be described (see `Circuit.to_config`).

    Examples:
        >>> torch_circuit.save(model, "checkpoints/resnet")
        >>> twin = torch_circuit.load("checkpoints/resnet")
    """
    config = model.to_config()
    tied = config.get("tied", {})
    tensors: dict[str, torch.Tensor] = {}
    storages: set[tuple[int, int]] = set()
    for key, tensor in model.state_dict().items():
        if key in tied:
            continue
        tensor = tensor.detach().cpu().contiguous()
        storage = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if storage in storages:  # views of one storage: safetensors stores each tensor apart
            tensor = tensor.clone()
        storages.add(storage)
        tensors[key] = tensor
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    _write_text(folder / CONFIG_FILE, to_json(config))
    from safetensors.torch import save_file  # imported on use: `import torch_circuit` stays light

    temporary = folder / f".{WEIGHTS_FILE}.partial"
    save_file(tensors, str(temporary), metadata={"format": "pt", "torch_circuit": str(VERSION)})
    temporary.replace(folder / WEIGHTS_FILE)
    return folder


def load(path: PathLike, *, device: str | torch.device | None = None) -> Circuit:
    """Rebuild the model `save` wrote to the folder `path`, with its weights and buffers.

    The model is built from `config.json` with `Circuit.from_config` (so every class it names
    must be registered in this program) and its `state_dict` filled from
    `model.safetensors`; it computes exactly what the saved model computed. Like a freshly
    built module it is in training mode: call `.eval()` for inference. Loading leaves the
    random number generator as it was.

    Args:
        path: a folder written by `save`.
        device: where to put the model; the CPU by default.

    Raises:
        FileNotFoundError: a file is missing.
        TypeError, ValueError: the config is malformed, or the weights do not fit it (a key
            missing or extra, a shape or dtype that differs), named in the message.

    Examples:
        >>> model = torch_circuit.load("checkpoints/resnet").eval()
    """
    folder = Path(path)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(
            f"{folder} has no {WEIGHTS_FILE}; load takes a folder written by torch_circuit.save."
        )
    config = read_config(folder)
    with torch.random.fork_rng(devices=[]):  # the weights are overwritten: draw nothing
        model = Circuit.from_config(config)
    from safetensors.torch import load_file

    tensors = load_file(str(weights))
    for target, source in config.get("tied", {}).items():
        if source in tensors:
            tensors[target] = tensors[source]
    _check_weights(model, tensors, weights)
    with torch.no_grad():
        model.load_state_dict(tensors, strict=True)
    if device is not None:
        model.to(device)
    return model


def _check_weights(model: nn.Module, tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """`load_state_dict` would cast dtypes silently; say exactly what does not fit."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in tensors]
    extra = [key for key in tensors if key not in expected]
    if missing or extra:
        raise ValueError(
            f"{path} does not fit its config: missing {missing[:5]}, unexpected {extra[:5]}. "
            "Were the files of two different saves mixed?"
        )
    for key, tensor in expected.items():
        found = tensors[key]
        if found.shape != tensor.shape or found.dtype != tensor.dtype:
            raise ValueError(
                f"{path}: {key} is {found.dtype} {tuple(found.shape)}, but the config builds "
                f"{tensor.dtype} {tuple(tensor.shape)}."
            )


# --- Config files ---


def read_config(path: PathLike) -> dict[str, Any]:
    """Read a config from a `.json`, `.yaml` or `.yml` file, or a folder written by `save`.

    YAML is read with `yaml.safe_load` (PyYAML must be installed: `pip install
    torch-circuit[yaml]`). The result is plain data for `Circuit.from_config`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not valid JSON/YAML, or has an unknown suffix.

    Examples:
        >>> model = Circuit.from_config(torch_circuit.read_config("examples/configs/unet.yaml"))
    """
    file = Path(path)
    if file.is_dir():
        file = file / CONFIG_FILE
    suffix = file.suffix.lower()
    if suffix != ".json" and suffix not in YAML_SUFFIXES:
        raise ValueError(f"cannot tell the format of {str(file)!r}: name it .json, .yaml or .yml.")
    text = file.read_text(encoding="utf-8")
    try:
        data = _parse_json(text, file) if suffix == ".json" else _parse_yaml(text, file)
    except RecursionError:
        raise ValueError(f"{file}: nested too deeply to be a config.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file}: a config is a mapping, this file holds a {type(data).__name__}.")
    return data


def _parse_json(text: str, file: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:  # names the line and column
        raise ValueError(f"{file}: not valid JSON: {error}") from error


def _parse_yaml(text: str, file: Path) -> Any:
    yaml = _yaml()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{file}: not valid YAML: {error}") from error


def write_config(config: Circuit | Mapping[str, Any], path: PathLike) -> Path:
    """Write a config (or a circuit's, `model.to_config()`) as JSON or YAML, by suffix.

    The layout is for reading and editing by hand: one layer per line.

    Examples:
        >>> torch_circuit.write_config(model, "model.yaml")
    """
    document = config.to_config() if isinstance(config, Circuit) else config
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix == ".json":
        text = to_json(document)
    elif suffix in YAML_SUFFIXES:
        text = to_yaml(document)
    else:
        raise ValueError(f"cannot tell the format of {str(file)!r}: name it .json, .yaml or .yml.")
    _write_text(file, text)
    return file


def to_json(config: Mapping[str, Any]) -> str:
    """The config as JSON text with one layer per line."""
    return _json(config, "") + "\n"


def _json(value: Any, indent: str, layers: bool = False) -> str:
    inner = indent + "  "
    if isinstance(value, Mapping) and _tall(value):
        items = [
            f"{inner}{json.dumps(key)}: {_json(item, inner, key == 'layers')}"
            for key, item in value.items()
        ]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list) and value and (layers or _tall(value)):
        return "[\n" + ",\n".join(inner + _json(item, inner) for item in value) + f"\n{indent}]"
    return json.dumps(value)


def _tall(value: Any) -> bool:
    """Whether `value` holds a layer list, which is written one entry per line."""
    if isinstance(value, Mapping):
        return "layers" in value or any(_tall(item) for item in value.values())
    if isinstance(value, list):
        return any(_tall(item) for item in value)
    return False


def to_yaml(config: Mapping[str, Any]) -> str:
    """The config as YAML: one layer per line, arguments in flow style (`{p: 0.1}`)."""
    _yaml()  # a clear message if PyYAML is missing
    import yaml

    class Entry(dict[str, Any]):
        """A layer-list entry: a block mapping, so that it reads `- EndBlock: stage`."""

    class Flat(dict[str, Any]):
        """Arguments short enough for one line: `{output_size: [1, 1]}`."""

    class Pair(list[Any]):
        """A named layer on one line: `[stem, {Conv2d: {...}}]`."""

    class Dumper(yaml.SafeDumper):
        pass

    def represent(flow: bool) -> Any:
        def mapping(dumper: yaml.SafeDumper, data: dict[str, Any]) -> Any:
            return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow)

        return mapping

    def pair(dumper: yaml.SafeDumper, data: list[Any]) -> Any:
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)

    Dumper.add_representer(Entry, represent(flow=False))
    Dumper.add_representer(Flat, represent(flow=True))
    Dumper.add_representer(Pair, pair)

    def short(value: Any, width: int = 72) -> bool:
        """Whether `value` fits in about `width` characters of YAML's flow style."""
        return not _tall(value) and len(json.dumps(value).replace('"', "")) <= width

    def entry(item: Any) -> Any:
        if isinstance(item, Mapping):
            return Entry(mark(item))
        if isinstance(item, list) and len(item) == 2:  # [name, entry]
            return Pair(mark(item)) if short(item, 90) else [item[0], entry(item[1])]
        return mark(item)

    def mark(value: Any) -> Any:
        if isinstance(value, Mapping):
            marked = {key: mark(item) for key, item in value.items()}
            if "layers" in value and isinstance(value["layers"], list):
                marked["layers"] = [entry(item) for item in value["layers"]]
            elif value and short(value):
                return Flat(marked)
            return marked
        if isinstance(value, list):
            return [mark(item) for item in value]
        return value

    text: str = yaml.dump(
        mark(config), Dumper=Dumper, sort_keys=False, default_flow_style=None, width=100
    )
    return text


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as error:
        raise ImportError(
            "YAML configs need PyYAML: pip install torch-circuit[yaml] (or pip install pyyaml)."
        ) from error
    return yaml


def _write_text(file: Path, text: str) -> None:
    """Write whole or not at all: a crash mid-write leaves the old file."""
    file.parent.mkdir(parents=True, exist_ok=True)
    temporary = file.with_name(f".{file.name}.partial")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(file)
