"""Every construction error and warning of ``Circuit``, with its message."""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
import torch
from torch import nn

from torch_circuit import (
    Circuit,
    EndBlock,
    GetInput,
    LambdaLayer,
    Output,
    SaveInput,
    StartBlock,
    UnusedSaveWarning,
)


def lin() -> nn.Linear:
    return nn.Linear(4, 4)


def test_get_input_without_save_lists_visible_names() -> None:
    with pytest.raises(ValueError, match=re.escape("visible here: ['a', 'b']")) as info:
        Circuit(SaveInput("a"), lin(), SaveInput("b"), GetInput("a"), GetInput("enc2"))
    message = str(info.value)
    assert "GetInput('enc2') at position 4" in message
    assert "Add SaveInput('enc2') before it" in message


def test_get_input_cannot_see_a_name_saved_inside_an_ended_block() -> None:
    with pytest.raises(ValueError, match=r"GetInput\('r'\) at position 5 .*visible here: \[\]"):
        Circuit(StartBlock("b"), SaveInput("r"), lin(), GetInput("r"), EndBlock("b"), GetInput("r"))


def test_get_input_cannot_see_a_later_save() -> None:
    with pytest.raises(ValueError, match=r"GetInput\('x'\) at position 0 reads a name"):
        Circuit(GetInput("x"), SaveInput("x"))


def test_end_block_without_start() -> None:
    with pytest.raises(
        ValueError, match=re.escape("EndBlock('b') at position 1 closes no open block; add")
    ):
        Circuit(lin(), EndBlock("b"))


def test_start_block_never_closed() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "StartBlock('b', num_repeats=2) at position 1 is never closed; "
            "add EndBlock('b') after the block's last layer."
        ),
    ):
        Circuit(lin(), StartBlock("b", num_repeats=2), lin())


def test_end_block_name_must_match_the_innermost_open_block() -> None:
    with pytest.raises(
        ValueError, match=r"EndBlock\('outer'\) at position 3 does not match"
    ) as info:
        Circuit(StartBlock("outer"), StartBlock("inner"), lin(), EndBlock("outer"))
    assert "add EndBlock('inner') before it" in str(info.value)


@pytest.mark.parametrize("repeats", [0, -2])
def test_num_repeats_must_be_positive(repeats: int) -> None:
    with pytest.raises(
        ValueError, match=rf"at position 1: num_repeats must be a positive int, got {repeats}"
    ):
        Circuit(lin(), StartBlock("b", num_repeats=repeats), lin(), EndBlock("b"))


@pytest.mark.parametrize("repeats", [2.0, "3", True, None])
def test_num_repeats_must_be_an_int(repeats: object) -> None:
    with pytest.raises(
        TypeError,
        match=r"at position 0: num_repeats must be a positive int, got .*e\.g\. num_repeats=3",
    ):
        Circuit(StartBlock("b", num_repeats=repeats), lin(), EndBlock("b"))  # type: ignore[arg-type]


@pytest.mark.parametrize("flag", ["share_weights"])  # checkpoint: tests/test_checkpoint.py
def test_block_flags_must_be_bools(flag: str) -> None:
    with pytest.raises(TypeError, match=rf"at position 0: {flag} must be True or False, got 'yes'"):
        Circuit(StartBlock("b", **{flag: "yes"}), lin(), EndBlock("b"))  # type: ignore[arg-type]


def test_layer_that_is_neither_module_nor_callable() -> None:
    with pytest.raises(TypeError, match=r"position 1 is 42 \(int\), which is neither an nn.Module"):
        Circuit(lin(), 42)


@pytest.mark.parametrize("marker", [SaveInput, GetInput, StartBlock, EndBlock])
def test_marker_class_instead_of_instance(marker: type) -> None:
    name = marker.__name__
    with pytest.raises(
        TypeError,
        match=re.escape(
            f"position 1 is the class {name} itself, not a marker; "
            f"call it with a name, e.g. {name}('name')."
        ),
    ):
        Circuit(lin(), marker)


def test_layer_class_instead_of_instance() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "position 1 is the class ReLU itself, not a layer; pass an instance, e.g. ReLU(...)."
        ),
    ):
        Circuit(lin(), nn.ReLU)


def test_op_that_is_not_callable() -> None:
    with pytest.raises(
        TypeError, match=r"GetInput\('x'\) at position 2 has op=3, which is not callable"
    ):
        Circuit(SaveInput("x"), lin(), GetInput("x", op=3))  # type: ignore[arg-type]


def test_op_that_is_a_class() -> None:
    with pytest.raises(
        TypeError, match=r"has op=<class 'torch.nn.modules.linear.Linear'>, which is not callable"
    ):
        Circuit(SaveInput("x"), lin(), GetInput("x", op=nn.Linear))  # type: ignore[arg-type]


def test_op_that_is_an_unknown_string() -> None:
    with pytest.raises(
        ValueError, match=re.escape("has op='sum', which is not one of ['add', 'cat', 'mul']")
    ):
        Circuit(SaveInput("x"), lin(), GetInput("x", op="sum"))


@pytest.mark.parametrize("marker", [SaveInput, GetInput])
def test_transform_must_be_a_module(marker: type) -> None:
    layers = [SaveInput("x"), lin(), marker("x", transform=torch.relu)]
    if marker is SaveInput:
        layers.append(GetInput("x"))
    with pytest.raises(
        TypeError,
        match=r"at position 2 has transform=.*which is not an nn.Module; .*LambdaLayer\(fn\)",
    ):
        Circuit(*layers)


@pytest.mark.parametrize("marker", [SaveInput, GetInput, EndBlock])
def test_names_must_be_strings(marker: type) -> None:
    with pytest.raises(
        TypeError,
        match=rf"{marker.__name__} at position 0 has the name 3 \(int\); names must be strings",
    ):
        Circuit(marker(3), lin())


def test_start_block_name_must_be_a_string() -> None:
    with pytest.raises(TypeError, match=r"StartBlock at position 0 has the name None \(NoneType\)"):
        Circuit(StartBlock(None), lin(), EndBlock("b"))  # type: ignore[arg-type]


@pytest.mark.parametrize("marker", [SaveInput, GetInput, StartBlock])
def test_names_must_not_be_empty(marker: type) -> None:
    with pytest.raises(
        ValueError, match=rf"{marker.__name__} at position 1 has an empty name; give it one"
    ):
        Circuit(SaveInput("x"), marker(""), lin())


@pytest.mark.parametrize(
    ("name", "suggestion"), [("stage 1", "stage_1"), ("1st", "block_1st"), ("_hidden", "hidden")]
)
def test_block_names_must_be_identifiers(name: str, suggestion: str) -> None:
    with pytest.raises(
        ValueError,
        match=rf"must be Python identifiers, not keywords, not starting with '_'; "
        rf"use e\.g\. '{suggestion}'",
    ):
        Circuit(StartBlock(name), lin(), EndBlock(name))


@pytest.mark.parametrize("name", ["forward", "training", "summary", "nodes", "compile"])
def test_block_names_must_not_shadow_module_attributes(name: str) -> None:
    with pytest.raises(
        ValueError,
        match=rf"at position 0: the name '{name}' is taken by a module attribute "
        rf"\(model\.{name}\); rename the block, e.g. '{name}_block'",
    ):
        Circuit(StartBlock(name), lin(), EndBlock(name))


def test_block_names_must_not_shadow_attributes_of_a_repeat() -> None:
    with pytest.raises(ValueError, match=r"at position 1: the name 'nodes' is taken"):
        Circuit(
            StartBlock("outer"), StartBlock("nodes"), lin(), EndBlock("nodes"), EndBlock("outer")
        )


@pytest.mark.parametrize(("name", "suggestion"), [("class", "block_class"), ("None", "block_None")])
def test_block_names_must_not_be_keywords(name: str, suggestion: str) -> None:
    with pytest.raises(
        ValueError, match=rf"not keywords, not starting with '_'; use e\.g\. '{suggestion}'"
    ):
        Circuit(StartBlock(name), lin(), EndBlock(name))


def test_start_block_reusing_an_open_block_name() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "StartBlock('b', num_repeats=1) at position 2 reuses the name of the open block "
            "StartBlock('b', num_repeats=2) at position 0"
        ),
    ):
        Circuit(
            StartBlock("b", num_repeats=2),
            lin(),
            StartBlock("b"),
            lin(),
            EndBlock("b"),
            EndBlock("b"),
        )


def test_sibling_blocks_need_distinct_names() -> None:
    with pytest.raises(
        ValueError,
        match=r"at position 3 reuses the name of the block at position 0 in the same scope; "
        r".* e\.g\. 'b2'",
    ):
        Circuit(StartBlock("b"), lin(), EndBlock("b"), StartBlock("b"), lin(), EndBlock("b"))


def test_same_block_name_in_different_scopes_is_fine() -> None:
    model = Circuit(
        StartBlock("a"),
        StartBlock("conv"),
        lin(),
        EndBlock("conv"),
        EndBlock("a"),
        StartBlock("b"),
        StartBlock("conv"),
        lin(),
        EndBlock("conv"),
        EndBlock("b"),
    )
    assert {"a.0.conv.0.2.weight", "b.0.conv.0.7.weight"} <= set(model.state_dict())


def test_lambda_layer_rejects_non_callables() -> None:
    with pytest.raises(TypeError, match=r"LambdaLayer needs a function of one tensor, got 5"):
        LambdaLayer(5)  # type: ignore[arg-type]


def test_a_read_called_outside_a_circuit() -> None:
    with pytest.raises(
        RuntimeError, match=r"was called directly; markers only work inside a Circuit"
    ):
        GetInput("x")(torch.zeros(1))


def test_markers_called_directly_do_what_the_circuit_runs() -> None:
    # Their forward is what hooks on them see: a save and an output pass x on, a read
    # combines what it is given.
    x, saved = torch.ones(2), torch.full((2,), 2.0)
    assert SaveInput("x")(x) is x
    assert Output("y")(x) is x
    assert torch.equal(GetInput("x", op="mul")(x, saved), x * saved)


def test_failed_construction_leaves_user_objects_untouched() -> None:
    conv = nn.Conv2d(3, 3, 1)
    save = SaveInput("x", transform=nn.Conv2d(3, 3, 1))
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    children = dict(save.named_children())
    with pytest.raises(ValueError):
        Circuit(
            save,
            StartBlock("b", num_repeats=3),
            conv,
            GetInput("x"),
            GetInput("missing"),
            EndBlock("b"),
        )
    assert dict(save.named_children()) == children
    assert list(conv.named_children()) == []
    for key, value in conv.state_dict().items():
        assert torch.equal(value, before[key])


def test_no_warning_is_emitted_by_a_failed_construction() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError):
            Circuit(SaveInput("unused"), lin(), GetInput("missing"))


# --- Unused saves ---


def test_save_never_read_warns() -> None:
    with pytest.warns(
        UnusedSaveWarning,
        match=re.escape(
            "SaveInput('x') at position 0 is never read: the Circuit ends before any GetInput('x')."
        ),
    ):
        Circuit(SaveInput("x"), lin())


def test_save_rebound_before_being_read_warns() -> None:
    with pytest.warns(
        UnusedSaveWarning,
        match=re.escape(
            "SaveInput('x') at position 0 is never read: "
            "it is rebound by the SaveInput at position 2"
        ),
    ):
        Circuit(SaveInput("x"), lin(), SaveInput("x"), lin(), GetInput("x"))


def test_save_falling_out_of_scope_warns() -> None:
    with pytest.warns(
        UnusedSaveWarning,
        match=re.escape(
            "SaveInput('x') at position 1 is never read: "
            "it falls out of scope at EndBlock('b') at position 3"
        ),
    ):
        Circuit(StartBlock("b", num_repeats=2), SaveInput("x"), lin(), EndBlock("b"))


def test_warning_points_at_the_users_line() -> None:
    with pytest.warns(UnusedSaveWarning) as record:
        Circuit(SaveInput("x"), lin())
    assert record[0].filename == __file__


def test_used_saves_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Circuit(SaveInput("x"), StartBlock("b", num_repeats=2), lin(), GetInput("x"), EndBlock("b"))


def test_unused_save_is_skipped_at_run_time() -> None:
    calls = []

    class Spy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(x)
            return x

    with pytest.warns(UnusedSaveWarning):
        model = Circuit(SaveInput("x", transform=Spy()), lin())
    model(torch.zeros(1, 4))
    assert calls == []


# --- Hints for the mistakes a new user makes first ---


def test_a_misspelt_skip_name_gets_did_you_mean() -> None:
    with pytest.raises(ValueError, match=re.escape("Did you mean 'residual'?")) as info:
        Circuit(SaveInput("residual"), lin(), GetInput("residul"))
    assert "GetInput('residul') at position 2" in str(info.value)


def test_a_read_before_its_save_says_the_save_comes_later() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape("SaveInput('x') comes later, at position 2; move it before position 1."),
    ):
        Circuit(lin(), GetInput("x"), SaveInput("x"), lin())


def test_a_read_after_the_block_of_its_save_names_the_block() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "SaveInput('r') at position 1 is inside block 'b', which ends at position 4"
        ),
    ):
        Circuit(StartBlock("b"), SaveInput("r"), lin(), GetInput("r"), EndBlock("b"), GetInput("r"))


@pytest.mark.parametrize("container", [nn.Sequential, lambda *m: nn.ModuleList(m)])
def test_markers_inside_a_container_are_an_error_at_construction(container: Any) -> None:
    inner = container(SaveInput("r"), lin(), GetInput("r"))
    kind = type(inner).__name__
    with pytest.raises(
        TypeError,
        match=re.escape(
            f"position 1 is a {kind} holding SaveInput('r') (as 0); markers only work in the "
            f"Circuit's own list, not inside a {kind}. Splice the container's items in with *, "
            f"e.g. Circuit(*{kind.lower()})"
        ),
    ):
        Circuit(lin(), inner)
    assert Circuit(lin(), *inner)(torch.randn(2, 4)).shape == (2, 4)  # the fix works


def test_markers_deep_inside_a_container_are_found() -> None:
    inner = nn.Sequential(nn.Sequential(lin(), GetInput("r")))
    with pytest.raises(TypeError, match=re.escape("holding GetInput('r', op=add) (as 0.1)")):
        Circuit(SaveInput("r"), inner)


def test_a_circuit_inside_a_circuit_keeps_its_markers() -> None:
    inner = Circuit(SaveInput("r"), lin(), GetInput("r"))
    assert Circuit(nn.Sequential(inner), lin())(torch.randn(2, 4)).shape == (2, 4)


@pytest.mark.parametrize("layers", [[nn.ReLU(), nn.ReLU()], (nn.ReLU(),)])
def test_a_list_of_layers_suggests_unpacking(layers: Any) -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            f"position 0 is a {type(layers).__name__} of {len(layers)} items, not a layer; "
            "pass the layers themselves, e.g. Circuit(*layers), or name one layer as a pair "
            "('name', layer)."
        ),
    ):
        Circuit(layers)
