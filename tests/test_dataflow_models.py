"""Networks that carry more than one tensor, each against plain PyTorch.

A masked pre-norm encoder against `nn.TransformerEncoder`, a cross-attention decoder against
`nn.TransformerDecoder`, a timestep-conditioned U-Net with push/pop levels and per-level widths,
an FPN backbone returning three maps, hidden states per repeat, and a stochastic-depth schedule:
weights copied across, outputs and gradients compared bit for bit over two SGD steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from conftest import Call
from torch import Tensor, nn

from torch_circuit import Circuit, EndBlock, GetInput, Output, PerRepeat, SaveInput, StartBlock

Check = Callable[..., None]
D, HEADS, FF, LAYERS = 16, 2, 32, 2


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def padding_mask(batch: int, length: int, seed: int) -> Tensor:
    """`True` at padded positions: each sequence has a random length of at least 1."""
    lengths = torch.randint(1, length + 1, (batch,), generator=generator(seed))
    return torch.arange(length)[None, :] >= lengths[:, None]


def copy_by_names(source: nn.Module, target: nn.Module, names: dict[str, str]) -> None:
    """Copy `source`'s tensors into `target` under the mapped names; every tensor is mapped."""
    state = source.state_dict()
    mapped = {names_out: state[name_in] for name_in, names_out in names.items()}
    assert sorted(mapped) == sorted(target.state_dict()), "the mapping misses tensors"
    assert sorted(names) == sorted(state), "the mapping misses tensors of the source"
    target.load_state_dict(mapped)


def reordered(names: list[str]) -> Callable[[nn.Module], list[nn.Parameter]]:
    return lambda module: [module.get_parameter(name) for name in names]


# --- A masked pre-norm encoder against nn.TransformerEncoder(norm_first=True) ---


class SelfAttention(nn.Module):
    """The op of a read of the mask: self-attention on the current tensor, padding masked."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(D, HEADS, dropout=0.0, batch_first=True)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.attn(x, x, x, key_padding_mask=mask, need_weights=False)[0]


def feed_forward() -> list[nn.Module]:
    return [nn.Linear(D, FF), nn.ReLU(), nn.Dropout(0.0), nn.Linear(FF, D), nn.Dropout(0.0)]


def encoder_circuit() -> Circuit:
    return Circuit(
        StartBlock("layer", num_repeats=LAYERS),
        SaveInput("x"),
        nn.LayerNorm(D),
        GetInput("mask", op=SelfAttention()),
        nn.Dropout(0.0),
        GetInput("x"),
        SaveInput("x"),
        nn.LayerNorm(D),
        *feed_forward(),
        GetInput("x"),
        EndBlock("layer"),
        nn.LayerNorm(D),
        inputs=("mask",),
    )


def encoder_names() -> dict[str, str]:
    names = {}
    for i in range(LAYERS):
        hand, ours = f"layers.{i}.", f"layer.{i}."
        for part in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"):
            names[f"{hand}self_attn.{part}"] = f"{ours}3.op.attn.{part}"
        for hand_name, key in (("norm1", 2), ("norm2", 7), ("linear1", 8), ("linear2", 11)):
            for tensor in ("weight", "bias"):
                names[f"{hand}{hand_name}.{tensor}"] = f"{ours}{key}.{tensor}"
    names.update({"norm.weight": "15.weight", "norm.bias": "15.bias"})
    return names


def test_masked_encoder_equals_transformer_encoder(assert_trains_alike: Check) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True, norm_first=True)
    hand = nn.TransformerEncoder(layer, LAYERS, norm=nn.LayerNorm(D), enable_nested_tensor=False)
    circuit = encoder_circuit()
    names = encoder_names()
    copy_by_names(hand, circuit, names)
    order = [hand_name for hand_name in names]
    ours = [names[hand_name] for hand_name in order]
    calls = [
        Call((torch.randn(3, 5, D, generator=generator(s)),), {"mask": padding_mask(3, 5, s)})
        for s in range(2)
    ]
    wrapped = _AsKeywords(hand)
    assert_trains_alike(
        wrapped,
        circuit,
        calls,
        hand_order=reordered([f"hand.{n}" for n in order]),
        circuit_order=reordered(ours),
    )


class _AsKeywords(nn.Module):
    """`nn.TransformerEncoder` called as the circuit is: `model(x, mask=...)`."""

    def __init__(self, hand: nn.Module) -> None:
        super().__init__()
        self.hand = hand

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.hand(x, src_key_padding_mask=mask)  # type: ignore[no-any-return]


def test_the_mask_really_masks() -> None:
    circuit = encoder_circuit().eval()
    x = torch.randn(1, 4, D, generator=generator(3))
    mask = torch.tensor([[False, False, True, True]])
    changed = x.clone()
    changed[:, 2:] = 100.0  # only the padded positions change
    with torch.no_grad():
        torch.testing.assert_close(circuit(x, mask)[:, :2], circuit(changed, mask)[:, :2])


# --- A cross-attention decoder reading the encoder's memory ---


class CrossAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(D, HEADS, dropout=0.0, batch_first=True)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        return self.attn(x, memory, memory, need_weights=False)[0]


class CausalSelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(D, HEADS, dropout=0.0, batch_first=True)

    def forward(self, x: Tensor, causal: Tensor) -> Tensor:
        # nn.TransformerDecoder detects a causal mask and says so: the same call here.
        return self.attn(x, x, x, attn_mask=causal, is_causal=True, need_weights=False)[0]


def decoder_circuit() -> Circuit:
    return Circuit(
        StartBlock("layer", num_repeats=LAYERS),
        SaveInput("x"),
        nn.LayerNorm(D),
        GetInput("causal", op=CausalSelfAttention()),
        nn.Dropout(0.0),
        GetInput("x"),
        SaveInput("x"),
        nn.LayerNorm(D),
        GetInput("memory", op=CrossAttention()),
        nn.Dropout(0.0),
        GetInput("x"),
        SaveInput("x"),
        nn.LayerNorm(D),
        *feed_forward(),
        GetInput("x"),
        EndBlock("layer"),
        inputs=("memory", "causal"),
    )


def test_cross_attention_decoder_equals_transformer_decoder(assert_trains_alike: Check) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerDecoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True, norm_first=True)
    hand = nn.TransformerDecoder(layer, LAYERS)
    circuit = decoder_circuit()
    names: dict[str, str] = {}
    for i in range(LAYERS):
        hand_prefix, ours = f"layers.{i}.", f"layer.{i}."
        for part in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"):
            names[f"{hand_prefix}self_attn.{part}"] = f"{ours}3.op.attn.{part}"
            names[f"{hand_prefix}multihead_attn.{part}"] = f"{ours}8.op.attn.{part}"
        for hand_name, key in (
            ("norm1", 2),
            ("norm2", 7),
            ("norm3", 12),
            ("linear1", 13),
            ("linear2", 16),
        ):
            for tensor in ("weight", "bias"):
                names[f"{hand_prefix}{hand_name}.{tensor}"] = f"{ours}{key}.{tensor}"
    copy_by_names(hand, circuit, names)
    causal = torch.ones(4, 4, dtype=torch.bool).triu(1)  # True above the diagonal: masked
    calls = [
        Call(
            (torch.randn(2, 4, D, generator=generator(s)),),
            {"memory": torch.randn(2, 6, D, generator=generator(10 + s)), "causal": causal},
        )
        for s in range(2)
    ]
    order = list(names)
    assert_trains_alike(
        _DecoderAsKeywords(hand),
        circuit,
        calls,
        hand_order=reordered([f"hand.{n}" for n in order]),
        circuit_order=reordered([names[n] for n in order]),
    )


class _DecoderAsKeywords(nn.Module):
    def __init__(self, hand: nn.Module) -> None:
        super().__init__()
        self.hand = hand

    def forward(self, x: Tensor, memory: Tensor, causal: Tensor) -> Tensor:
        return self.hand(x, memory, tgt_mask=causal)  # type: ignore[no-any-return]


# --- A timestep-conditioned residual U-Net: push/pop levels, per-level widths ---

WIDTHS = (4, 8, 16)  # level 0, 1, then the middle
TIME = 6


class ResBlock(nn.Module):
    """A residual block reading the timestep embedding: the op of a read of `t`."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(TIME, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        h = self.conv1(F.silu(x))  # (B, C, H, W)
        h = h + self.time(t)[:, :, None, None]
        h = self.conv2(F.silu(h))
        return h + self.skip(x)  # type: ignore[no-any-return]


def unet_circuit() -> Circuit:
    levels = len(WIDTHS) - 1
    return Circuit(
        nn.Conv2d(1, WIDTHS[0], 3, padding=1),
        StartBlock("down", num_repeats=levels),
        GetInput("t", op=PerRepeat(lambda i, n: ResBlock(WIDTHS[i], WIDTHS[i]))),
        SaveInput("skip", push=True),
        PerRepeat(lambda i, n: nn.Conv2d(WIDTHS[i], WIDTHS[i + 1], 3, stride=2, padding=1)),
        EndBlock("down"),
        GetInput("t", op=ResBlock(WIDTHS[-1], WIDTHS[-1])),
        StartBlock("up", num_repeats=levels),
        PerRepeat(lambda i, n: nn.ConvTranspose2d(WIDTHS[n - i], WIDTHS[n - i - 1], 2, stride=2)),
        GetInput("skip", pop=True, op="cat"),
        GetInput(
            "t", op=PerRepeat(lambda i, n: ResBlock(2 * WIDTHS[n - i - 1], WIDTHS[n - i - 1]))
        ),
        EndBlock("up"),
        nn.Conv2d(WIDTHS[0], 1, 1),
        inputs=("t",),
    )


class HandUNet(nn.Module):
    """The same U-Net written by hand, modules created in forward order."""

    def __init__(self) -> None:
        super().__init__()
        levels = len(WIDTHS) - 1
        self.stem = nn.Conv2d(1, WIDTHS[0], 3, padding=1)
        self.down = nn.ModuleList(
            nn.ModuleList(
                [
                    ResBlock(WIDTHS[i], WIDTHS[i]),
                    nn.Conv2d(WIDTHS[i], WIDTHS[i + 1], 3, stride=2, padding=1),
                ]
            )
            for i in range(levels)
        )
        self.middle = ResBlock(WIDTHS[-1], WIDTHS[-1])
        self.up = nn.ModuleList(
            nn.ModuleList(
                [
                    nn.ConvTranspose2d(WIDTHS[levels - i], WIDTHS[levels - i - 1], 2, stride=2),
                    ResBlock(2 * WIDTHS[levels - i - 1], WIDTHS[levels - i - 1]),
                ]
            )
            for i in range(levels)
        )
        self.head = nn.Conv2d(WIDTHS[0], 1, 1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        x = self.stem(x)
        skips = []
        for block, downsample in self.down:  # type: ignore[misc]
            x = block(x, t)
            skips.append(x)
            x = downsample(x)
        x = self.middle(x, t)
        for upsample, block in self.up:  # type: ignore[misc]
            x = block(torch.cat((upsample(x), skips.pop()), dim=1), t)
        return self.head(x)  # type: ignore[no-any-return]


def test_timestep_unet_with_push_pop_levels_equals_its_twin(assert_trains_alike: Check) -> None:
    torch.manual_seed(0)
    hand, circuit = HandUNet(), unet_circuit()
    calls = [
        Call((torch.randn(2, 1, 8, 8, generator=generator(s)),), {"t": torch.randn(2, TIME)})
        for s in range(2)
    ]
    assert_trains_alike(hand, circuit, calls)
    assert circuit.up[0].get_submodule("10").op.conv1.in_channels == 2 * WIDTHS[1]


# --- An FPN backbone returning three maps ---


def fpn_circuit() -> Circuit:
    return Circuit(
        nn.Conv2d(3, 8, 3, padding=1),
        StartBlock("stage", num_repeats=3),
        PerRepeat(lambda i, n: nn.Conv2d(8 * 2**i, 8 * 2 ** (i + 1), 3, stride=2, padding=1)),
        nn.ReLU(),
        SaveInput(
            "c", push=True, transform=PerRepeat(lambda i, n: nn.Conv2d(8 * 2 ** (i + 1), 8, 1))
        ),
        EndBlock("stage"),
        lambda x: torch.zeros_like(x[:, :8]),  # the top-down path starts from nothing
        StartBlock("top_down", num_repeats=3),
        GetInput(
            "c",
            pop=True,
            op=lambda top, lateral: F.interpolate(top, size=lateral.shape[-2:]) + lateral,
        ),
        Output("p"),
        EndBlock("top_down"),
    )


class HandFPN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stages = nn.ModuleList(
            nn.ModuleList(
                [
                    nn.Conv2d(8 * 2**i, 8 * 2 ** (i + 1), 3, stride=2, padding=1),
                    nn.Conv2d(8 * 2 ** (i + 1), 8, 1),
                ]
            )
            for i in range(3)
        )

    def forward(self, x: Tensor) -> dict[str, tuple[Tensor, ...]]:
        x = self.stem(x)
        laterals = []
        for conv, lateral in self.stages:  # type: ignore[misc]
            x = F.relu(conv(x))
            laterals.append(lateral(x))
        top = torch.zeros_like(x[:, :8])
        maps = []
        for lateral in reversed(laterals):
            top = F.interpolate(top, size=lateral.shape[-2:]) + lateral
            maps.append(top)
        return {"p": tuple(maps)}


def test_fpn_backbone_returns_three_maps(assert_trains_alike: Check) -> None:
    torch.manual_seed(0)
    hand, circuit = HandFPN(), fpn_circuit()
    x = torch.randn(2, 3, 16, 16, generator=generator(4))
    assert [tuple(m.shape) for m in circuit(x)["p"]] == [(2, 8, 2, 2), (2, 8, 4, 4), (2, 8, 8, 8)]
    assert_trains_alike(hand, circuit, [x, torch.randn(2, 3, 16, 16, generator=generator(5))])


# --- Hidden states per repeat ---


def test_hidden_states_per_repeat(assert_trains_alike: Check) -> None:
    class Hand(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(nn.Sequential(nn.Linear(D, D), nn.GELU()) for _ in range(4))
            self.norm = nn.LayerNorm(D)

        def forward(self, x: Tensor) -> dict[str, Any]:
            hidden = []
            for layer in self.layers:
                x = x + layer(x)
                hidden.append(x)
            return {"hidden": tuple(hidden), "last": self.norm(x)}

    torch.manual_seed(0)
    hand = Hand()
    circuit = Circuit(
        StartBlock("layer", num_repeats=4),
        SaveInput("x"),
        nn.Linear(D, D),
        nn.GELU(),
        GetInput("x", op=lambda current, saved: saved + current),
        Output("hidden"),
        EndBlock("layer"),
        nn.LayerNorm(D),
        Output("last"),
    )
    assert_trains_alike(
        hand, circuit, [torch.randn(3, D, generator=generator(s)) for s in range(2)]
    )


# --- A linear stochastic-depth schedule through PerRepeat ---


class DropPath(nn.Module):
    """Drop the whole residual branch per sample with probability `p` (training only)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], 1, generator=None) >= self.p
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


RATE = 0.3


def depth_circuit() -> Circuit:
    return Circuit(
        StartBlock("layer", num_repeats=5),
        SaveInput("x"),
        nn.Linear(D, D),
        nn.Tanh(),
        PerRepeat(lambda i, n: DropPath(RATE * i / (n - 1))),
        GetInput("x"),
        EndBlock("layer"),
    )


def test_stochastic_depth_grows_linearly_and_trains_like_its_twin() -> None:
    circuit = depth_circuit()
    rates = [circuit.layer[i].get_submodule("4").p for i in range(5)]
    assert rates == pytest.approx([0.0, 0.075, 0.15, 0.225, 0.3])

    class Hand(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linears = nn.ModuleList(nn.Linear(D, D) for _ in range(5))
            self.drops = nn.ModuleList(DropPath(RATE * i / 4) for i in range(5))

        def forward(self, x: Tensor) -> Tensor:
            for linear, drop in zip(self.linears, self.drops, strict=True):
                x = drop(torch.tanh(linear(x))) + x
            return x

    hand = Hand()
    weights = circuit.state_dict()
    hand.load_state_dict(
        {
            f"linears.{i}.{tensor}": weights[f"layer.{i}.2.{tensor}"]
            for i in range(5)
            for tensor in ("weight", "bias")
        }
    )
    x = torch.randn(64, D, generator=generator(6))
    with torch.no_grad():
        undropped = hand.eval()(x)
    hand.train()
    for step in range(2):
        torch.manual_seed(100 + step)  # both draw the same drop decisions
        out_hand = hand(x)
        torch.manual_seed(100 + step)
        out_circuit = circuit(x)
        torch.testing.assert_close(out_circuit, out_hand, rtol=0, atol=0)
        assert not torch.equal(out_hand, undropped)  # some paths really were dropped
