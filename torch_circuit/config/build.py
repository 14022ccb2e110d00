"""`Circuit.from_config`: build a circuit from a config document.

The document's `layers` read like the Python list: an entry per layer or marker, in order, so
`layers[i]` is the item at position `i` of `Circuit(...)` and every construction error a
Python-built circuit gets names the same position here. Nothing named in the document is
imported, unpickled or evaluated: names are looked up in `torch.nn`'s described layers and
in what the running program registered.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from . import dataflow, registry
from .entries import MARKERS, EntryDecoder
from .format import DTYPES, FORMAT, VERSION, close_to

__all__ = ["DOCUMENT_FIELDS", "DocumentDecoder", "build_circuit"]

DOCUMENT_FIELDS = ("format", "version", "dtype", "inputs", "layers", "tied")
CIRCUIT_FIELDS = ("inputs", "layers")
ALIASES = frozenset({"transformation"})  # Python's old spellings: a file uses the current one


def _is_per_repeat(value: Any) -> bool:
    """`{"PerRepeat": factory}` where a module is expected: built per repeat."""
    return isinstance(value, Mapping) and len(value) == 1 and "PerRepeat" in value


def build_circuit(config: Any, circuit_class: type[nn.Module]) -> nn.Module:
    """Build the circuit `config` describes, freshly initialised, with `circuit_class`.

    Raises `TypeError`/`ValueError` that start with the place in the document
    (`layers[14]`, `layers[3].Conv2d.padding`, `tied`).
    """
    return DocumentDecoder(circuit_class).document(config)


class DocumentDecoder(EntryDecoder):
    """Decodes a whole document: its fields, layer lists, markers and nested circuits."""

    def __init__(self, circuit_class: type[nn.Module]) -> None:
        super().__init__()
        self.circuit_class = circuit_class

    def document(self, config: Any) -> nn.Module:
        if not isinstance(config, Mapping):
            self.fail(
                "config",
                f"expected a mapping (what json.load or yaml.safe_load returns for a config), "
                f"got {type(config).__name__}.",
                TypeError,
            )
        self.check_fields(
            config, DOCUMENT_FIELDS, "config", required=("format", "version", "layers")
        )
        self.check_version(config)
        model = self.build(self.circuit_class, config, "")
        dtype = self.dtype(config.get("dtype", "float32"))
        model.to(dtype)
        self.tie(model, config.get("tied", {}))
        return model

    def check_fields(
        self,
        mapping: Mapping[Any, Any],
        known: tuple[str, ...],
        where: str,
        required: tuple[str, ...],
    ) -> None:
        for key in mapping:
            if key not in known:
                hint = close_to(str(key), known)
                self.fail(where, f"unknown field {key!r}.{hint} Fields: {', '.join(known)}.")
        for key in required:
            if key not in mapping:
                self.fail(where, f"missing the field {key!r}.")

    def check_version(self, config: Mapping[str, Any]) -> None:
        if config["format"] != FORMAT:
            self.fail("format", f"expected {FORMAT!r}, got {config['format']!r}.")
        version = config["version"]
        if isinstance(version, bool) or not isinstance(version, int):
            self.fail("version", f"expected an integer, got {version!r}.", TypeError)
        if version < 1:
            self.fail("version", f"versions start at 1, got {version}.")
        if version > VERSION:
            self.fail(
                "version",
                f"the file is format version {version}, written by a newer torch-circuit; "
                f"this one reads versions 1 to {VERSION}: upgrade torch-circuit to load it.",
            )

    def dtype(self, name: Any) -> torch.dtype:
        if not isinstance(name, str) or name not in DTYPES:
            self.fail("dtype", f"expected one of {', '.join(DTYPES)}, got {name!r}.")
        return DTYPES[name]

    # --- Circuits and their layer lists ---

    def circuit(self, arguments: Any, where: str) -> nn.Module:
        """A nested `{"Circuit": {"layers": [...]}}`."""
        if not isinstance(arguments, Mapping):
            self.fail(where, "expected a mapping with the field 'layers'.", TypeError)
        self.check_fields(arguments, CIRCUIT_FIELDS, where, required=("layers",))
        outer, self.blocks = self.blocks, []
        try:
            return self.build(self.circuit_class, arguments, f"{where}.")
        finally:
            self.blocks = outer

    def build(self, cls: type[nn.Module], fields: Mapping[str, Any], base: str) -> nn.Module:
        """`cls(*layers, inputs=...)` from a document's or nested circuit's fields; `base` is
        where they are (`""` at the top, `"layers[3].Circuit."` nested)."""
        where = f"{base}layers"
        items = fields["layers"]
        if not isinstance(items, list):
            self.fail(where, f"expected a list of entries, got {type(items).__name__}.", TypeError)
        layers = [self.layer(item, f"{where}[{i}]") for i, item in enumerate(items)]
        self.blocks = []
        options: dict[str, Any] = {}
        if "inputs" in fields:
            options["inputs"] = dataflow.decode_inputs(fields["inputs"], f"{base}inputs")
        try:
            return cls(*layers, **options)
        except (TypeError, ValueError) as error:  # the construction errors of Python, located
            notes = "".join(f" ({note})" for note in getattr(error, "__notes__", ()))
            raise type(error)(f"{where}: {error}{notes}") from error

    def layer(self, item: Any, where: str) -> Any:
        """One item of a layer list: a layer, a marker, a function, or a `[name, layer]` pair."""
        name, entry = dataflow.split_named(item)
        if name is not None:
            return (name, self.layer(entry, f"{where}[1]"))
        if isinstance(item, list):
            self.fail(where, "a list in a layer list is a [name, entry] pair.", TypeError)
        kind, arguments = self.split_entry(item, where)
        if kind in MARKERS:
            return self.marker(kind, arguments, where)
        return self.entry(kind, arguments, where)

    # --- Markers ---

    def marker(self, kind: str, arguments: Any, where: str) -> Any:
        cls = dataflow.MARKER_CLASSES[kind]
        parameters = [
            p
            for p in inspect.signature(cls).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ALIASES
        ]
        fields = [p.name for p in parameters]
        where = f"{where}.{kind}"
        if isinstance(arguments, list):
            positional = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
            if len(arguments) > len(positional):
                rest = [name for name in fields if name not in positional]
                by_name = f"; give {', '.join(rest)} by name" if rest else ""
                noun = "value" if len(positional) == 1 else "values"
                self.fail(
                    where,
                    f"takes at most {len(positional)} {noun} ({', '.join(positional)}){by_name}.",
                    TypeError,
                )
            given = dict(zip(positional, arguments, strict=False))
        elif isinstance(arguments, Mapping):
            given = dict(arguments)
            for key in given:
                if key not in fields:
                    hint = close_to(str(key), fields)
                    self.fail(
                        where,
                        f"has no field {key!r}.{hint} Fields: {', '.join(fields)}.",
                        TypeError,
                    )
        elif arguments is None:
            given = {}
        else:
            given = {fields[0]: arguments}
        values = {
            key: self.marker_field(kind, key, value, f"{where}.{key}")
            for key, value in given.items()
        }
        try:
            marker = cls(**values)
        except (TypeError, ValueError) as error:
            raise type(error)(self.located(where, str(error))) from error
        self.track_blocks(kind, values.get("name"))
        return marker

    def marker_field(self, kind: str, field: str, value: Any, where: str) -> Any:
        if field in ("transform", "op") and _is_per_repeat(value):
            return self.marker("PerRepeat", value["PerRepeat"], where)
        if field == "transform":
            return None if value is None else self.module(value, where)
        if field == "op":
            return self.op(value, where)
        if field == "factory":
            return self.factory(self.text(value, where), where)
        if field == "name" and kind == "GetInput" and isinstance(value, list):
            return tuple(value)  # a read of several names
        return value

    def factory(self, name: str, where: str) -> Any:
        """A `PerRepeat` factory: a registered function or class, by name."""
        found = dataflow.lookup_factory(name)
        if found is None:
            self.fail(
                where,
                f"{name!r} is not a registered factory."
                f"{close_to(name, registry.registered_names())} Register the function "
                "(index, count) -> module in the program that loads the config, before "
                "loading: @torch_circuit.register on its definition, or "
                f"torch_circuit.register(fn, name={name!r}).",
            )
        return found

    def op(self, value: Any, where: str) -> Any:
        """`"add"`/`"mul"`/`"cat"`, a registered function's name, or a module entry."""
        if isinstance(value, str):
            return value if value in ("add", "mul", "cat") else self.named_function(value, where)
        if isinstance(value, Mapping):
            return self.value(value, where)
        return value  # not an op at all: GetInput's own check names it

    def track_blocks(self, kind: str, name: Any) -> None:
        """Keep `self.blocks` (for error messages) in step with StartBlock/EndBlock entries."""
        if kind == "StartBlock":
            self.blocks.append(str(name))
        elif kind == "EndBlock" and self.blocks and self.blocks[-1] == name:
            self.blocks.pop()

    # --- Tied parameters and buffers ---

    def tie(self, model: nn.Module, ties: Any) -> None:
        """Make each key in `ties` the very tensor of the key it maps to."""
        if not isinstance(ties, Mapping):
            self.fail("tied", "expected a mapping from a key to the key it shares.", TypeError)
        for target, source in ties.items():
            where = f"tied[{target!r}]"
            tensor = self.tensor(model, self.text(source, where), where)
            owner, attribute = self.owner(model, self.text(target, where), where)
            current = getattr(owner, attribute)
            if current.shape != tensor.shape:
                self.fail(
                    where,
                    f"has shape {tuple(current.shape)} but {source!r} has {tuple(tensor.shape)}.",
                )
            setattr(owner, attribute, tensor)

    def tensor(self, model: nn.Module, key: str, where: str) -> torch.Tensor:
        owner, attribute = self.owner(model, key, where)
        found: torch.Tensor = getattr(owner, attribute)
        return found

    def owner(self, model: nn.Module, key: str, where: str) -> tuple[nn.Module, str]:
        prefix, _, attribute = key.rpartition(".")
        try:
            owner = model.get_submodule(prefix)
        except AttributeError:
            owner = None
        if owner is None or (
            attribute not in owner._parameters and attribute not in owner._buffers
        ):
            self.fail(where, f"the model has no parameter or buffer {key!r}.")
        return owner, attribute
