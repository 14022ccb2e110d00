"""Bad documents: every error names its place in the file and the fix, and a fuzz test finds
nothing but `TypeError`/`ValueError` with a place in the message."""

from __future__ import annotations

import copy
import json
import re
import warnings
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import torch_circuit
from torch_circuit import Circuit, EndBlock, GetInput, Output, SaveInput, StartBlock


def document(*layers: Any, **fields: Any) -> dict[str, Any]:
    return {"format": "torch-circuit", "version": 1, "layers": list(layers), **fields}


def conv(**extra: Any) -> dict[str, Any]:
    return {"Conv2d": {"in_channels": 2, "out_channels": 2, "kernel_size": 1, **extra}}


def build(config: Any) -> Circuit:
    return Circuit.from_config(config)


# --- The document itself ---


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        ([], TypeError, r"^config: expected a mapping .*got list"),
        ({"version": 1, "layers": []}, ValueError, r"^config: missing the field 'format'"),
        (document(), ValueError, None),
        (
            {**document(), "layer": []},
            ValueError,
            r"^config: unknown field 'layer'. Did you mean 'layers'\?",
        ),
        (
            {**document(), "format": "keras"},
            ValueError,
            r"^format: expected 'torch-circuit', got 'keras'",
        ),
        ({**document(), "version": "1"}, TypeError, r"^version: expected an integer"),
        ({**document(), "version": 0}, ValueError, r"^version: versions start at 1"),
        (
            {**document(), "version": 2},
            ValueError,
            r"^version: the file is format version 2, written by a newer torch-circuit; this one "
            r"reads versions 1 to 1: upgrade torch-circuit",
        ),
        (document(dtype="half"), ValueError, r"^dtype: expected one of float32, float64"),
        (document(layers=None), TypeError, r"^layers: expected a list of entries, got NoneType"),
        (document("ReLU", tied=[]), TypeError, r"^tied: expected a mapping"),
        (
            document("ReLU", tied={"0.weight": "1.weight"}),
            ValueError,
            r"^tied\['0.weight'\]: the model has no parameter or buffer '1.weight'",
        ),
        (
            document({"Linear": [2, 3]}, {"Linear": [3, 2]}, tied={"1.weight": "0.weight"}),
            ValueError,
            r"^tied\['1.weight'\]: has shape \(2, 3\) but '0.weight' has \(3, 2\)",
        ),
    ],
)
def test_document_errors(config: Any, error: type[Exception], message: str | None) -> None:
    if message is None:  # an empty layer list is a valid (identity) circuit
        assert isinstance(build(config), Circuit)
        return
    with pytest.raises(error, match=message):
        build(config)


# --- Entries ---


@pytest.mark.parametrize(
    ("layers", "error", "message"),
    [
        (
            ["Conv2D"],
            ValueError,
            r"^layers\[0\]: unknown type 'Conv2D'. Did you mean 'Conv2d'\? "
            r".*register it before loading: decorate it with @torch_circuit.register",
        ),
        (
            [{"StartBlock": "b"}, "MyBlock", {"EndBlock": "b"}],
            ValueError,
            r"^layers\[1\] \(in block 'b'\): unknown type 'MyBlock'",
        ),
        (
            [conv(paddin=1)],
            TypeError,
            r"^layers\[0\].Conv2d: has no argument 'paddin'. Did you mean 'padding'\? "
            r"Its arguments: in_channels, ",
        ),
        (
            [{"Conv2d": {"in_channels": 2, "out_channels": 2}}],
            TypeError,
            r"^layers\[0\].Conv2d: missing the argument 'kernel_size'",
        ),
        (
            [{"Conv2d": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}],
            TypeError,
            r"^layers\[0\].Conv2d: takes at most 9 positional",
        ),
        ([{"Conv2d": [2, 2], "ReLU": None}], TypeError, r"^layers\[0\]: expected an entry"),
        ([3], TypeError, r"^layers\[0\]: expected an entry.*got 'int'"),
        (
            [{"Linear": {"in_features": 2, "out_features": -1}}],
            ValueError,
            r"^layers\[0\].Linear: Linear\(...\) refused the arguments given: ",
        ),
        (
            [{"MultiheadAttention": [7, 2]}],
            ValueError,
            r"^layers\[0\].MultiheadAttention: MultiheadAttention\(...\) refused the "
            r"arguments given: embed_dim must be divisible",
        ),
        (
            [{"LayerNorm": {"normalized_shape": 4, "eps": "1e-5"}}],
            TypeError,
            r"^layers\[0\].LayerNorm.eps: is the string '1e-5'.*write 1.0e-5",
        ),
        (
            [{"Sequential": [{"Linear": [2, 2]}, "Relu"]}],
            ValueError,
            r"^layers\[0\].Sequential\[1\]: unknown type 'Relu'. Did you mean 'ReLU'\?",
        ),
        (
            [{"Sequential": [{"SaveInput": "a"}]}],
            TypeError,
            r"^layers\[0\].Sequential\[0\]: SaveInput is a marker; markers only go in a layer list",
        ),
        (
            [{"LazyLinear": [3]}],
            ValueError,
            r"^layers\[0\]: torch.nn.LazyLinear is not described by configs: its "
            r"parameters are not initialised",
        ),
        (
            [{"CrossEntropyLoss": None}],
            ValueError,
            r"not described by configs: it is a loss function",
        ),
        (
            [{"Circuit": ["ReLU"]}],
            TypeError,
            r"^layers\[0\].Circuit: expected a mapping with the field 'layers'",
        ),
        (
            [{"Circuit": {"layers": ["ReLU"], "extra": 1}}],
            ValueError,
            r"^layers\[0\].Circuit: unknown field 'extra'",
        ),
        (
            [{"Circuit": {"layers": [{"EndBlock": "x"}]}}],
            ValueError,
            r"^layers\[0\].Circuit.layers: EndBlock\('x'\) at position 0 closes no open block",
        ),
        (
            [{"LambdaLayer": "nowhere"}],
            ValueError,
            r"^layers\[0\].LambdaLayer: 'nowhere' is not a registered function. "
            r".*torch_circuit.register\(fn, name='nowhere'\)",
        ),
        ([["stem"]], TypeError, r"^layers\[0\]: a list in a layer list is a \[name, entry\] pair"),
        (
            [{"Linear": {"in_features": 2, "out_features": 2, "bias": {"a": 1, "b": 2}}}],
            TypeError,
            r"^layers\[0\].Linear.bias: a mapping in an argument is an entry with one key",
        ),
        (
            [{"Linear": {"in_features": {"function": 3}, "out_features": 2}}],
            TypeError,
            r"^layers\[0\].Linear.in_features.function: expected a name",
        ),
        (
            [{"Linear": {"in_features": {"class": "Nope"}, "out_features": 2}}],
            ValueError,
            r"^layers\[0\].Linear.in_features: unknown type 'Nope'",
        ),
    ],
)
def test_entry_errors(layers: list[Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        build(document(*layers))


# --- Markers and blocks: Python's own construction errors, located ---


@pytest.mark.parametrize(
    ("layers", "error", "message"),
    [
        (
            [{"SaveInput": {"nmae": "x"}}],
            TypeError,
            r"^layers\[0\].SaveInput: has no field 'nmae'. Did you mean 'name'\? "
            r"Fields: name, transform",
        ),
        (
            [{"SaveInput": ["x", "ReLU", 3]}],
            TypeError,
            r"^layers\[0\].SaveInput: takes at most 2 values",
        ),
        (
            [{"GetInput": "x"}],
            ValueError,
            r"^layers: GetInput\('x'\) at position 0 reads a name no earlier visible "
            r"SaveInput provides",
        ),
        (
            [{"SaveInput": "x"}, {"GetInput": {"name": "x", "op": "minus"}}],
            ValueError,
            r"^layers\[1\].GetInput.op: 'minus' is not a registered function",
        ),
        (
            [{"SaveInput": "x"}, {"GetInput": {"name": "x", "op": 3}}],
            TypeError,
            r"^layers: GetInput\('x'\) at position 1 has op=3, which is not callable",
        ),
        (
            [{"SaveInput": {"name": 7}}],
            TypeError,
            r"^layers: SaveInput at position 0 has the name 7 \(int\); names must be strings",
        ),
        (
            [{"SaveInput": {"name": "x", "transform": "cfg_nothing"}}],
            ValueError,
            r"^layers\[0\].SaveInput.transform: unknown type 'cfg_nothing'",
        ),
        (
            [{"StartBlock": {"name": "b", "num_repeats": "3"}}, {"EndBlock": "b"}],
            TypeError,
            r"^layers: StartBlock\('b', num_repeats='3'\) at position 0: num_repeats "
            r"must be a positive int",
        ),
        (
            [{"StartBlock": {"name": "b", "num_repeats": 0}}, {"EndBlock": "b"}],
            ValueError,
            r"^layers: .* num_repeats must be a positive int, got 0",
        ),
        (
            [{"StartBlock": {"name": "b", "checkpoint": "yes"}}, {"EndBlock": "b"}],
            TypeError,
            r"^layers: .* checkpoint must be True or False",
        ),
        (
            [{"StartBlock": "b"}, "ReLU"],
            ValueError,
            r"^layers: StartBlock\('b', num_repeats=1\) at position 0 is never closed",
        ),
        (
            [{"StartBlock": "a"}, {"EndBlock": "b"}],
            ValueError,
            r"^layers: EndBlock\('b'\) at position 1 does not match the innermost open block",
        ),
        (
            [{"StartBlock": "a"}, {"EndBlock": "a"}, {"StartBlock": "a"}, {"EndBlock": "a"}],
            ValueError,
            r"^layers: StartBlock\('a', num_repeats=1\) at position 2 reuses the name of "
            r"the block at position 0",
        ),
        (
            [{"StartBlock": "my block"}, {"EndBlock": "my block"}],
            ValueError,
            r"^layers: .* block names key the state_dict and must be Python identifiers",
        ),
        (
            [{"StartBlock": {"name": "b", "unknown": 1}}],
            TypeError,
            r"^layers\[0\].StartBlock: has no field 'unknown'. Fields: name, "
            r"num_repeats, share_weights, checkpoint",
        ),
    ],
)
def test_marker_and_block_errors(layers: list[Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        build(document(*layers))


def test_errors_are_the_ones_python_gets() -> None:
    """The message after the place is exactly what `Circuit(...)` says for the same list."""
    with pytest.raises(ValueError) as from_python:
        Circuit(StartBlock("a"), nn.ReLU(), EndBlock("b"))
    with pytest.raises(ValueError) as from_file:
        build(document({"StartBlock": "a"}, "ReLU", {"EndBlock": "b"}))
    assert str(from_file.value) == f"layers: {from_python.value}"


def test_a_newer_reader_reads_every_older_version() -> None:
    # Version 1 is the first; this records the rule the docs state for later versions.
    assert isinstance(build(document("ReLU", version=1)), Circuit)


def test_unused_saves_warn_as_in_python() -> None:
    with pytest.warns(UserWarning, match=r"SaveInput\('x'\) at position 0 is never read"):
        build(document({"SaveInput": "x"}, "ReLU"))


# --- Named inputs, outputs, reads of several names, push and pop, PerRepeat, named layers ---


@torch_circuit.register
def cfe_factory(index: int, count: int) -> nn.Module:
    return nn.Dropout(0.1 * index)


@torch_circuit.register
def cfe_mix(x: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return x + k * v


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        (
            document("ReLU", inputs="mask"),
            TypeError,
            r"^inputs: expected a list of names \(each required\), such as \[mask\], or a "
            r"mapping of names to defaults, such as \{mask: null\}; got str",
        ),
        (
            document("ReLU", inputs=[3]),
            TypeError,
            r"^inputs: inputs\[0\] is 3 \(int\); input names are strings",
        ),
        (
            document({"GetInput": "m"}, inputs=["m", "m"]),
            ValueError,
            r"^inputs: inputs\[1\] repeats the name 'm' of inputs\[0\]; declare each input once",
        ),
        (document("ReLU", inputs=[""]), ValueError, r"^inputs: inputs\[0\] is an empty name"),
        (
            document({"GetInput": "m"}, inputs={"m": [1]}),
            TypeError,
            r"^inputs.m: an input's default is None, a boolean, a number or a string, got list",
        ),
        (
            document({"StartBlock": "m"}, {"EndBlock": "m"}, inputs=["m"]),
            ValueError,
            r"^layers: inputs\[0\] is named 'm', like the block at position 0; rename",
        ),
        (
            document({"GetInput": "mask"}, inputs=["masks"]),
            ValueError,
            r"^layers: GetInput\('mask'\) at position 0 reads a name no earlier visible "
            r"SaveInput provides; visible here: \['masks'\]",
        ),
        (
            document({"Circuit": {"layers": [{"GetInput": "m"}], "inputs": "m"}}),
            TypeError,
            r"^layers\[0\].Circuit.inputs: expected a list of names",
        ),
    ],
)
def test_input_errors(config: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        build(config)


def test_an_unread_input_warns_as_in_python() -> None:
    with pytest.warns(UserWarning, match=r"input 'mask' is never read"):
        build(document("ReLU", inputs=["mask"]))


SAVED_KV = ({"SaveInput": "k"}, {"SaveInput": "v"})


@pytest.mark.parametrize(
    ("layers", "error", "message"),
    [
        # Outputs
        (
            [{"Output": 3}],
            TypeError,
            r"^layers: Output at position 0 has the name 3 \(int\); names must be strings",
        ),
        ([{"Output": ""}], ValueError, r"^layers: Output at position 0 has an empty name"),
        (
            [{"Output": "y"}, {"Output": "y"}],
            ValueError,
            r"^layers: Output\('y'\) at position 1 reuses the name of the Output at position 0",
        ),
        (
            [{"Output": {"nme": "y"}}],
            TypeError,
            r"^layers\[0\].Output: has no field 'nme'. Did you mean 'name'\? Fields: name\.",
        ),
        ([{"Output": ["a", "b"]}], TypeError, r"^layers\[0\].Output: takes at most 1 value "),
        # Reads of several names
        (
            [*SAVED_KV, {"GetInput": {"name": ["k", "v"]}}],
            ValueError,
            r"^layers: GetInput\(\('k', 'v'\)\) at position 2 reads 2 names with op=add",
        ),
        (
            [
                *SAVED_KV,
                {"GetInput": {"name": ["k", "v"], "op": "cfe_mix", "transform": {"Identity": {}}}},
            ],
            ValueError,
            r"^layers: GetInput\(\('k', 'v'\)\) at position 2 has a transform",
        ),
        (
            [{"GetInput": {"name": [], "op": "cfe_mix"}}],
            ValueError,
            r"^layers: GetInput\(\(\)\) at position 0 reads no name",
        ),
        (
            [{"SaveInput": "k"}, {"GetInput": {"name": ["k", 3], "op": "cfe_mix"}}],
            TypeError,
            r"^layers: GetInput\(\('k', 3\)\) at position 1 names 3; names must be non-empty",
        ),
        (
            [{"SaveInput": "k"}, {"GetInput": {"name": ["k", "v"], "op": "cfe_mix"}}],
            ValueError,
            r"^layers: GetInput\(\('k', 'v'\)\) at position 1 reads a name no earlier visible "
            r"SaveInput provides \('v'\)",
        ),
        # Push and pop
        (
            [{"SaveInput": {"name": "x", "push": "yes"}}],
            TypeError,
            r"^layers: SaveInput\('x'\) at position 0: push must be True or False, got 'yes'",
        ),
        (
            [
                {"StartBlock": {"name": "b", "num_repeats": 2}},
                {"SaveInput": {"name": "x", "push": True}},
                {"EndBlock": "b"},
                *[{"GetInput": {"name": "x", "pop": True}}] * 3,
            ],
            ValueError,
            r"^layers: GetInput\('x', pop=True\) at position 5 pops the stack 'x' when it is "
            r"empty: the pushes it could take, SaveInput\('x', push=True\) at position 1 "
            r"\(2 times\), were all taken before",
        ),
        (
            [{"GetInput": [["k"], "add", None, True]}],
            TypeError,
            r"^layers\[0\].GetInput: takes at most 3 values \(name, op, transform\); give pop "
            r"by name",
        ),
        (
            [{"SaveInput": {"name": "x", "transformation": {"Identity": {}}}}],
            TypeError,
            r"^layers\[0\].SaveInput: has no field 'transformation'. Did you mean 'transform'\?",
        ),
        # PerRepeat
        (
            [{"PerRepeat": "nowhere"}],
            ValueError,
            r"^layers\[0\].PerRepeat.factory: 'nowhere' is not a registered factory. Register "
            r"the function \(index, count\) -> module .*torch_circuit.register\(fn, "
            r"name='nowhere'\)",
        ),
        (
            [{"PerRepeat": 3}],
            TypeError,
            r"^layers\[0\].PerRepeat.factory: expected a name \(a string\), got 3",
        ),
        (
            [{"PerRepeat": {"factry": "cfe_factory"}}],
            TypeError,
            r"^layers\[0\].PerRepeat: has no field 'factry'. Did you mean 'factory'\?",
        ),
        (
            [
                {"StartBlock": {"name": "b", "share_weights": True}},
                {"PerRepeat": "cfe_factory"},
                {"EndBlock": "b"},
            ],
            ValueError,
            r"^layers: PerRepeat\(cfe_factory\) at position 1 is inside a block whose repeats "
            r"share weights",
        ),
        (
            [{"PerRepeat": "cfe_mix"}],
            TypeError,
            r"^layers: cfe_mix\(\) missing 1 required positional argument: 'v' \(torch_circuit: "
            r"PerRepeat\(cfe_mix\) at position 0, building index 0 of 1\)",
        ),
        (
            [{"Sequential": [{"PerRepeat": "cfe_factory"}]}],
            TypeError,
            r"^layers\[0\].Sequential\[0\]: PerRepeat goes in a layer list, or as a "
            r"GetInput's op or a marker's transform",
        ),
        (
            [
                {"SaveInput": {"name": "x", "transform": {"PerRepeat": "nowhere"}}},
                {"GetInput": "x"},
            ],
            ValueError,
            r"^layers\[0\].SaveInput.transform.PerRepeat.factory: 'nowhere' is not a registered",
        ),
        (
            [{"SaveInput": {"name": "x", "transform": {"SaveInput": "z"}}}],
            TypeError,
            r"^layers\[0\].SaveInput.transform: SaveInput is a marker; markers only go in a "
            r"layer list",
        ),
        (
            [{"SaveInput": "x"}, {"GetInput": {"name": "x", "op": {"PerRepeat": "f", "p": 1}}}],
            TypeError,
            r"^layers\[1\].GetInput.op: a mapping in an argument is an entry with one key",
        ),
        # Named layers
        (
            [["my stem", "ReLU"]],
            ValueError,
            r"^layers: \('my stem', ReLU\(...\)\) at position 0: layer names key the state_dict "
            r"and must be Python identifiers.*use e.g. 'my_stem'",
        ),
        (
            [["a", "ReLU"], ["a", "Tanh"]],
            ValueError,
            r"^layers: \('a', Tanh\(...\)\) at position 1 reuses the name of the layer at "
            r"position 0 in the same scope",
        ),
        (
            [{"StartBlock": "b"}, {"EndBlock": "b"}, ["b", "ReLU"]],
            ValueError,
            r"^layers: \('b', ReLU\(...\)\) at position 2 reuses the name of the block at "
            r"position 0",
        ),
        (
            [["b", {"StartBlock": "b"}], {"EndBlock": "b"}],
            TypeError,
            r"^layers: position 0 names StartBlock\('b', num_repeats=1\) 'b'; blocks are named "
            r"by their StartBlock",
        ),
        (
            [["a", "ReLU", "x"]],
            TypeError,
            r"^layers\[0\]: a list in a layer list is a \[name, entry\] pair",
        ),
        ([[3, "ReLU"]], TypeError, r"^layers\[0\]: a list in a layer list is a \[name, entry\]"),
        (
            [["a", "Relu"]],
            ValueError,
            r"^layers\[0\]\[1\]: unknown type 'Relu'. Did you mean 'ReLU'\?",
        ),
        (
            [{"StartBlock": "s"}, ["training", "ReLU"], {"EndBlock": "s"}],
            ValueError,
            r"^layers: \('training', ReLU\(...\)\) at position 1: the name 'training' is taken "
            r"by a module attribute",
        ),
    ],
)
def test_errors_of_the_new_entries(layers: list[Any], error: type[Exception], message: str) -> None:
    with warnings.catch_warnings(), pytest.raises(error, match=message):
        warnings.simplefilter("ignore")
        build(document(*layers))


def test_a_pop_with_no_push_is_a_located_error() -> None:
    with pytest.raises(
        ValueError,
        match=r"^layers: GetInput\('x', pop=True\) at position 1 pops the stack 'x', but no "
        r"SaveInput\('x', push=True\) runs before it",
    ):
        build(document("ReLU", {"GetInput": {"name": "x", "pop": True}}))


# --- Fuzz: malformed documents raise TypeError/ValueError that name a place ---


@torch_circuit.register
def cfe_drop(index: int, count: int) -> nn.Module:
    return nn.Dropout(0.1 * index)


@torch_circuit.register
def cfe_identity(index: int, count: int) -> nn.Module:
    return nn.Identity()


@torch_circuit.register
class CfeScaleBy(nn.Module):
    """An op: `x * scale`."""

    def forward(self, x: Tensor, scale: Any) -> Tensor:
        return x * scale


@torch_circuit.register
def cfe_scale_by(index: int, count: int) -> nn.Module:
    return CfeScaleBy()


VALID = document(
    ["stem", {"Conv2d": {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "padding": 1}}],
    {"BatchNorm2d": {"num_features": 4}},
    {"StartBlock": {"name": "stage", "num_repeats": 2}},
    {"SaveInput": "r"},
    {"Conv2d": {"in_channels": 4, "out_channels": 4, "kernel_size": 1}},
    "ReLU",
    {"GetInput": {"name": "r", "op": "add"}},
    {"PerRepeat": "cfe_drop"},
    {"GetInput": {"name": "scale", "op": {"PerRepeat": "cfe_scale_by"}}},
    {"Output": "hidden"},
    {"EndBlock": "stage"},
    {"SaveInput": {"name": "s", "transform": {"PerRepeat": "cfe_identity"}}},
    {"Circuit": {"layers": [{"SaveInput": "t"}, {"Dropout": 0.1}, {"GetInput": "t"}]}},
    {"GetInput": {"name": ["s", "scale"], "op": "cfe_mix"}},
    {"AdaptiveAvgPool2d": [[1, 1]]},
    "Flatten",
    ["out", {"Output": "logits"}],
    inputs={"scale": 1.0},
)
STACKS = document(
    {"StartBlock": {"name": "down", "num_repeats": 2}},
    {"Linear": [3, 3]},
    {"SaveInput": {"name": "skip", "push": True}},
    {"EndBlock": "down"},
    {"StartBlock": {"name": "up", "num_repeats": 2}},
    {"GetInput": {"name": "skip", "op": "cat", "pop": True}},
    {"Linear": [6, 3]},
    {"EndBlock": "up"},
)
PLACE = re.compile(r"^(config|format|version|dtype|inputs|tied|layers)")

small = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 9),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from(
        [
            *("", "r", "s", "stage", "ReLU", "Conv2d", "add", "cat", "Circuit", "x y"),
            *("scale", "hidden", "skip", "cfe_drop", "cfe_mix", "Output", "PerRepeat"),
        ]
    ),
)
KEYS = ["layers", "name", "Linear", "p", "op", "SaveInput", "inputs", "Output", "PerRepeat"]


def values(*keys: str) -> st.SearchStrategy[Any]:
    return st.recursive(
        small,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from([*KEYS, *keys]), inner, max_size=2)
        ),
        max_leaves=8,
    )


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


@st.composite
def malformed(draw: st.DrawFn, valid: dict[str, Any], *keys: str) -> Any:
    config = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(config)
        path = draw(st.sampled_from(paths))
        replacement = draw(values(*keys))
        if not path:
            config = replacement
            continue
        parent = config
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "insert"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "insert" and isinstance(parent, list):
            parent.insert(path[-1], replacement)
        else:
            parent[path[-1]] = replacement
    return config


def fails_with_a_place(config: Any) -> None:
    """`config` builds, and describes again, or fails with an error naming its place."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = build(config)
        except (TypeError, ValueError) as error:
            assert PLACE.match(str(error)), str(error)
            return
    assert isinstance(model, Circuit)
    json.dumps(model.to_config())  # whatever builds can be described again


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed(VALID))
def test_fuzzed_documents_fail_with_a_place(config: Any) -> None:
    fails_with_a_place(config)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed(STACKS, "push", "pop"))
def test_fuzzed_documents_with_stacks_fail_with_a_place(config: Any) -> None:
    fails_with_a_place(config)


def test_the_valid_documents_of_the_fuzz_tests_build() -> None:
    model = build(VALID)
    out = model(torch.randn(1, 2, 5, 5), scale=2.0)
    assert list(out) == ["hidden", "logits"]
    assert out["logits"].shape == (1, 4) and len(out["hidden"]) == 2
    assert isinstance(model.get_submodule("12"), Circuit)
    assert isinstance(model.get_submodule("11"), SaveInput)
    assert isinstance(model.get_submodule("stage.1.8.op"), CfeScaleBy)
    assert isinstance(model.get_submodule("out"), Output)
    assert model.get_submodule("stage.1.7").p == pytest.approx(0.1)
    stacks = build(STACKS)
    assert stacks(torch.randn(2, 3)).shape == (2, 3)
    assert isinstance(stacks.get_submodule("up.1.5"), GetInput)
