"""What the config tests share: a round trip through JSON text, and two models that compute
bitwise the same, in both modes."""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from torch_circuit import Circuit


def round_trip(model: Circuit) -> tuple[Circuit, dict[str, Any]]:
    """`from_config(to_config())` through JSON text; the rebuilt model's config is the same
    document, and its `state_dict` has the same keys and shapes."""
    config = model.to_config()
    rebuilt = Circuit.from_config(json.loads(json.dumps(config)))
    assert rebuilt.to_config() == config
    expected = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    assert {key: tuple(t.shape) for key, t in rebuilt.state_dict().items()} == expected
    return rebuilt, config


def assert_same_outputs(a: nn.Module, b: nn.Module, *args: Any, **kwargs: Any) -> None:
    """`b` computes bitwise what `a` computes when called with `args` and `kwargs` (outputs
    that are dicts or tuples of tensors included), in training and in eval mode, and their
    states (BatchNorm statistics included) move alike."""
    for mode in (True, False):
        outputs = []
        for model in (a, b):
            model.train(mode)
            torch.manual_seed(7)  # the same dropout masks
            outputs.append(model(*args, **kwargs))
        torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
    for (key, want), got in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(got, want), key
