"""What the config tests share: two models compute bitwise the same, in both modes."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def assert_same_outputs(a: nn.Module, b: nn.Module, x: Tensor) -> None:
    """`b` computes bitwise what `a` computes on `x`, in training and in eval mode, and their
    states (BatchNorm statistics included) move alike."""
    for mode in (True, False):
        outputs = []
        for model in (a, b):
            model.train(mode)
            torch.manual_seed(7)  # the same dropout masks
            outputs.append(model(x))
        torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
    for (key, want), got in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(got, want), key
