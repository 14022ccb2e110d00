"""A Circuit as an nn.Module: keys, repr, repeats' weights, submodules and the declared nodes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from torch_circuit import Circuit, EndBlock, GetInput, LambdaLayer, SaveInput, StartBlock
from torch_circuit.plan import BlockNode, LayerNode, ReadNode, SaveNode


def quickstart(num_repeats: int = 3, share_weights: bool = False) -> Circuit:
    return Circuit(
        nn.Conv2d(3, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        StartBlock("resnet", num_repeats=num_repeats, share_weights=share_weights),
        SaveInput("residual"),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        GetInput("residual", op=torch.add),
        EndBlock("resnet"),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_quickstart_has_three_real_blocks_of_parameters() -> None:
    assert count(quickstart()) == 224_906
    one_block = 2 * (64 * 64 * 9 + 64) + 2 * 2 * 64
    assert count(quickstart()) - count(quickstart(num_repeats=1)) == 2 * one_block


def test_shared_weights_count_one_repeat() -> None:
    assert count(quickstart(share_weights=True)) == count(quickstart(num_repeats=1))
    model = quickstart(share_weights=True)
    assert list(model.resnet._modules) == ["0"]


def test_state_dict_keys_carry_block_repeat_and_position() -> None:
    keys = list(quickstart().state_dict())
    assert keys[:2] == ["0.weight", "0.bias"]
    assert "resnet.0.5.weight" in keys
    assert "resnet.2.9.running_var" in keys
    assert keys[-2:] == ["15.weight", "15.bias"]
    assert not any("expanded" in key for key in keys)


def test_state_dict_keys_are_stable_across_builds() -> None:
    assert list(quickstart().state_dict()) == list(quickstart().state_dict())


def test_parameters_enumerate_in_forward_order() -> None:
    model = Circuit(
        nn.Linear(2, 3),
        StartBlock("b", num_repeats=2),
        SaveInput("s", transform=nn.Linear(3, 3)),
        nn.Linear(3, 3),
        GetInput("s", transform=nn.Linear(3, 3, bias=False)),
        EndBlock("b"),
        nn.Linear(3, 1),
    )
    names = [name for name, _ in model.named_parameters()]
    assert names == [
        "0.weight", "0.bias",
        "b.0.2.transform.weight", "b.0.2.transform.bias",
        "b.0.3.weight", "b.0.3.bias",
        "b.0.4.transform.weight",
        "b.1.2.transform.weight", "b.1.2.transform.bias",
        "b.1.3.weight", "b.1.3.bias",
        "b.1.4.transform.weight",
        "6.weight", "6.bias",
    ]  # fmt: skip


def test_repeats_are_freshly_initialised_not_clones() -> None:
    model = quickstart()
    weights = [model.get_submodule(f"resnet.{r}.5").weight for r in range(3)]
    assert not torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[1], weights[2])
    assert weights[0] is not weights[1]


def test_repeat_zero_uses_the_modules_passed_in() -> None:
    conv = nn.Conv2d(4, 4, 1)
    model = Circuit(StartBlock("b", num_repeats=2), conv, EndBlock("b"))
    assert model.get_submodule("b.0.1") is conv
    assert model.get_submodule("b.1.1") is not conv


def test_fresh_repeats_reinitialise_parents_after_children() -> None:
    # nn.MultiheadAttention zeroes out_proj.bias after out_proj's own init.
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(8, 2)
    model = Circuit(StartBlock("b", num_repeats=2), attn, EndBlock("b"))
    copy = model.get_submodule("b.1.1")
    assert torch.count_nonzero(copy.out_proj.bias) == 0
    assert not torch.equal(copy.in_proj_weight, attn.in_proj_weight)
    assert not torch.equal(copy.out_proj.weight, attn.out_proj.weight)


def test_fresh_repeats_reset_batchnorm_statistics() -> None:
    norm = nn.BatchNorm1d(4)
    norm.running_mean.fill_(3.0)
    model = Circuit(StartBlock("b", num_repeats=2), norm, EndBlock("b"))
    assert torch.equal(model.get_submodule("b.1.1").running_mean, torch.zeros(4))


def test_module_shared_within_a_body_stays_shared_in_each_repeat() -> None:
    layer = nn.Linear(4, 4)
    model = Circuit(StartBlock("b", num_repeats=2), layer, nn.ReLU(), layer, EndBlock("b"))
    assert model.get_submodule("b.1.1") is model.get_submodule("b.1.3")
    assert model.get_submodule("b.1.1") is not layer


def test_nested_blocks_expand_every_level() -> None:
    calls = []

    class Counter(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            return x

    model = Circuit(
        StartBlock("outer", num_repeats=3),
        StartBlock("inner", num_repeats=4),
        Counter(),
        EndBlock("inner"),
        EndBlock("outer"),
    )
    model(torch.zeros(1))
    assert len(calls) == 12
    counters = {model.get_submodule(f"outer.{o}.inner.{i}.2") for o in range(3) for i in range(4)}
    assert len(counters) == 12  # every (outer, inner) repeat has a counter of its own


def test_transforms_and_module_ops_are_trained_submodules_copied_per_repeat() -> None:
    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor, saved: torch.Tensor) -> torch.Tensor:
            return x + self.scale * saved

    model = Circuit(
        StartBlock("b", num_repeats=2),
        SaveInput("s", transform=nn.Linear(4, 4)),
        nn.Linear(4, 4),
        GetInput("s", op=Gate()),
        EndBlock("b"),
    )
    keys = set(model.state_dict())
    assert {
        "b.0.1.transform.weight",
        "b.1.1.transform.weight",
        "b.0.3.op.scale",
        "b.1.3.op.scale",
    } <= keys
    model(torch.randn(2, 4)).sum().backward()
    assert model.get_submodule("b.1.3.op").scale.grad is not None
    assert model.get_submodule("b.0.1.transform").weight.grad is not None


def test_plain_callables_are_wrapped_as_lambda_layers() -> None:
    model = Circuit(nn.Linear(3, 3), torch.relu)
    assert isinstance(model.get_submodule("1"), LambdaLayer)
    x = torch.randn(2, 3)
    assert torch.equal(model(x), torch.relu(model.get_submodule("0")(x)))
    assert "LambdaLayer(relu)" in repr(model)


def test_string_ops_and_torch_cat() -> None:
    x = torch.randn(2, 3, 4, 4)
    for op, expected in [("add", x + x), ("mul", x * x), ("cat", torch.cat((x, x), 1))]:
        assert torch.equal(Circuit(SaveInput("s"), GetInput("s", op=op))(x), expected)
    assert torch.equal(
        Circuit(SaveInput("s"), GetInput("s", op=torch.cat))(x), torch.cat((x, x), 1)
    )


def test_cat_puts_the_current_tensor_first() -> None:
    model = Circuit(SaveInput("s"), LambdaLayer(lambda t: t + 1), GetInput("s", op="cat"))
    x = torch.zeros(1, 2)
    assert torch.equal(model(x), torch.tensor([[1.0, 1.0, 0.0, 0.0]]))


def test_op_receives_current_then_saved() -> None:
    model = Circuit(SaveInput("s"), LambdaLayer(lambda t: t * 10), GetInput("s", op=torch.sub))
    assert torch.equal(model(torch.ones(1)), torch.tensor([9.0]))


def test_swapped_in_module_is_the_one_that_runs() -> None:
    model = Circuit(StartBlock("b", num_repeats=2), nn.Linear(2, 2), EndBlock("b"))
    model.get_submodule("b.1").register_module("1", nn.Identity())
    setattr(model.get_submodule("b.0"), "1", nn.Identity())
    x = torch.randn(3, 2)
    assert torch.equal(model(x), x)


def test_repr_folds_alike_repeats_and_shows_skip_names() -> None:
    text = repr(quickstart())
    assert "(resnet): Block('resnet' ×3)(" in text
    assert "(0-2): 3 x Repeat(" in text
    assert "(4): SaveInput('residual')" in text
    assert "(11): GetInput('residual', op=add)" in text
    assert text.count("Conv2d(64, 64") == 2


def test_repr_marks_shared_weights() -> None:
    text = repr(quickstart(share_weights=True))
    assert "(resnet): Block('resnet' ×3, shared weights)(" in text
    assert "(0): Repeat(" in text


def test_repr_keeps_unlike_repeats_apart() -> None:
    model = Circuit(StartBlock("b", num_repeats=2), nn.Linear(2, 2), EndBlock("b"))
    model.get_submodule("b.1").register_module("1", nn.Identity())
    text = repr(model)
    assert "(0): Repeat(" in text and "(1): Repeat(" in text


def test_nodes_describe_the_declared_structure() -> None:
    nodes = quickstart().nodes
    assert nodes[0] == LayerNode(0, "0")
    block = nodes[3]
    assert isinstance(block, BlockNode)
    assert (block.name, block.position, block.end, block.num_repeats) == ("resnet", 3, 12, 3)
    assert block.body[0] == SaveNode(4, "4", "residual", readers=(11,))
    assert block.body[-1] == ReadNode(11, "11", "residual", source=4, op="add")


def test_empty_circuit_is_the_identity() -> None:
    x = torch.randn(2)
    assert Circuit()(x) is x


def test_block_indexes_its_repeats_like_a_module_list() -> None:
    model = quickstart()
    assert len(model.resnet) == 3
    assert model.resnet[2] is model.get_submodule("resnet.2")
    shared = quickstart(share_weights=True)
    assert len(shared.resnet) == 3
    assert shared.resnet[2] is shared.resnet[0]


def test_block_slices_like_a_module_list() -> None:
    model = quickstart()
    tail = model.resnet[1:]
    assert isinstance(tail, nn.ModuleList)
    assert list(tail) == [model.resnet[1], model.resnet[2]]
    assert list(model.resnet[::-1]) == list(reversed(list(model.resnet)))
    tail.requires_grad_(False)  # e.g. freezing the later repeats
    assert all(p.requires_grad for p in model.resnet[0].parameters())
    assert not any(p.requires_grad for p in model.resnet[2].parameters())


def test_block_index_errors_name_the_block() -> None:
    model = quickstart()
    assert model.resnet[-1] is model.resnet[2]
    with pytest.raises(IndexError, match=r"block 'resnet' has repeats 0 to 2; repeat 3 does not"):
        model.resnet[3]
    with pytest.raises(TypeError, match=r"block 'resnet' is indexed by repeat \(an int\) or a"):
        model.resnet["1"]  # type: ignore[call-overload]


def nested_model() -> Circuit:
    """Nested blocks, shared weights, a transform, a module op and a named layer."""
    return Circuit(
        ("stem", nn.Linear(4, 4)),
        StartBlock("outer", num_repeats=2),
        SaveInput("r", transform=nn.Linear(4, 4)),
        StartBlock("inner", num_repeats=2, share_weights=True),
        nn.Linear(4, 4),
        nn.LayerNorm(4),
        EndBlock("inner"),
        GetInput("r", op=nn.Bilinear(4, 4, 4)),
        EndBlock("outer"),
        nn.Linear(4, 2),
    )


@pytest.mark.parametrize(("name", "build"), [("quickstart", quickstart), ("nested", nested_model)])
def test_state_dict_keys_match_the_golden_list(name: str, build: Any) -> None:
    # A change of the key format breaks every checkpoint users have: it must be deliberate.
    # UPDATE_GOLDEN=1 rewrites tests/golden/<name>_state_dict_keys.txt.
    path = Path(__file__).parent / "golden" / f"{name}_state_dict_keys.txt"
    keys = "\n".join(build().state_dict()) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(keys, encoding="utf-8")
    assert keys == path.read_text(encoding="utf-8")
