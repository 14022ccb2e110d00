"""``structural_copy``, the fast deep copy behind fresh repeats, against ``copy.deepcopy``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock
from torch_circuit.copying import structural_copy


class Tied(nn.Module):
    """Shared submodule, a plain tensor attribute, a list attribute and a module-level hook."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.again = self.shared
        self.scale = torch.tensor(2.0)
        self.names = ["a", "b"]
        self.calls: list[int] = []
        self.register_forward_hook(lambda module, args, out: out * module.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.again(torch.relu(self.shared(x)))


def modules_to_copy() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "conv_bn": nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
        "lstm": nn.LSTM(4, 4, batch_first=True),  # customises __setstate__: plain deepcopy
        "attention": nn.MultiheadAttention(4, 2, batch_first=True),
        "encoder_layer": nn.TransformerEncoderLayer(4, 2, 8, batch_first=True),
        "tied": Tied(),
        "circuit": Circuit(
            nn.Linear(4, 4),
            StartBlock("b", num_repeats=2),
            SaveInput("r", transform=nn.Linear(4, 4)),
            nn.GELU(),
            GetInput("r"),
            EndBlock("b"),
        ),
    }


def example_input(name: str) -> torch.Tensor:
    return torch.randn(2, 3, 6, 6) if name == "conv_bn" else torch.randn(2, 5, 4)


def run(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(1)  # the same dropout masks for both copies
    if isinstance(module, nn.MultiheadAttention):
        return module(x, x, x)[0]
    out = module(x)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", list(modules_to_copy()))
def test_structural_copy_equals_deepcopy(name: str) -> None:
    original = modules_to_copy()[name]
    reference, fast = copy.deepcopy(original), structural_copy(original)
    assert repr(fast) == repr(reference)
    assert [type(m) for m in fast.modules()] == [type(m) for m in reference.modules()]
    assert list(fast.state_dict()) == list(reference.state_dict())
    for key, value in fast.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key])
        assert value.data_ptr() != original.state_dict()[key].data_ptr()
    x = example_input(name)
    torch.testing.assert_close(run(fast, x), run(reference, x), rtol=0, atol=0)


def test_structural_copy_keeps_sharing_hooks_and_state_independent() -> None:
    original = Tied()
    clone = structural_copy(original)
    assert clone.again is clone.shared and clone.shared is not original.shared
    assert clone.names == ["a", "b"] and clone.names is not original.names
    x = torch.randn(3, 4)
    torch.testing.assert_close(clone(x), original(x))  # the hook (x2) runs on the copy too
    with torch.no_grad():
        clone.shared.weight.add_(1.0)
    assert not torch.equal(clone.shared.weight, original.shared.weight)
    clone.calls.append(1)
    assert original.calls == []


def test_structural_copy_of_a_compiled_module_starts_uncompiled() -> None:
    layer = nn.Linear(2, 2)
    layer.compile()
    assert "_compiled_call_impl" not in vars(structural_copy(layer))
