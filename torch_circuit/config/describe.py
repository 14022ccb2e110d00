"""`Circuit.to_config`: a circuit as a plain-data document that builds it again.

The document's `layers` is the layer list written out: an entry per layer, a marker entry
per `SaveInput`/`GetInput`/`Output`, a `PerRepeat` entry naming the factory of a per-repeat
layer, `[name, entry]` for a named layer, and `StartBlock`/`EndBlock` entries around each
block body, so `layers[i]` is position `i` of the `Circuit(...)` call; named inputs are
listed under `inputs`. Parameters and buffers shared between layers are listed under `tied`;
the model's floating dtype, when not `float32`, under `dtype`.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch
from torch import nn

from ..block import Block
from ..markers import GetInput, Output, PerRepeat, SaveInput
from ..nodes import BlockNode, LayerNode, Node, OutputNode, ReadNode, SaveNode
from ..ops import NAMED_OPS
from ..scope import Scope
from . import dataflow
from .build import ALIASES
from .describe_entries import EntryDescriber
from .format import DTYPE_NAMES, FORMAT, VERSION
from .state import differences

__all__ = ["describe_circuit"]

# The fields each marker entry may have and their defaults (left out when at the default).
_MARKER_FIELDS: dict[str, tuple[tuple[str, Any], ...]] = {
    "SaveInput": (("name", None), ("transform", None), ("push", False)),
    "GetInput": (("name", None), ("op", "add"), ("transform", None), ("pop", False)),
    "Output": (("name", None),),
}
_BLOCK_FIELDS = frozenset(
    {"position", "end", "key", "name", "num_repeats", "share_weights", "checkpoint", "body"}
)
_LEAVES: dict[type, tuple[str, type]] = {
    SaveNode: ("SaveInput", SaveInput),
    ReadNode: ("GetInput", GetInput),
    OutputNode: ("Output", Output),
}


def describe_circuit(circuit: Scope, circuit_class: type[Scope]) -> dict[str, Any]:
    """The config document of `circuit`; see the module docstring.

    Raises:
        ValueError: something in the circuit cannot be described exactly; the message names
            its place (`layers[7].op`), why, and the fix.
    """
    if type(circuit) is not circuit_class:
        raise ValueError(
            f"to_config describes a Circuit; {type(circuit).__name__} subclasses it and may "
            "behave differently. Build the model as a Circuit, or nest it in one, "
            f"Circuit({type(circuit).__name__}(...)), with its class registered."
        )
    dtype = _model_dtype(circuit)
    document: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    if dtype is not torch.float32:
        document["dtype"] = DTYPE_NAMES[dtype]
    describer = DocumentDescriber(circuit_class, dtype)
    describer.check_hooks(circuit, "the circuit")
    document.update(describer.fields(circuit, ""))
    ties = _ties(circuit)
    if ties:
        document["tied"] = ties
    return document


class DocumentDescriber(EntryDescriber):
    """Describes a circuit's fields, layer lists, markers and blocks."""

    def __init__(self, circuit_class: type[nn.Module], dtype: torch.dtype) -> None:
        super().__init__(circuit_class, dtype)
        self.built: dataflow.Built = {}  # what the PerRepeats of the circuit described built

    def circuit(self, circuit: Scope, where: str) -> dict[str, Any]:
        outer, self.blocks = self.blocks, []
        try:
            return self.fields(circuit, f"{where}.")
        finally:
            self.blocks = outer

    def fields(self, circuit: Scope, base: str) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        inputs = dataflow.declared_inputs(circuit, f"{base}inputs")
        if inputs is not None:
            fields["inputs"] = inputs
        layers: list[Any] = []
        outer, self.built = self.built, dataflow.occurrences(circuit)
        try:
            self.scope(circuit, circuit.nodes, f"{base}layers", layers)
        finally:
            self.built = outer
        fields["layers"] = layers
        return fields

    def scope(self, scope: nn.Module, nodes: tuple[Node, ...], where: str, out: list[Any]) -> None:
        for node in nodes:
            at = f"{where}[{node.position}]"
            if isinstance(node, BlockNode):
                self.block(scope.get_submodule(node.key), node, where, out)
                continue
            entry = self.leaf(node, scope.get_submodule(node.key), at)
            out.append(dataflow.named_entry(node.key, node.position, entry))

    def leaf(self, node: Node, module: nn.Module, where: str) -> Any:
        """The entry of a layer, marker or per-repeat layer."""
        parts = dataflow.per_repeat_parts(node)
        marker = _LEAVES.get(type(node))
        if marker is not None:
            kind, cls = marker
            return self.marker(kind, module, cls, where, node.position, parts)
        if not isinstance(node, LayerNode):
            self.refuse(where, f"to_config does not describe {type(node).__name__} yet")
        if "" in parts:
            return self.per_repeat(parts[""], node.position, "", where)
        return _bare(self.module(module, where))

    def block(self, block: nn.Module, node: BlockNode, where: str, out: list[Any]) -> None:
        at = f"{where}[{node.position}]"
        unknown = {f.name for f in dataclasses.fields(node)} - _BLOCK_FIELDS
        if unknown or not isinstance(block, Block):
            self.refuse(at, f"to_config does not describe the block option {sorted(unknown)} yet")
        start: dict[str, Any] = {"name": node.name}
        if node.num_repeats != 1:
            start["num_repeats"] = node.num_repeats
        for option in ("share_weights", "checkpoint"):
            value = getattr(node, option)
            if value is not False:  # passed through as given (checkpoint may be a number)
                start[option] = value
        out.append({"StartBlock": start if len(start) > 1 else node.name})
        self.check_hooks(block, f"block {node.name!r}")
        self.blocks.append(node.name)
        first = block.get_submodule(node.repeat_key(0))
        self.scope(first, node.body, where, out)
        by_design = dataflow.per_repeat_paths(node.body)
        for index in range(1, node.num_repeats):
            other = block.get_submodule(node.repeat_key(index))
            self.check_hooks(other, f"repeat {index} of block {node.name!r}")
            found = (
                None
                if other is first
                else differences(other, first, reference="repeat 0", skip=by_design)
            )
            if found is not None:
                self.refuse(
                    at,
                    f"repeat {index} of block {node.name!r} is not a fresh copy of repeat 0: "
                    f"{found}",
                    "a config describes one body per block; build layers that differ per "
                    "repeat with PerRepeat (or unroll the block)",
                )
        self.blocks.pop()
        out.append({"EndBlock": node.name})

    def marker(
        self,
        kind: str,
        marker: nn.Module,
        cls: type,
        where: str,
        position: int,
        parts: dict[str, PerRepeat],
    ) -> Any:
        if type(marker) is not cls:
            self.refuse(where, f"{marker!r} stands where the circuit was built with a {kind}")
        self.check_hooks(marker, where)
        parameters = inspect.signature(cls).parameters
        known = dict(_MARKER_FIELDS[kind])
        for name in parameters:
            if name not in known and name not in ALIASES:
                self.refuse(where, f"to_config does not describe {kind}'s {name!r} yet")
        fields: dict[str, Any] = {}
        for name, default in known.items():
            if name not in parameters:
                continue
            at = f"{where}.{kind}.{name}"
            if name in parts:
                fields[name] = self.per_repeat(parts[name], position, name, at)
                continue
            value = self.marker_field(name, getattr(marker, name), at)
            if value != default or name == "name":
                fields[name] = value
        if list(fields) == ["name"] and isinstance(fields["name"], str):
            return {kind: fields["name"]}
        return {kind: fields}

    def marker_field(self, name: str, value: Any, where: str) -> Any:
        if name == "transform":
            return None if value is None else self.module(value, where)
        if name == "op":
            return self.op(value, where)
        if isinstance(value, tuple):
            return list(value)  # a read of several names
        return value

    def op(self, op: Any, where: str) -> Any:
        for name, known in NAMED_OPS.items():
            if op is known:
                return name
        if isinstance(op, nn.Module):
            return self.module(op, where)
        return self.function(op, where)

    def per_repeat(self, marker: PerRepeat, position: int, part: str, where: str) -> Any:
        """`{"PerRepeat": name}`, once every module the factory built is checked to be what
        it builds for that index."""
        factory = marker.factory
        name = dataflow.factory_name(factory)
        if name is None:
            label = getattr(factory, "__qualname__", None) or repr(factory)
            what = "a lambda" if getattr(factory, "__name__", None) == "<lambda>" else label
            self.refuse(
                where,
                f"its PerRepeat factory {what} is not registered, and a config names "
                "factories rather than storing code",
                "define it as a function (index, count) -> module and register it "
                "(@torch_circuit.register, or torch_circuit.register(fn, name='...')) before "
                "building the model, and before loading",
            )
        modules = self.built.get((position, part), [])
        found = dataflow.rebuild_difference(factory, modules, self.dtype)
        if found is not None:
            index, difference = found
            self.refuse(
                where,
                f"the module PerRepeat({name}) built for index {index} of {len(modules)} is "
                f"not what the factory builds for it: {difference}",
                "leave the modules a factory builds as built, or build the change into the factory",
            )
        return {"PerRepeat": name}


def _bare(entry: dict[str, Any]) -> Any:
    """`{"ReLU": {}}` is written `"ReLU"` in a layer list."""
    (name, arguments), *_ = entry.items()
    return name if arguments == {} else entry


def _model_dtype(model: nn.Module) -> torch.dtype:
    tensors = [*model.parameters(), *model.buffers()]
    floating = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    if floating not in DTYPE_NAMES:
        raise ValueError(
            f"to_config describes models in {', '.join(DTYPE_NAMES.values())}; this one is "
            f"{floating}. Convert it first, e.g. model.float()."
        )
    return floating


def _ties(model: nn.Module) -> dict[str, str]:
    """Each key whose tensor is also registered under an earlier key -> that earlier key."""
    first: dict[int, str] = {}
    ties: dict[str, str] = {}
    named = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    for key, tensor in named:
        earlier = first.setdefault(id(tensor), key)
        if earlier != key:
            ties[key] = earlier
    return ties
