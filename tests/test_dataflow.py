"""Beyond one tensor: named inputs, reads of several names, outputs, per-repeat layers and
skips that outlive their block; their semantics and every error message."""

from __future__ import annotations

import functools
import gc
import re
import warnings
import weakref
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from torch_circuit import (
    Circuit,
    EndBlock,
    GetInput,
    Output,
    PerRepeat,
    SaveInput,
    StartBlock,
    UnusedSaveWarning,
)
from torch_circuit.nodes import InputNode, OutputNode, ReadNode, SaveNode


def lin(width: int = 4) -> nn.Linear:
    return nn.Linear(width, width)


def scaled(x: Tensor, mask: Tensor | None) -> Tensor:
    return x if mask is None else x * mask


# --- Named inputs ---


def masked() -> Circuit:
    return Circuit(lin(), GetInput("mask", op=scaled), lin(), inputs=("mask",))


def test_named_inputs_bind_by_position_or_keyword() -> None:
    model = masked()
    x, mask = torch.randn(2, 4), (torch.rand(2, 4) > 0.5).float()
    by_position, by_keyword = model(x, mask), model(x, mask=mask)
    expected = model.get_submodule("2")(model.get_submodule("0")(x) * mask)
    torch.testing.assert_close(by_position, expected, rtol=0, atol=0)
    torch.testing.assert_close(by_keyword, expected, rtol=0, atol=0)


def test_an_input_named_x_binds_by_keyword_too() -> None:
    # The main tensor is positional-only, so its name is free for an input.
    model = Circuit(GetInput("x", op=torch.mul), inputs=("x",))
    ones, three = torch.ones(2), torch.full((2,), 3.0)
    torch.testing.assert_close(model(ones, x=three), three, rtol=0, atol=0)
    torch.testing.assert_close(model(ones, three), three, rtol=0, atol=0)


def test_a_default_is_passed_when_the_input_is_left_out() -> None:
    seen: list[Any] = []

    def op(x: Tensor, t: Any) -> Tensor:
        seen.append(t)
        return x

    model = Circuit(GetInput("mask", op=op), GetInput("t", op=op), inputs={"mask": None, "t": 3})
    model(torch.zeros(1))
    model(torch.zeros(1), t=5)
    assert seen == [None, 3, None, 5]


def test_inputs_are_visible_in_every_block_and_shadowed_by_saves() -> None:
    def pick(x: Tensor, value: Tensor) -> Tensor:
        return value

    model = Circuit(
        StartBlock("outer", num_repeats=2),
        StartBlock("inner"),
        GetInput("c", op=pick),  # the input
        Output("before"),
        SaveInput("c", transform=nn.Identity()),
        nn.Tanh(),
        GetInput("c", op=pick),  # the inner save, shadowing the input
        Output("after"),
        EndBlock("inner"),
        EndBlock("outer"),
        inputs=("c",),
    )
    c = torch.full((1,), 0.5)
    out = model(torch.zeros(1), c)
    assert [v.item() for v in out["before"]] == [0.5, 0.5]
    assert [v.item() for v in out["after"]] == [0.5, 0.5]


def test_named_inputs_are_in_the_nodes() -> None:
    model = Circuit(
        lin(), GetInput("mask", op=scaled), GetInput("mask", op=scaled), inputs={"mask": None}
    )
    assert model.input_nodes == (InputNode(0, "mask", False, None, (1, 2)),)
    read = model.nodes[1]
    assert isinstance(read, ReadNode) and read.sources == ("mask",)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x: m(x), "Circuit.forward(x, mask, t=None) is missing the input 'mask'; pass"),
        (
            lambda m, x: m(x, x, x, x),
            "Circuit.forward(x, mask, t=None) takes 2 named inputs after x, but 3 were given",
        ),
        (
            lambda m, x: m(x, x, mask=x),
            "Circuit.forward(x, mask, t=None) got the input 'mask' twice, by position and by",
        ),
        (
            lambda m, x: m(x, x, mass=x),
            "Circuit.forward(x, mask, t=None) got an unknown input 'mass'; the named inputs "
            "are ['mask', 't']",
        ),
    ],
)
def test_bad_calls_name_the_input_and_the_signature(call: Any, message: str) -> None:
    model = Circuit(
        GetInput("mask", op=scaled), GetInput("t", op=scaled), inputs={"mask": ..., "t": None}
    )
    object.__setattr__(
        model,
        "_inputs",
        tuple(  # make "mask" required, as a sequence would
            InputNode(n.index, n.name, n.name == "mask", n.default, n.readers)
            for n in model.input_nodes
        ),
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        call(model, torch.ones(1))


def test_a_required_input_from_a_sequence() -> None:
    with pytest.raises(TypeError, match=re.escape("Circuit.forward(x, mask) is missing the")):
        masked()(torch.ones(1, 4))


def test_a_circuit_without_inputs_refuses_more_arguments() -> None:
    model = Circuit(lin())
    with pytest.raises(
        TypeError,
        match=re.escape(
            "Circuit.forward(x) takes 0 named inputs after x, but 1 was given by position; "
            "declare them with Circuit(..., inputs=('mask',))."
        ),
    ):
        model(torch.ones(1, 4), torch.ones(1, 4))
    with pytest.raises(
        TypeError,
        match=re.escape(
            "Circuit.forward(x) got an unknown input 'mask'; declare it with "
            "Circuit(..., inputs=('mask',))."
        ),
    ):
        model(torch.ones(1, 4), mask=torch.ones(1, 4))


@pytest.mark.parametrize(
    ("inputs", "error", "message"),
    [
        ("mask", TypeError, "inputs must be a sequence of names or a mapping from name to"),
        (5, TypeError, "inputs must be a sequence of names or a mapping from name to default"),
        ((3,), TypeError, "inputs[0] is 3 (int); input names are strings"),
        (("",), ValueError, "inputs[0] is an empty name; give it one"),
        (("m", "m"), ValueError, "inputs[1] repeats the name 'm' of inputs[0]; declare each"),
        (("b",), ValueError, "inputs[0] is named 'b', like the block at position 1; rename"),
        (
            ("m", "self"),
            ValueError,
            "inputs[1] is named 'self', which nn.Module's call takes for the module itself, so "
            "it could not be passed by keyword; choose another name.",
        ),
    ],
)
def test_bad_inputs_are_refused_at_construction(inputs: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Circuit(lin(), StartBlock("b"), lin(), EndBlock("b"), inputs=inputs)


def test_the_fix_for_a_single_name_is_suggested() -> None:
    with pytest.raises(TypeError, match=re.escape("e.g. inputs=('mask',)")):
        Circuit(lin(), inputs="mask")


def test_an_input_nothing_reads_warns() -> None:
    with pytest.warns(
        UnusedSaveWarning,
        match=re.escape("input 'mask' is never read: the Circuit ends before any GetInput('mask')"),
    ):
        Circuit(lin(), inputs=("mask",))


def test_a_read_of_an_undeclared_name_lists_the_inputs() -> None:
    with pytest.raises(ValueError, match=re.escape("visible here: ['mask']. Did you mean 'mask'")):
        Circuit(GetInput("masks", op=scaled), inputs=("mask",))


# --- Reads of several names ---


def test_a_read_of_several_names_passes_them_in_order() -> None:
    def combine(x: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return x * 100 + k * 10 + v

    model = Circuit(
        SaveInput("k", transform=nn.Identity()),
        lin(1),
        SaveInput("v"),
        GetInput(("k", "v"), op=combine),
    )
    with torch.no_grad():
        model.get_submodule("1").weight.fill_(2.0)
        model.get_submodule("1").bias.zero_()
    assert model(torch.ones(1)).item() == 200 + 10 + 2
    read = model.nodes[-1]
    assert isinstance(read, ReadNode)
    assert (read.names, read.sources, read.name) == (("k", "v"), (0, 2), "k, v")


def test_cat_of_several_names_concatenates_all() -> None:
    model = Circuit(SaveInput("a"), SaveInput("b"), GetInput(("a", "b"), op="cat"))
    assert model(torch.ones(2, 3)).shape == (2, 9)


@pytest.mark.parametrize(
    ("read", "error", "message"),
    [
        (
            GetInput(("a", "b"), transform=nn.Identity()),
            ValueError,
            "GetInput(('a', 'b')) at position 2 has a transform, which applies to one saved",
        ),
        (GetInput(()), ValueError, "GetInput(()) at position 2 reads no name; name one"),
        (GetInput(("a", 3)), TypeError, "GetInput(('a', 3)) at position 2 names 3; names must"),
        (
            GetInput(("a", "b")),
            ValueError,
            "GetInput(('a', 'b')) at position 2 reads 2 names with op=add, which combines two "
            "tensors; pass an op taking the current tensor and 2 values",
        ),
        (
            GetInput(("a", "b"), op=lambda x, k: x),
            TypeError,
            "GetInput(('a', 'b')) at position 2 has op=lambda(x, k), which cannot take 3 "
            "arguments; an op receives the current tensor, then 2 saved values",
        ),
        (
            GetInput(("a", "zz"), op=lambda x, a, b: x),
            ValueError,
            "GetInput(('a', 'zz')) at position 2 reads a name no earlier visible SaveInput "
            "provides ('zz'); visible here: ['a', 'b'].",
        ),
        (
            GetInput(("a", "b"), op=lambda x, a, b: x, pop=True),
            ValueError,
            "GetInput(('a', 'b'), pop=True) at position 2 pops several stacks",
        ),
    ],
)
def test_bad_reads_of_several_names(read: GetInput, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Circuit(SaveInput("a"), SaveInput("b"), read)


# --- Outputs ---


def test_outputs_are_a_dict_in_declaration_order() -> None:
    model = Circuit(
        lin(),
        Output("first"),
        StartBlock("b", num_repeats=3),
        lin(),
        Output("hidden"),
        EndBlock("b"),
        Output("last"),
    )
    x = torch.randn(2, 4)
    out = model(x)
    assert list(out) == ["first", "hidden", "last"]
    assert isinstance(out["first"], Tensor) and isinstance(out["hidden"], tuple)
    h = model.get_submodule("0")(x)
    assert torch.equal(out["first"], h)
    for index, hidden in enumerate(out["hidden"]):
        h = model.b[index].get_submodule("3")(h)
        assert torch.equal(hidden, h)
    assert torch.equal(out["last"], h)


def test_outputs_in_nested_blocks_flatten_in_execution_order() -> None:
    def counter(x: Tensor) -> Tensor:
        return x + 1

    model = Circuit(
        StartBlock("outer", num_repeats=2),
        StartBlock("inner", num_repeats=3),
        counter,
        Output("steps"),
        EndBlock("inner"),
        counter,
        Output("outer_steps"),
        EndBlock("outer"),
    )
    out = model(torch.zeros(1))
    assert [v.item() for v in out["steps"]] == [1, 2, 3, 5, 6, 7]
    assert [v.item() for v in out["outer_steps"]] == [4, 8]
    assert [n.count for n in model.nodes[0].body if isinstance(n, OutputNode)] == [2]


def test_an_output_in_a_shared_block_is_fine() -> None:
    model = Circuit(
        StartBlock("b", num_repeats=2, share_weights=True), lin(), Output("h"), EndBlock("b")
    )
    assert len(model(torch.randn(1, 4))["h"]) == 2


@pytest.mark.parametrize(
    ("output", "error", "message"),
    [
        (Output(3), TypeError, "Output at position 2 has the name 3 (int); names must be"),  # type: ignore[arg-type]
        (Output(""), ValueError, "Output at position 2 has an empty name; give it one"),
        (
            Output("a"),
            ValueError,
            "Output('a') at position 2 reuses the name of the Output at position 0; outputs",
        ),
    ],
)
def test_bad_outputs(output: Output, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Circuit(Output("a"), lin(), output)


def test_each_output_keeps_alive_its_own_tensor_and_nothing_else() -> None:
    made: list[weakref.ref[Tensor]] = []

    def track(x: Tensor) -> Tensor:
        y = x * 2
        made.append(weakref.ref(y))
        return y

    model = Circuit(SaveInput("s"), track, track, GetInput("s"), track, Output("o"), track, track)
    with torch.no_grad():
        out = model(torch.ones(3))
    gc.collect()
    alive = [ref() is not None for ref in made]
    assert alive == [False, False, True, False, False]  # only the output's own tensor
    assert out["o"] is made[2]()


# --- Per-repeat layers ---


def test_per_repeat_indexes_occurrences_across_nested_repeats() -> None:
    calls: list[tuple[int, int]] = []

    def make(index: int, count: int) -> nn.Module:
        calls.append((index, count))
        return nn.Linear(4, 4)

    model = Circuit(
        PerRepeat(make),
        StartBlock("outer", num_repeats=2),
        StartBlock("inner", num_repeats=3),
        PerRepeat(make),
        EndBlock("inner"),
        EndBlock("outer"),
    )
    assert calls == [(0, 1), *((i, 6) for i in range(6))]
    built = [model.get_submodule(f"outer.{o}.inner.{i}.3") for o in range(2) for i in range(3)]
    assert len({id(m) for m in built}) == 6


def test_per_repeat_modules_are_used_as_built() -> None:
    made: list[nn.Module] = []

    def make(index: int, count: int) -> nn.Module:
        layer = nn.Linear(4, 4)
        with torch.no_grad():
            layer.weight.fill_(index)
        made.append(layer)
        return layer

    model = Circuit(StartBlock("b", num_repeats=3), PerRepeat(make), EndBlock("b"))
    for index in range(3):
        assert model.b[index].get_submodule("1") is made[index]
        assert torch.all(made[index].weight == index)  # not re-initialised


def given(module: nn.Module, index: int, count: int) -> nn.Module:
    return module


def test_per_repeat_ops_and_transforms_are_used_as_built_in_every_repeat() -> None:
    # A factory that hands out the same module in every repeat ties it there, as a layer's
    # would: repeats after the first are not copies of the first's.
    transform, op = nn.Linear(4, 4), nn.Bilinear(4, 4, 4)
    model = Circuit(
        StartBlock("b", num_repeats=3),
        SaveInput("r", transform=PerRepeat(functools.partial(given, transform))),
        nn.Tanh(),
        GetInput("r", op=PerRepeat(functools.partial(given, op))),
        EndBlock("b"),
    )
    for index in range(3):
        assert model.b[index].get_submodule("1").transform is transform
        assert model.b[index].get_submodule("3").op is op
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for m in (transform, op) for p in m.parameters()
    )


def test_per_repeat_widens_a_stage_and_the_repr_shows_it() -> None:
    model = Circuit(
        StartBlock("stage", num_repeats=3),
        PerRepeat(lambda i, n: nn.Linear(2**i, 2 ** (i + 1))),
        nn.ReLU(),
        EndBlock("stage"),
    )
    assert model(torch.ones(5, 1)).shape == (5, 8)
    text = repr(model)
    assert "in_features=1, out_features=2" in text and "in_features=4, out_features=8" in text
    assert " x Repeat(" not in text  # unlike repeats are not folded


def test_per_repeat_as_an_op_and_a_transform() -> None:
    model = Circuit(
        StartBlock("b", num_repeats=2),
        SaveInput("r", transform=PerRepeat(lambda i, n: nn.Linear(4, 4))),
        GetInput("r", op=PerRepeat(lambda i, n: nn.Bilinear(4, 4, 4))),
        EndBlock("b"),
    )
    read = model.b[1].get_submodule("2")
    assert isinstance(read.op, nn.Bilinear)
    assert model(torch.randn(3, 4)).shape == (3, 4)
    assert model.b[0].get_submodule("2").op is not read.op


def test_a_per_repeat_transform_keeps_parameters_in_forward_order() -> None:
    model = Circuit(
        SaveInput("r"),
        GetInput("r", op=nn.Bilinear(4, 4, 4), transform=PerRepeat(lambda i, n: nn.Linear(4, 4))),
    )
    names = [name for name, _ in model.named_parameters()]
    assert names == ["1.transform.weight", "1.transform.bias", "1.op.weight", "1.op.bias"]


@pytest.mark.parametrize(
    ("layers", "error", "message"),
    [
        (
            [
                StartBlock("b", num_repeats=2, share_weights=True),
                PerRepeat(lambda i, n: lin()),
                EndBlock("b"),
            ],
            ValueError,
            "PerRepeat(lambda) at position 1 is inside a block whose repeats share weights",
        ),
        (
            [
                StartBlock("b", num_repeats=2, share_weights=True),
                StartBlock("c", num_repeats=2),
                PerRepeat(lambda i, n: lin()),
                EndBlock("c"),
                EndBlock("b"),
            ],
            ValueError,
            "PerRepeat(lambda) at position 2 is inside a block whose repeats share weights",
        ),
        (
            [PerRepeat(5)],  # type: ignore[arg-type]
            TypeError,
            "PerRepeat at position 0 has the factory 5, which is not callable",
        ),
        (
            [StartBlock("b", num_repeats=2), PerRepeat(lambda i, n: 3), EndBlock("b")],
            TypeError,
            "PerRepeat(lambda) at position 1, building index 0 of 2 in repeat 0 of 2 of block "
            "'b', returned 3 (int); the factory must return an nn.Module",
        ),
        (
            [SaveInput("r"), GetInput("r", op=PerRepeat(lambda i, n: 3))],
            TypeError,
            "PerRepeat(lambda) at position 1, building index 0 of 1, returned 3 (int)",
        ),
    ],
)
def test_bad_per_repeat_layers(layers: list[Any], error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Circuit(*layers)


def test_a_failing_factory_keeps_its_error_and_says_where() -> None:
    def make(index: int, count: int) -> nn.Module:
        if index == 2:
            raise KeyError("no width for this level")
        return lin()

    with pytest.raises(KeyError, match="no width for this level") as info:
        Circuit(StartBlock("b", num_repeats=3), lin(), PerRepeat(make), EndBlock("b"))
    assert info.value.__notes__ == [
        "torch_circuit: PerRepeat(make) at position 2, building index 2 of 3 in repeat 2 of 3 "
        "of block 'b'"
    ]


# --- Skips that outlive their block ---


def unet(levels: int = 3) -> Circuit:
    return Circuit(
        StartBlock("down", num_repeats=levels),
        SaveInput("skip", push=True),
        nn.MaxPool1d(2),
        EndBlock("down"),
        StartBlock("up", num_repeats=levels),
        nn.Upsample(scale_factor=2),
        GetInput("skip", pop=True, op="cat"),
        nn.Conv1d(2, 1, 1),
        EndBlock("up"),
    )


def test_pushes_and_pops_pair_level_by_level() -> None:
    model = unet()
    x = torch.randn(2, 1, 8)
    skips, h = [], x
    for _ in range(3):
        skips.append(h)
        h = nn.functional.max_pool1d(h, 2)
    for level in range(3):
        h = nn.functional.interpolate(h, scale_factor=2)
        h = model.up[level].get_submodule("7")(torch.cat((h, skips.pop()), 1))
    torch.testing.assert_close(model(x), h, rtol=0, atol=0)
    push, pop = model.nodes[0].body[0], model.nodes[1].body[1]
    assert isinstance(push, SaveNode) and push.push and push.readers == (6,)
    assert isinstance(pop, ReadNode) and pop.pop and pop.sources == (1,)


def test_a_popped_tensor_is_released_when_it_is_popped() -> None:
    refs: list[weakref.ref[Tensor]] = []
    alive_after_pop: list[bool] = []

    def remember(x: Tensor) -> Tensor:
        refs.append(weakref.ref(x))
        return x

    def check(x: Tensor) -> Tensor:
        gc.collect()
        alive_after_pop.append(refs[-1 - len(alive_after_pop)]() is not None)
        return x

    model = Circuit(
        StartBlock("down", num_repeats=2),
        lambda x: x * 2,  # a fresh tensor to push
        remember,
        SaveInput("skip", push=True),
        EndBlock("down"),
        lambda x: x + 1,
        StartBlock("up", num_repeats=2),
        GetInput("skip", pop=True, op=lambda x, skip: x - skip),
        check,
        EndBlock("up"),
    )
    with torch.no_grad():
        model(torch.ones(3))
    assert alive_after_pop == [False, False]


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            [GetInput("skip", pop=True), SaveInput("skip", push=True)],
            "GetInput('skip', pop=True) at position 0 pops the stack 'skip', but no "
            "SaveInput('skip', push=True) runs before it; push a tensor before popping it.",
        ),
        (
            [
                StartBlock("down", num_repeats=2),
                SaveInput("skip", push=True),
                EndBlock("down"),
                StartBlock("up", num_repeats=3),
                GetInput("skip", pop=True),
                EndBlock("up"),
            ],
            "GetInput('skip', pop=True) at position 4 (in repeat 2 of 3 of block 'up') pops "
            "the stack 'skip' when it is empty: the pushes it could take, "
            "SaveInput('skip', push=True) at position 1 (2 times), were all taken before.",
        ),
        (
            [SaveInput("s", push=True), SaveInput("s"), GetInput("s")],
            "SaveInput('s') at position 1 uses 's' as a plain skip, but the marker at position "
            "0 uses it as a stack; give the stack (push=True / pop=True) and the skip",
        ),
    ],
)
def test_bad_pushes_and_pops(layers: list[Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Circuit(*layers)


def test_a_plain_read_of_a_stack_says_to_pop() -> None:
    with pytest.raises(ValueError, match=re.escape("take from it with GetInput('s', pop=True)")):
        Circuit(SaveInput("s", push=True), GetInput("s"))


def test_pushes_never_popped_warn() -> None:
    with pytest.warns(
        UnusedSaveWarning,
        match=re.escape(
            "SaveInput('skip', push=True) at position 1 pushes 3 tensors, 1 of which no "
            "GetInput('skip', pop=True) takes before the Circuit ends."
        ),
    ):
        Circuit(
            StartBlock("down", num_repeats=3),
            SaveInput("skip", push=True),
            EndBlock("down"),
            StartBlock("up", num_repeats=2),
            GetInput("skip", pop=True),
            EndBlock("up"),
        )


def test_push_and_pop_flags_must_be_booleans() -> None:
    with pytest.raises(TypeError, match=re.escape("SaveInput('s') at position 0: push must be")):
        Circuit(SaveInput("s", push=1))  # type: ignore[arg-type]


# --- The upstream spelling of transform ---


@pytest.mark.parametrize("marker", [SaveInput, GetInput])
def test_transformation_is_an_alias_of_transform(marker: type) -> None:
    layer = nn.Identity()
    with pytest.warns(FutureWarning, match=rf"{marker.__name__}\(transformation=...\) is the old"):
        made = marker("r", transformation=layer)
    assert made.transform is layer
    with pytest.raises(TypeError, match="got both transform= and transformation="):
        marker("r", transform=layer, transformation=layer)


def test_nothing_changes_for_a_model_without_the_new_markers() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = Circuit(SaveInput("r"), lin(), GetInput("r"))
    assert isinstance(model(torch.ones(1, 4)), Tensor)
    assert model.input_nodes == ()


# --- Shapes and the summary ---


def test_summary_traces_named_inputs_and_shows_the_new_markers() -> None:
    model = Circuit(
        nn.Linear(4, 8),
        StartBlock("b", num_repeats=2),
        SaveInput("skip", push=True),
        GetInput(("mask", "bias"), op=lambda x, m, b: x * m + b),
        Output("hidden"),
        EndBlock("b"),
        StartBlock("u", num_repeats=2),
        GetInput("skip", pop=True, op="cat"),
        nn.Linear(16, 8),
        EndBlock("u"),
        inputs={"mask": None, "bias": None},
    )
    table = model.summary(input_shape=(2, 4), input_shapes={"mask": (2, 8), "bias": (1, 8)})
    rows = {line.split("  ")[0].strip(): line for line in table.splitlines()}
    assert "(2, 8)" in rows["input 'mask'"] and "(1, 8)" in rows["input 'bias'"]
    assert "SaveInput 'skip' (push)" in table
    assert "GetInput ('mask', 'bias') · lambda" in table
    assert "GetInput 'skip' · cat (pop)" in table
    assert "Output 'hidden'" in table
    assert "u.1.8" in table and "(2, 16)" in table


@pytest.mark.parametrize(
    ("shapes", "error", "message"),
    [
        ({}, ValueError, "input_shapes has no shape for the input 'mask', which the circuit needs"),
        ({"mask": (2, 4), "maks": (2, 4)}, ValueError, "input_shapes names ['maks'], which the"),
        ([(2, 4)], TypeError, "input_shapes must map input names to shapes, got list"),
    ],
)
def test_bad_input_shapes(shapes: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        masked().summary(input_shape=(2, 4), input_shapes=shapes)


def test_a_layer_failing_at_run_time_names_the_new_marker() -> None:
    model = Circuit(
        SaveInput("a"),
        nn.Linear(4, 3),
        SaveInput("b"),
        GetInput(("a", "b"), op=lambda x, a, b: x + a + b),
    )
    with pytest.raises(RuntimeError) as info:
        model(torch.ones(2, 4))
    assert info.value.__notes__ == [
        "torch_circuit: in GetInput(('a', 'b'), op=lambda) at position 3"
    ]


def test_a_pop_in_a_circuit_without_any_push() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "GetInput('x', pop=True) at position 0 pops the stack 'x', but no "
            "SaveInput('x', push=True) runs before it"
        ),
    ):
        Circuit(GetInput("x", pop=True))


def test_checkpoint_segments_of_a_block_that_outputs_are_refused() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "StartBlock('b', num_repeats=4, checkpoint=2) at position 0: its repeats push, "
            "pop or record outputs, which a checkpoint segment of several repeats cannot hand"
        ),
    ):
        Circuit(StartBlock("b", num_repeats=4, checkpoint=2), lin(), Output("h"), EndBlock("b"))


def test_blocks_that_output_or_pop_compile_unrolled_and_say_why() -> None:
    from torch_circuit.regions import explain

    model = Circuit(
        StartBlock("d", num_repeats=2),
        SaveInput("s", push=True),
        lin(),
        EndBlock("d"),
        StartBlock("u", num_repeats=2),
        GetInput("s", pop=True),
        Output("h"),
        EndBlock("u"),
    ).eval()
    with torch.no_grad():
        reasons = explain(model)
    assert reasons == {
        "d": "unrolled: its repeats push, pop or record outputs, which they hand on one by one",
        "u": "unrolled: its repeats push, pop or record outputs, which they hand on one by one",
    }
