"""`StartBlock(..., checkpoint=k)`: checkpoint segments of `k` repeats, identical gradients."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import torch_circuit.repeats
from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock


def stack(checkpointed: bool | int, repeats: int = 5) -> Circuit:
    torch.manual_seed(0)
    return Circuit(
        nn.Linear(4, 4),
        SaveInput("x0"),
        StartBlock("b", num_repeats=repeats, checkpoint=checkpointed),
        SaveInput("r"),
        nn.Linear(4, 4),
        nn.BatchNorm1d(4),
        nn.Tanh(),
        GetInput("r"),
        GetInput("x0", op="mul"),
        EndBlock("b"),
    )


def step(model: nn.Module) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    out = model(x)
    out.square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return out, grads, [b.clone() for b in model.buffers()]


@pytest.mark.parametrize("k", [True, 1, 2, 3, 5, 9])
def test_segments_of_k_repeats_give_the_unchecked_gradients_and_statistics(
    k: bool | int, monkeypatch: pytest.MonkeyPatch
) -> None:
    segments: list[int] = []

    def counting(function: Any, *args: Any, **kwargs: Any) -> Any:
        segments.append(len(args[2]))  # (step, start, segment, x, *captured)
        return checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(torch_circuit.repeats, "checkpoint", counting)
    expected = step(stack(False))
    got = step(stack(k))
    size = int(k)
    assert segments == [min(size, 5 - start) for start in range(0, 5, size)]
    assert torch.equal(got[0], expected[0])
    for want, have in zip([*expected[1], *expected[2]], [*got[1], *got[2]], strict=True):
        assert torch.equal(want, have)  # bit for bit; BatchNorm statistics updated once


class HandStack(nn.Module):
    """`stack` by hand, checkpointing pairs of blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Tanh()) for _ in range(4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x0 = self.first(x)

        def pair(x: torch.Tensor, start: int) -> torch.Tensor:
            for block in self.blocks[start : start + 2]:
                x = (block(x) + x) * x0
            return x

        for start in (0, 2):
            x = checkpoint(pair, x, start, use_reentrant=False)
        return x


def test_checkpoint_pairs_match_the_hand_written_model() -> None:
    hand, circuit = HandStack(), stack(2, repeats=4)
    with torch.no_grad():
        for source, target in zip(
            hand.state_dict().values(), circuit.state_dict().values(), strict=True
        ):
            target.copy_(source)
    hand_step, circuit_step = step(hand), step(circuit)
    assert torch.equal(hand_step[0], circuit_step[0])
    for a, b in zip(hand_step[1], circuit_step[1], strict=True):
        assert torch.equal(a, b)


def test_checkpoint_int_in_repr_and_node() -> None:
    model = stack(2)
    assert model.b.node.checkpoint == 2
    assert stack(True).b.node.checkpoint == 1
    assert stack(False).b.node.checkpoint == 0
    assert repr(StartBlock("b", num_repeats=4, checkpoint=2)) == (
        "StartBlock('b', num_repeats=4, checkpoint=2)"
    )
    assert "checkpoint=True" in repr(StartBlock("b", checkpoint=True))


@pytest.mark.parametrize("value", [0, -2])
def test_checkpoint_below_one_is_refused(value: int) -> None:
    with pytest.raises(
        ValueError,
        match=rf"at position 1: checkpoint={value} must be a positive int \(repeats per "
        r"checkpoint segment\); use checkpoint=False .* or checkpoint=1 \(or True\)",
    ):
        Circuit(nn.Linear(4, 4), StartBlock("b", 3, checkpoint=value), nn.Tanh(), EndBlock("b"))


@pytest.mark.parametrize("value", [1.5, "2", None])
def test_checkpoint_that_is_not_an_int_is_refused(value: object) -> None:
    with pytest.raises(
        TypeError,
        match=r"at position 0: checkpoint must be True, False or a positive int \(repeats "
        rf"per segment\), got {value!r} \({type(value).__name__}\); e.g. checkpoint=True",
    ):
        Circuit(StartBlock("b", 3, checkpoint=value), nn.Tanh(), EndBlock("b"))  # type: ignore[arg-type]


def test_error_in_a_segment_names_its_repeats() -> None:
    def fail_on_wide(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 4:
            raise ValueError("bad width")
        return x

    model = Circuit(StartBlock("b", num_repeats=4, checkpoint=2), fail_on_wide, EndBlock("b"))
    x = torch.randn(2, 5, requires_grad=True)
    with pytest.raises(ValueError, match="bad width") as caught:
        model(x)
    notes = getattr(caught.value, "__notes__", [])
    assert any("in repeats 0-1 of 4 of block 'b'" in note for note in notes), notes
    copy.deepcopy(model)  # the block stays usable
