"""Shared helpers: copy a hand-written model's state into a Circuit and compare the two.

They are exposed as fixtures (``copy_state``, ``assert_trains_alike``) so test modules need not
import this file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map


def assert_same(actual: Tensor | None, expected: Tensor | None, what: str) -> None:
    """Bitwise equality: both models run the same operations in the same order."""
    assert actual is not None and expected is not None, f"{what}: missing tensor"
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, msg=lambda m: f"{what}: {m}")


Order = Callable[[nn.Module], list[nn.Parameter]]


def _parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(model.parameters())


def copy_state_impl(
    source: nn.Module,
    target: nn.Module,
    source_order: Order = _parameters,
    target_order: Order = _parameters,
) -> None:
    """Copy parameters, then buffers, from ``source`` to ``target``, one-to-one in order.

    Fails if the two do not enumerate the same number of tensors with the same shapes, which is
    itself part of the proof that ``parameters()`` and ``buffers()`` follow forward order. A
    model that registers its parameters in another order (``nn.TransformerEncoder``) gives
    its order as ``source_order``.
    """
    pairs = (
        ("parameters", source_order(source), target_order(target)),
        ("buffers", list(source.buffers()), list(target.buffers())),
    )
    for kind, sources, targets in pairs:
        assert len(sources) == len(targets), f"{kind}: {len(sources)} vs {len(targets)}"
        with torch.no_grad():
            for index, (src, dst) in enumerate(zip(sources, targets, strict=True)):
                assert src.shape == dst.shape, f"{kind}[{index}]: {src.shape} vs {dst.shape}"
                dst.copy_(src)


def assert_same_state(
    hand: nn.Module,
    circuit: nn.Module,
    what: str,
    hand_order: Order = _parameters,
    circuit_order: Order = _parameters,
) -> None:
    pairs = zip(hand_order(hand), circuit_order(circuit), strict=True)
    for index, (h, c) in enumerate(pairs):
        assert_same(c, h, f"{what}: parameter {index}")
    for index, (h, c) in enumerate(zip(hand.buffers(), circuit.buffers(), strict=True)):
        assert_same(c, h, f"{what}: buffer {index}")


@dataclass
class Call:
    """The arguments of one forward call: ``model(*args, **kwargs)``."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


def _leaf(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().clone().requires_grad_(value.is_floating_point())
    return value


def forward_backward(model: nn.Module, x: Tensor | Call, seed: int) -> tuple[Any, list[Any]]:
    """Run ``model`` on fresh leaf copies of its inputs, backpropagate a fixed random loss.

    Returns the outputs (detached, in the structure the model returned) and the gradients of
    the floating-point inputs, in argument order.
    """
    model.zero_grad(set_to_none=True)
    call = x if isinstance(x, Call) else Call((x,))
    args, kwargs = tree_map(_leaf, (call.args, call.kwargs))
    out = model(*args, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    leaves, _ = tree_flatten(out)
    loss = sum(
        (leaf * torch.randn(leaf.shape, generator=generator).to(leaf.dtype)).sum()
        for leaf in leaves
        if isinstance(leaf, Tensor) and leaf.requires_grad
    )
    if isinstance(loss, Tensor):
        loss.backward()
    inputs, _ = tree_flatten((args, kwargs))
    grads = [v.grad for v in inputs if isinstance(v, Tensor) and v.is_floating_point()]
    return tree_map(lambda v: v.detach() if isinstance(v, Tensor) else v, out), grads


def assert_same_outputs(actual: Any, expected: Any, what: str) -> None:
    """Bitwise equality of two outputs of the same structure (tensors, tuples, dicts)."""
    actual_leaves, actual_spec = tree_flatten(actual)
    expected_leaves, expected_spec = tree_flatten(expected)
    assert actual_spec == expected_spec, f"{what}: {actual_spec} vs {expected_spec}"
    for index, (a, e) in enumerate(zip(actual_leaves, expected_leaves, strict=True)):
        assert_same(a, e, f"{what} [{index}]")


def assert_trains_alike_impl(
    hand: nn.Module,
    circuit: nn.Module,
    inputs: Sequence[Tensor | Call],
    check_eval: bool = True,
    hand_order: Order = _parameters,
    circuit_order: Order = _parameters,
) -> None:
    """Copy ``hand`` into ``circuit``, then train both on ``inputs`` and compare every step.

    Each step compares, in train mode, outputs, input and parameter gradients, and (after an
    SGD step with momentum) parameters and buffers such as BatchNorm running statistics; then,
    in eval mode, outputs and gradients again. ``hand_order`` and ``circuit_order`` pair the
    parameters of two models that register them in different orders. Inputs are tensors, or
    ``Call``s for models with named inputs.
    """
    copy_state_impl(hand, circuit, hand_order, circuit_order)
    orders = (hand_order, circuit_order)
    assert_same_state(hand, circuit, "after copy", *orders)
    optimisers = [
        torch.optim.SGD(order(model), lr=0.05, momentum=0.9)
        for model, order in zip((hand, circuit), orders, strict=True)
    ]
    modes = ("train", "eval") if check_eval else ("train",)
    for step, x in enumerate(inputs):
        for mode in modes:
            hand.train(mode == "train")
            circuit.train(mode == "train")
            where = f"step {step}, {mode} mode"
            out_h, grads_h = forward_backward(hand, x, seed=step)
            out_c, grads_c = forward_backward(circuit, x, seed=step)
            assert_same_outputs(out_c, out_h, f"{where}: output")
            for index, (grad_c, grad_h) in enumerate(zip(grads_c, grads_h, strict=True)):
                assert_same(grad_c, grad_h, f"{where}: gradient of input {index}")
            pairs = zip(hand_order(hand), circuit_order(circuit), strict=True)
            for index, (h, c) in enumerate(pairs):
                assert_same(c.grad, h.grad, f"{where}: gradient of parameter {index}")
            assert_same_state(hand, circuit, f"{where}, after forward", *orders)
            if mode == "train":
                for optimiser in optimisers:
                    optimiser.step()
                assert_same_state(hand, circuit, f"{where}, after optimiser step", *orders)
    hand.train()
    circuit.train()


@pytest.fixture
def copy_state() -> Callable[[nn.Module, nn.Module], None]:
    """``copy_state(source, target)``: parameters then buffers, one-to-one in order."""
    return copy_state_impl


@pytest.fixture
def assert_trains_alike() -> Callable[..., None]:
    """``assert_trains_alike(hand, circuit, inputs)``: see ``assert_trains_alike_impl``."""
    return assert_trains_alike_impl
