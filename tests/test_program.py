"""`program`: the steps and the loop that runs them, on frames built by hand."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from torch_circuit import GetInput, SaveInput
from torch_circuit.program import (
    CallLayer,
    ReadSkip,
    SaveSkip,
    add_context,
    give,
    plain,
    run,
    spread,
    take,
)


def modules() -> dict[str, nn.Module | None]:
    return {"0": SaveInput("r"), "1": nn.Identity(), "2": GetInput("r", op="mul")}


def test_run_saves_reads_and_releases_in_the_frame() -> None:
    frame: list[object] = [None]
    steps = (SaveSkip("0", 0, 0), CallLayer("1", 1), ReadSkip("2", 2, 0, True))
    x = torch.full((2,), 3.0)
    out = run(steps, modules(), x, frame)
    assert torch.equal(out, x * x)
    assert frame == [None]  # the last read dropped the saved tensor


def test_a_read_that_is_not_the_last_keeps_the_slot() -> None:
    frame: list[object] = [torch.ones(1)]
    run((ReadSkip("2", 2, 0, False),), modules(), torch.ones(1), frame)
    assert frame[0] is not None


def test_an_error_gets_one_note_naming_the_step() -> None:
    failing = {"0": nn.Linear(3, 3)}
    with pytest.raises(RuntimeError) as info:
        run((CallLayer("0", 0),), failing, torch.ones(2, 2), [])
    assert info.value.__notes__ == ["torch_circuit: in the layer at position 0 (Linear)"]


def test_add_context_notes_each_place_once() -> None:
    error = ValueError("x")
    for _ in range(3):
        add_context(error, "here")
    add_context(error, "there")
    assert error.__notes__ == ["torch_circuit: here", "torch_circuit: there"]


def test_plain_is_what_module_call_tests() -> None:
    layer = nn.Linear(2, 2)
    assert plain(layer)
    handle = layer.register_forward_hook(lambda m, a, o: o)
    assert not plain(layer)
    handle.remove()
    assert plain(layer)
    layer.compile()
    assert not plain(layer)
    global_handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda m, a: None)
    try:
        assert not plain(nn.ReLU())
    finally:
        global_handle.remove()


def test_take_and_give_move_tensors_between_stacks_in_order() -> None:
    a, b, c = (torch.tensor(float(i)) for i in range(3))
    frame: list[list[Tensor]] = [[a, b, c], []]
    handed = take(frame, [(0, 2)])
    assert handed == [b, c] and frame[0] == [a]
    give(frame, [(0, 1), (1, 1)], (torch.zeros(()), b, c))
    assert frame == [[a, b], [c]]
    spread(frame, [(1, 2)], [a, b])
    assert frame[1] == [c, a, b]
