"""`copy_weights` ports hand-written models whose parameters are registered out of forward
order (ConvNeXt's `layer_scale`, ViT's `class_token`) into their Circuit twins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import torch_circuit
from torch_circuit import (
    Circuit,
    EndBlock,
    GetInput,
    Output,
    SaveInput,
    StartBlock,
    copy_weights,
)

# --- ConvNeXt-style: each block registers its layer_scale before its convolution ---


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layer_scale = nn.Parameter(torch.rand(dim, 1, 1))  # registered first, used last
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.BatchNorm2d(dim)
        self.pwconv1 = nn.Conv2d(dim, 4 * dim, 1)
        self.act = nn.GELU()
        self.pwconv2 = nn.Conv2d(4 * dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))
        return x + self.layer_scale * y


class ConvNeXt(nn.Module):
    def __init__(self, dim: int = 8, depth: int = 2, classes: int = 5) -> None:
        super().__init__()
        self.head = nn.Linear(dim, classes)  # registered before the stem, too
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(dim) for _ in range(depth)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


@torch_circuit.register(name="porting.LayerScale")
class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.rand(dim, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * x


@torch_circuit.register(name="porting.MeanPool")
class MeanPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean((2, 3))


def convnext_circuit(dim: int = 8, depth: int = 2, classes: int = 5) -> Circuit:
    return Circuit(
        nn.Conv2d(3, dim, 4, stride=4),
        StartBlock("blocks", num_repeats=depth),
        SaveInput("x"),
        nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
        nn.BatchNorm2d(dim),
        nn.Conv2d(dim, 4 * dim, 1),
        nn.GELU(),
        nn.Conv2d(4 * dim, dim, 1),
        LayerScale(dim),
        GetInput("x"),
        EndBlock("blocks"),
        MeanPool(),
        nn.Linear(dim, classes),
    )


# --- ViT-style: class_token and position embedding registered before the patch embedding ---


class ViT(nn.Module):
    def __init__(self, dim: int = 8, heads: int = 2, depth: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.class_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, 5, dim))
        self.conv_proj = nn.Conv2d(3, dim, 4, stride=4)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True)
            for _ in range(depth)
        )
        self.ln = nn.LayerNorm(dim)
        self.heads = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_proj(x).flatten(2).transpose(1, 2)  # (B, 4, dim)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embedding
        for layer in self.layers:
            x = layer(x)
        return self.heads(self.ln(x)[:, 0])


@torch_circuit.register(name="porting.Tokens")
class Tokens(nn.Module):
    """(B, C, H, W) -> (B, H*W, C)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).transpose(1, 2)


@torch_circuit.register(name="porting.ClassToken")
class ClassToken(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, dim))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1)


@torch_circuit.register(name="porting.AddPositions")
class AddPositions(nn.Module):
    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, length, dim))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.weight


@torch_circuit.register(name="porting.First")
class First(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x[:, 0]


def vit_circuit(dim: int = 8, heads: int = 2, depth: int = 2, classes: int = 3) -> Circuit:
    return Circuit(
        nn.Conv2d(3, dim, 4, stride=4),
        Tokens(),
        ClassToken(dim),
        AddPositions(5, dim),
        StartBlock("layers", num_repeats=depth),
        nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True),
        EndBlock("layers"),
        nn.LayerNorm(dim),
        First(),
        nn.Linear(dim, classes),
    )


@pytest.mark.parametrize(
    ("hand", "circuit", "shape"),
    [(ConvNeXt, convnext_circuit, (2, 3, 8, 8)), (ViT, vit_circuit, (2, 3, 8, 8))],
)
def test_out_of_order_models_are_ported_by_use(
    hand: type[nn.Module], circuit: object, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    source = hand()
    assert callable(circuit)
    target = circuit()
    x = torch.randn(*shape)
    # parameters() order does not line up: the old way fails on the first pair.
    first_source, first_target = next(source.parameters()), next(target.parameters())
    assert first_source.shape != first_target.shape
    report = copy_weights(source, target, x)
    assert report.source_unused == report.target_unused == []
    source.eval()
    target.eval()
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)
    source.train()
    target.train()
    out_source, out_target = source(x), target(x)
    torch.testing.assert_close(out_target, out_source, rtol=0, atol=0)
    out_source.square().sum().backward()
    out_target.square().sum().backward()
    pairs = dict(report.copied)
    hand_params = dict(source.named_parameters())
    circuit_params = dict(target.named_parameters())
    for src_key, dst_key in pairs.items():
        if src_key in hand_params:
            torch.testing.assert_close(
                circuit_params[dst_key].grad, hand_params[src_key].grad, rtol=0, atol=0
            )


def test_the_report_pairs_keys_in_use_order() -> None:
    torch.manual_seed(0)
    report = copy_weights(ConvNeXt(depth=1), convnext_circuit(depth=1), torch.randn(1, 3, 8, 8))
    assert report.copied[:3] == [
        ("stem.weight", "0.weight"),
        ("stem.bias", "0.bias"),
        ("blocks.0.dwconv.weight", "blocks.0.3.weight"),
    ]
    assert ("blocks.0.layer_scale", "blocks.0.8.scale") in report.copied
    assert report.copied[-3:] == [
        ("blocks.0.norm.running_mean", "blocks.0.4.running_mean"),
        ("blocks.0.norm.running_var", "blocks.0.4.running_var"),
        ("blocks.0.norm.num_batches_tracked", "blocks.0.4.num_batches_tracked"),
    ]
    assert str(report) == f"copied {len(report.copied)} tensors"


def test_modes_and_buffers_are_left_as_they_were() -> None:
    source, target = ConvNeXt(), convnext_circuit()
    source.blocks[0].train()
    source.head.eval()
    before = source.blocks[0].norm.running_mean.clone()
    copy_weights(source, target, torch.randn(1, 3, 8, 8))
    assert source.blocks[0].training and not source.head.training and target.training
    assert torch.equal(source.blocks[0].norm.running_mean, before)
    assert source.blocks[0].norm.num_batches_tracked.item() == 0


def test_unused_tensors_are_reported() -> None:
    class WithAux(ConvNeXt):
        def __init__(self) -> None:
            super().__init__()
            self.aux = nn.Linear(8, 2)  # never called in forward

    with pytest.raises(
        ValueError,
        match=r"cannot pair tensors the example never uses \(in the source: aux.weight, aux.bias\)",
    ):
        copy_weights(WithAux(), convnext_circuit(), torch.randn(1, 3, 8, 8))
    report = copy_weights(WithAux(), convnext_circuit(), torch.randn(1, 3, 8, 8), strict=False)
    assert report.source_unused == ["aux.weight", "aux.bias"]
    assert "not used on the example in the source: aux.weight, aux.bias" in str(report)


def test_different_networks_are_refused_before_anything_is_copied() -> None:
    target = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    before = [p.clone() for p in target.parameters()]
    with pytest.raises(
        ValueError,
        match=r"the parameter used 3rd is 1.weight \(5, 4\) in Sequential but 1.weight \(2, 4\)",
    ):
        copy_weights(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5)), target, torch.randn(1, 3))
    with pytest.raises(
        ValueError,
        match=r"uses 2 parameters but Sequential uses 4; only the circuit uses 1.weight, 1.bias",
    ):
        copy_weights(nn.Sequential(nn.Linear(3, 4)), target, torch.randn(1, 3))
    assert all(torch.equal(a, b) for a, b in zip(before, target.parameters(), strict=True))


def test_inputs_may_be_a_tuple_or_keywords() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x: Tensor, y: Tensor) -> Tensor:
            return self.b(y) + self.a(x)

    x, y = torch.randn(1, 2), torch.randn(1, 2)
    report = copy_weights(Two(), Two(), (x, y))
    assert [pair[0] for pair in report.copied] == ["b.weight", "b.bias", "a.weight", "a.bias"]
    assert copy_weights(Two(), Two(), {"x": x, "y": y}).copied == report.copied


# --- Named inputs and dict outputs: a padded encoder returning every layer's hidden state ---


class MaskedEncoder(nn.Module):
    def __init__(self, dim: int = 8, depth: int = 2) -> None:
        super().__init__()
        self.head = nn.Linear(dim, 3)  # registered first, used last
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, 2, 2 * dim, dropout=0.0, batch_first=True)
            for _ in range(depth)
        )

    def forward(self, x: Tensor, mask: Tensor) -> dict[str, Any]:
        hidden = []
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=mask)
            hidden.append(x)
        return {"hidden": tuple(hidden), "logits": self.head(x)}


@torch_circuit.register(name="porting.PaddedLayer")
class PaddedLayer(nn.TransformerEncoderLayer):
    """An op reading the padding mask: `layer(x, src_key_padding_mask=mask)`."""

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x, src_key_padding_mask=mask)


def masked_circuit(dim: int = 8, depth: int = 2) -> Circuit:
    return Circuit(
        StartBlock("layers", num_repeats=depth),
        GetInput("mask", op=PaddedLayer(dim, 2, 2 * dim, dropout=0.0, batch_first=True)),
        Output("hidden"),
        EndBlock("layers"),
        nn.Linear(dim, 3),
        Output("logits"),
        inputs=("mask",),
    )


def test_a_model_with_named_inputs_and_outputs_is_ported_and_saved(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source, target = MaskedEncoder(), masked_circuit()
    x = torch.randn(3, 5, 8)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] + [True] * 4])
    report = copy_weights(source, target, (x, mask))
    for source_key, target_key in report.copied:  # the same tensor of the same layer
        _, layer, rest = source_key.split(".", 2) if "layers" in source_key else ("", "", "")
        expected_key = f"layers.{layer}.1.op.{rest}" if layer else source_key.replace("head", "4")
        assert target_key == expected_key
    assert len(report.copied) == len(target.state_dict())
    loaded = torch_circuit.load(torch_circuit.save(target, tmp_path / "masked"))
    for model in (source, target, loaded):
        model.eval()
    with torch.no_grad():
        expected = source(x, mask)
        torch.testing.assert_close(target(x, mask), expected, rtol=0, atol=0)
        torch.testing.assert_close(loaded(x, mask=mask), expected, rtol=0, atol=0)
