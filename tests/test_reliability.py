"""Deep nesting, hooks on markers, named layers, blocks out of their circuit, notes once,
markers where a module is expected: each against the behaviour the API promises."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from torch_circuit import Circuit, EndBlock, GetInput, Output, SaveInput, StartBlock
from torch_circuit.parse import MAX_NESTING


def lin() -> nn.Linear:
    return nn.Linear(4, 4)


# --- Depth ---


def nested(depth: int) -> Circuit:
    return Circuit(
        *[StartBlock(f"l{i}") for i in range(depth)],
        SaveInput("x"),
        nn.Linear(8, 8),
        GetInput("x"),
        *[EndBlock(f"l{i}") for i in reversed(range(depth))],
    )


@pytest.fixture(autouse=True)
def python_s_default_recursion_limit() -> Iterator[None]:
    """The depth tests promise to work at Python's default limit. Inductor raises the limit to
    2000 the first time it compiles, so a suite that compiled earlier would test less."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    yield
    sys.setrecursionlimit(before)


def test_blocks_nested_to_the_limit_build_run_print_summarise_and_draw(tmp_path: Any) -> None:
    model = nested(MAX_NESTING)
    x = torch.randn(2, 8, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None
    assert repr(model).count("Block(") == MAX_NESTING
    table = model.summary(input_shape=(2, 8))
    assert "(2, 8)" in table
    model.visualize(str(tmp_path / "deep.png"), show=False)
    model.visualize(str(tmp_path / "deep.html"), show=False)
    assert model.to_dot().count("subgraph") == MAX_NESTING
    model.load_state_dict(model.state_dict())


def test_export_nests_as_deep_as_nn_sequential() -> None:
    depth = 100
    sequential: nn.Module = nn.Linear(8, 8)
    for _ in range(depth):
        sequential = nn.Sequential(sequential)
    x = torch.randn(2, 8)
    torch.export.export(sequential, (x,))
    exported = torch.export.export(nested(depth), (x,))
    model = nested(depth)
    model.load_state_dict(exported.module().state_dict())
    torch.testing.assert_close(exported.module()(x), model(x))


def test_deeper_nesting_is_refused_with_the_position_and_the_depth() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"StartBlock('l{MAX_NESTING}', num_repeats=1) at position {MAX_NESTING} nests blocks "
            f"{MAX_NESTING + 1} deep; a Circuit supports at most {MAX_NESTING} levels"
        ),
    ):
        nested(MAX_NESTING + 1)


# --- Hooks on markers ---


def hooked_model() -> Circuit:
    return Circuit(lin(), SaveInput("r"), lin(), GetInput("r"), Output("o"))


@pytest.mark.parametrize("position", ["1", "3", "4"])
def test_forward_hooks_on_markers_see_the_value_they_produce(position: str) -> None:
    model = hooked_model()
    x = torch.randn(2, 4)
    expected_after = {
        "1": model.get_submodule("0")(x),
        "3": model.get_submodule("2")(model.get_submodule("0")(x)) + model.get_submodule("0")(x),
    }
    expected_after["4"] = expected_after["3"]
    seen: list[Tensor] = []
    before: list[tuple[Any, ...]] = []
    marker = model.get_submodule(position)
    marker.register_forward_hook(lambda module, args, output: seen.append(output))
    marker.register_forward_pre_hook(lambda module, args: before.append(args))
    model(x)
    assert len(seen) == 1 and len(before) == 1
    torch.testing.assert_close(seen[0], expected_after[position])


def test_a_hook_can_replace_what_a_read_produces() -> None:
    model = hooked_model()
    model.get_submodule("3").register_forward_hook(lambda module, args, output: output * 0)
    assert torch.equal(model(torch.randn(2, 4))["o"], torch.zeros(2, 4))


def test_a_read_s_pre_hook_sees_the_current_and_the_saved_tensor() -> None:
    model = hooked_model()
    args_seen: list[tuple[Any, ...]] = []
    model.get_submodule("3").register_forward_pre_hook(lambda m, args: args_seen.append(args))
    x = torch.randn(2, 4)
    model(x)
    _current, saved = args_seen[0]
    torch.testing.assert_close(saved, model.get_submodule("0")(x))


def test_global_hooks_see_markers_too() -> None:
    model = hooked_model()
    seen: list[str] = []
    names = {module: name for name, module in model.named_modules()}
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: seen.append(names.get(module, "?"))
    )
    try:
        model(torch.randn(2, 4))
    finally:
        handle.remove()
    assert [name for name in seen if name in ("1", "3", "4")] == ["1", "3", "4"]


def test_hooks_on_markers_inside_repeats_fire_once_per_repeat() -> None:
    model = Circuit(
        StartBlock("b", num_repeats=3), SaveInput("r"), lin(), GetInput("r"), EndBlock("b")
    )
    calls: list[int] = []
    for index in range(3):
        model.b[index].get_submodule("3").register_forward_hook(
            lambda module, args, output, index=index: calls.append(index)
        )
    model(torch.randn(1, 4))
    assert calls == [0, 1, 2]


# --- Named layers ---


def named() -> Circuit:
    return Circuit(
        ("stem", nn.Linear(4, 4)),
        StartBlock("stage", num_repeats=2),
        SaveInput("r"),
        ("fc", nn.Linear(4, 4)),
        GetInput("r"),
        EndBlock("stage"),
        ("head", nn.Linear(4, 2)),
    )


def test_named_layers_are_keyed_by_their_names() -> None:
    assert list(named().state_dict()) == [
        "stem.weight",
        "stem.bias",
        "stage.0.fc.weight",
        "stage.0.fc.bias",
        "stage.1.fc.weight",
        "stage.1.fc.bias",
        "head.weight",
        "head.bias",
    ]


def test_keys_of_named_layers_survive_an_insertion() -> None:
    before = named()
    after = Circuit(
        ("stem", nn.Linear(4, 4)),
        nn.Dropout(0.1),  # inserted: every position after it moves
        StartBlock("stage", num_repeats=2),
        SaveInput("r"),
        ("fc", nn.Linear(4, 4)),
        GetInput("r"),
        EndBlock("stage"),
        ("head", nn.Linear(4, 2)),
    )
    after.load_state_dict(before.state_dict())  # strict: every key is still there
    x = torch.randn(3, 4)
    torch.testing.assert_close(after.eval()(x), before.eval()(x))


def test_a_named_layer_s_error_note_and_summary_show_its_name() -> None:
    model = named()
    with pytest.raises(RuntimeError) as info:
        model(torch.randn(3, 5))
    assert info.value.__notes__[0] == "torch_circuit: in the layer 'stem' at position 0 (Linear)"
    table = model.summary()
    assert "stage.1.fc" in table and "stem " in table


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            [("2nd", lin())],
            "('2nd', Linear(...)) at position 0: layer names key the state_dict and must be "
            "Python identifiers",
        ),
        (
            [("a", lin()), ("a", lin())],
            "('a', Linear(...)) at position 1 reuses the name of the layer at position 0 in "
            "the same scope",
        ),
        (
            [StartBlock("b"), lin(), EndBlock("b"), ("b", lin())],
            "('b', Linear(...)) at position 3 reuses the name of the block at position 0 in "
            "the same scope",
        ),
        (
            [("b", lin()), StartBlock("b"), lin(), EndBlock("b")],
            "StartBlock('b', num_repeats=1) at position 1 reuses the name of the layer at "
            "position 0 in the same scope",
        ),
        (
            [("forward", lin())],
            "('forward', Linear(...)) at position 0: the name 'forward' is taken by a module "
            "attribute (model.forward); rename the layer",
        ),
        (
            [("b", StartBlock("b"))],
            "position 0 names StartBlock('b', num_repeats=1) 'b'; blocks are named by their "
            "StartBlock",
        ),
    ],
)
def test_bad_layer_names(layers: list[Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        Circuit(*layers)


def test_the_same_name_in_different_scopes_is_fine() -> None:
    model = Circuit(("fc", lin()), StartBlock("b"), ("fc", lin()), EndBlock("b"))
    assert {"fc.weight", "b.0.fc.weight"} <= set(model.state_dict())


# --- A block out of its circuit ---


def test_a_block_moved_out_of_its_circuit_names_the_skips_it_needs() -> None:
    source = Circuit(
        SaveInput("r"), StartBlock("b", num_repeats=2), lin(), GetInput("r"), EndBlock("b")
    )
    message = (
        "Block 'b' reads the skip 'r' (SaveInput at position 0), saved outside it in the "
        "circuit it was built in (StartBlock at position 1), but position 1 holds it alone"
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        Circuit(lin(), source.b)
    with pytest.raises(TypeError, match=re.escape("but got 0 argument(s) after x")):
        source.b(torch.randn(1, 4))
    with pytest.raises(TypeError, match=re.escape("this repeat reads the skip 'r' (SaveInput")):
        source.b[0](torch.randn(1, 4))


def test_a_block_that_reads_nothing_outside_moves_freely() -> None:
    source = Circuit(
        StartBlock("b", num_repeats=2), SaveInput("r"), lin(), GetInput("r"), EndBlock("b")
    )
    moved = Circuit(lin(), source.b)
    x = torch.randn(1, 4)
    torch.testing.assert_close(moved(x), source.b(moved.get_submodule("0")(x)))


# --- Errors noted once ---


def test_an_error_raised_again_and_again_gains_its_notes_once() -> None:
    error = RuntimeError("always the same object")

    def fail(x: Tensor) -> Tensor:
        raise error

    model = Circuit(
        StartBlock("b", num_repeats=2),
        SaveInput("r"),
        GetInput("r", op=lambda x, s: fail(x)),
        EndBlock("b"),
    )
    for _ in range(3):
        with pytest.raises(RuntimeError):
            model(torch.zeros(1))
    assert error.__notes__ == [
        "torch_circuit: in GetInput('r', op=lambda) at position 2",
        "torch_circuit: in repeat 0 of 2 of block 'b' (StartBlock at position 0)",
    ]


# --- Markers where a module is expected ---


@pytest.mark.parametrize(
    "read",
    [
        GetInput("a", op=GetInput("z")),
        GetInput("a", op=SaveInput),  # type: ignore[arg-type]
        GetInput("a", transform=SaveInput("z")),
    ],
)
def test_markers_as_op_or_transform_are_refused_at_construction(read: GetInput) -> None:
    with pytest.raises(TypeError, match=r"at position 1 has (op|transform)=.*a marker; markers"):
        Circuit(SaveInput("a"), read)


def test_a_marker_as_a_save_s_transform_is_refused() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape("SaveInput('a') at position 0 has transform=SaveInput('z'), a marker"),
    ):
        Circuit(SaveInput("a", transform=SaveInput("z")), GetInput("a"))


def test_an_op_of_one_argument_is_refused() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "GetInput('a') at position 1 has op=relu_only(x), which cannot take 2 arguments; "
            "an op receives the current tensor, then the saved tensor"
        ),
    ):

        def relu_only(x: Tensor) -> Tensor:
            return torch.relu(x)

        Circuit(SaveInput("a"), GetInput("a", op=relu_only))


def test_a_module_op_of_one_argument_is_refused_and_builtins_pass() -> None:
    with pytest.raises(TypeError, match=r"has op=ReLU\(input\), which cannot take 2 arguments"):
        Circuit(SaveInput("a"), GetInput("a", op=nn.ReLU()))
    Circuit(SaveInput("a"), GetInput("a", op=torch.maximum))  # no readable signature: fine
