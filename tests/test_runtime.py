"""What a forward does at run time: no state on the module, threads, memory, failing layers."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock, UnusedSaveWarning


def pause(x: Tensor) -> Tensor:
    """Give other threads the interpreter between a save and its read."""
    time.sleep(0.0005)
    return x


def skip_heavy_model() -> Circuit:
    return Circuit(
        nn.Linear(6, 6),
        SaveInput("x0"),
        StartBlock("stage", num_repeats=3),
        SaveInput("residual"),
        nn.Linear(6, 6),
        pause,
        nn.BatchNorm1d(6),
        nn.Tanh(),
        GetInput("residual"),
        GetInput("x0", op="mul"),
        pause,
        EndBlock("stage"),
        SaveInput("last", transform=nn.Linear(6, 6)),
        pause,
        GetInput("last", op="cat"),
        nn.Linear(12, 3),
    )


# --- Threads ---


@pytest.mark.parametrize("mode", ["eval", "no_grad"])
def test_concurrent_forwards_each_get_their_own_answer(mode: str) -> None:
    torch.manual_seed(0)
    model = skip_heavy_model().eval()
    inputs = [torch.randn(4, 6) * (k + 1) for k in range(6)]
    expected = [model(x).detach() for x in inputs]
    barrier = threading.Barrier(len(inputs))

    def call(index: int) -> list[Tensor]:
        barrier.wait()
        outputs = []
        for _ in range(10):
            if mode == "no_grad":
                with torch.no_grad():
                    outputs.append(model(inputs[index]))
            else:
                outputs.append(model(inputs[index]).detach())
        return outputs

    with ThreadPoolExecutor(max_workers=len(inputs)) as pool:
        results = list(pool.map(call, range(len(inputs))))
    for index, outputs in enumerate(results):
        for output in outputs:
            torch.testing.assert_close(output, expected[index], rtol=0, atol=0)


def test_concurrent_training_forwards_give_each_thread_its_gradients() -> None:
    torch.manual_seed(0)
    model = Circuit(
        nn.Linear(5, 5),
        SaveInput("r"),
        pause,
        nn.Linear(5, 5),
        nn.Tanh(),
        pause,
        GetInput("r"),
        nn.Linear(5, 1),
    )
    inputs = [torch.randn(3, 5) for _ in range(4)]

    def input_gradient(x: Tensor) -> Tensor:
        leaf = x.clone().requires_grad_()
        (gradient,) = torch.autograd.grad(model(leaf).sum(), leaf)
        return gradient

    expected = [input_gradient(x) for x in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(input_gradient, inputs * 3))
    for index, gradient in enumerate(results):
        torch.testing.assert_close(gradient, expected[index % 4], rtol=0, atol=0)


# --- No state on the module ---


def snapshot(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Each submodule's attributes, with its dicts (``_modules``, ``_buffers``...) copied."""
    return {
        name: {
            key: dict(value) if isinstance(value, dict) else value for key, value in vars(m).items()
        }
        for name, m in model.named_modules()
    }


def assert_same_snapshot(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> None:
    assert before.keys() == after.keys()
    for name, attributes in before.items():
        assert attributes.keys() == after[name].keys(), f"{name}: attributes added or removed"
        for key, value in attributes.items():
            now = after[name][key]
            if isinstance(value, dict):
                assert value.keys() == now.keys(), f"{name}.{key} changed"
                assert all(value[k] is now[k] for k in value), f"{name}.{key} rebound"
            else:
                assert value is now or value == now, f"{name}.{key} changed"


def test_forward_writes_nothing_to_the_module() -> None:
    model = skip_heavy_model().eval()
    before = snapshot(model)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    x = torch.randn(4, 6, requires_grad=True)
    model(x).sum().backward()
    with torch.no_grad():
        model(x)
    assert_same_snapshot(before, snapshot(model))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_training_forward_changes_only_batchnorm_statistics() -> None:
    model = skip_heavy_model().train()
    before = snapshot(model)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    model(torch.randn(4, 6)).sum().backward()
    assert_same_snapshot(before, snapshot(model))
    changed = {
        key for key, value in model.state_dict().items() if not torch.equal(value, state[key])
    }
    assert changed == {
        f"stage.{repeat}.6.{buffer}"
        for repeat in range(3)
        for buffer in ("running_mean", "running_var", "num_batches_tracked")
    }


# --- Memory: saved tensors are released after their last read ---


class Tracker:
    """Layers that label new tensors and report whether labelled ones are still alive."""

    def __init__(self) -> None:
        self.refs: dict[str, weakref.ref[Tensor]] = {}
        self.seen: list[tuple[str, bool]] = []

    def mark(self, label: str) -> Callable[[Tensor], Tensor]:
        def marked(x: Tensor) -> Tensor:
            fresh = x * 1.0
            self.refs[label] = weakref.ref(fresh)
            return fresh

        return marked

    def probe(self, label: str, at: str) -> Callable[[Tensor], Tensor]:
        def probed(x: Tensor) -> Tensor:
            self.seen.append((at, self.refs[label]() is not None))
            return x

        return probed


def test_saved_tensor_is_freed_right_after_its_last_read() -> None:
    t = Tracker()
    model = Circuit(
        t.mark("s"),
        SaveInput("s"),
        nn.Linear(4, 4),
        t.probe("s", "before first read"),
        GetInput("s"),
        nn.Linear(4, 4),
        t.probe("s", "between reads"),
        GetInput("s", op="mul"),
        t.probe("s", "after last read"),
        nn.Linear(4, 4),
    )
    with torch.no_grad():
        model(torch.randn(2, 4))
    assert t.seen == [
        ("before first read", True),
        ("between reads", True),
        ("after last read", False),
    ]


class Marking(nn.Module):
    """A transform that labels the tensor it produces."""

    def __init__(self, tracker: Tracker, label: str) -> None:
        super().__init__()
        self.marked = tracker.mark(label)

    def forward(self, x: Tensor) -> Tensor:
        return self.marked(x)


def test_transformed_save_is_freed_after_its_last_read() -> None:
    t = Tracker()
    model = Circuit(
        SaveInput("s", transform=Marking(t, "s")),
        nn.Linear(4, 4),
        t.probe("s", "before read"),
        GetInput("s"),
        t.probe("s", "after read"),
    )
    with torch.no_grad():
        model(torch.randn(2, 4))
    assert t.seen == [("before read", True), ("after read", False)]


def test_save_before_a_block_lives_through_every_repeat_then_is_freed() -> None:
    t = Tracker()
    model = Circuit(
        t.mark("outer"),
        SaveInput("outer"),
        StartBlock("stage", num_repeats=3),
        t.probe("outer", "repeat, before read"),
        t.mark("inner"),
        SaveInput("inner"),
        nn.Linear(4, 4),
        GetInput("outer"),
        GetInput("inner"),
        t.probe("inner", "repeat, after inner's read"),
        EndBlock("stage"),
        t.probe("outer", "after block"),
        nn.Linear(4, 4),
    )
    with torch.no_grad():
        model(torch.randn(2, 4))
    assert t.seen == [
        ("repeat, before read", True),
        ("repeat, after inner's read", False),
    ] * 3 + [("after block", False)]


def test_unread_save_holds_nothing() -> None:
    t = Tracker()
    with pytest.warns(UnusedSaveWarning):
        model = Circuit(t.mark("s"), SaveInput("s"), nn.Linear(4, 4), t.probe("s", "after save"))
    with torch.no_grad():
        model(torch.randn(2, 4))
    assert t.seen == [("after save", False)]


def test_save_rebound_is_freed_at_its_last_read_not_at_the_rebind() -> None:
    t = Tracker()
    model = Circuit(
        t.mark("first"),
        SaveInput("r"),
        nn.Linear(4, 4),
        GetInput("r"),
        t.probe("first", "after first binding's read"),
        t.mark("second"),
        SaveInput("r"),
        nn.Linear(4, 4),
        t.probe("second", "before second binding's read"),
        GetInput("r"),
        t.probe("second", "after second binding's read"),
    )
    with torch.no_grad():
        model(torch.randn(2, 4))
    assert t.seen == [
        ("after first binding's read", False),
        ("before second binding's read", True),
        ("after second binding's read", False),
    ]


@pytest.mark.parametrize("grad", [False, True])
def test_nothing_of_a_batch_outlives_its_call(grad: bool) -> None:
    model = skip_heavy_model().train(grad)
    refs: list[weakref.ref[Tensor]] = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out: refs.append(weakref.ref(out)))
        for m in model.modules()
        if not list(m.children())
    ]
    with torch.set_grad_enabled(grad):
        out = model(torch.randn(4, 6, requires_grad=grad))
        if grad:
            out.sum().backward()
    for handle in handles:
        handle.remove()
    assert len(refs) > 10
    del out
    assert [ref() is None for ref in refs] == [True] * len(refs)


# --- A layer failing during forward ---


def test_failing_layer_keeps_its_error_and_names_position_and_class() -> None:
    model = Circuit(nn.Linear(4, 4), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(RuntimeError, match=r"mat1 and mat2 shapes cannot be multiplied") as info:
        model(torch.randn(2, 4))
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "position 2 (Linear)" in notes
    with pytest.raises(RuntimeError, match=r"at position 2 \(Linear\)"):
        model(torch.randn(2, 4))


def test_failing_layer_in_a_block_names_the_block_and_repeat() -> None:
    model = Circuit(
        nn.Linear(4, 4),
        StartBlock("grow", num_repeats=3),
        nn.ReLU(),
        nn.Linear(4, 8),  # (B, 4) -> (B, 8): the second repeat gets 8 features and fails
        EndBlock("grow"),
    )
    with pytest.raises(RuntimeError, match=r"mat1 and mat2") as info:
        model(torch.randn(2, 4))
    notes = info.value.__notes__
    assert len(notes) == 2
    assert "position 3 (Linear)" in notes[0]
    assert "repeat 1 of 3 of block 'grow'" in notes[1]
    assert "StartBlock at position 1" in notes[1]


def test_failing_layer_in_nested_blocks_names_every_level() -> None:
    model = Circuit(
        StartBlock("outer", num_repeats=2),
        nn.Tanh(),
        StartBlock("inner", num_repeats=3),
        nn.Linear(4, 8),
        EndBlock("inner"),
        EndBlock("outer"),
    )
    with pytest.raises(RuntimeError, match=r"repeat 1 of 3 of block 'inner'") as info:
        model(torch.randn(2, 4))
    notes = info.value.__notes__
    assert "position 3 (Linear)" in notes[0]
    assert "repeat 1 of 3 of block 'inner' (StartBlock at position 2)" in notes[1]
    assert "repeat 0 of 2 of block 'outer' (StartBlock at position 0)" in notes[2]


def test_failing_read_names_the_getinput() -> None:
    model = Circuit(SaveInput("r"), nn.Linear(4, 6), GetInput("r"))
    with pytest.raises(RuntimeError, match=r"GetInput\('r', op=add\) at position 2"):
        model(torch.randn(2, 4))


def test_failing_save_transform_names_the_saveinput() -> None:
    model = Circuit(SaveInput("r", transform=nn.Linear(3, 4)), GetInput("r"))
    with pytest.raises(RuntimeError, match=r"SaveInput\('r'\) at position 0"):
        model(torch.randn(2, 4))


def test_error_type_from_a_plain_callable_is_kept() -> None:
    def refuse(x: Tensor) -> Tensor:
        raise ValueError("negative input")

    model = Circuit(nn.Identity(), refuse)
    with pytest.raises(ValueError, match=r"negative input") as info:
        model(torch.randn(2))
    assert info.type is ValueError
    assert "position 1 (LambdaLayer)" in info.value.__notes__[0]


def test_a_later_successful_forward_is_unaffected_by_a_failed_one() -> None:
    model = Circuit(nn.Linear(4, 4), SaveInput("r"), nn.Linear(4, 4), GetInput("r"))
    good = torch.randn(2, 4)
    expected = model(good)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 5))
    torch.testing.assert_close(model(good), expected, rtol=0, atol=0)


def test_failing_read_transform_names_the_getinput() -> None:
    model = Circuit(SaveInput("r"), GetInput("r", transform=nn.Linear(3, 4)))
    with pytest.raises(RuntimeError, match=r"GetInput\('r', op=add\) at position 1"):
        model(torch.randn(2, 4))
