"""Every semantic point against the same network written by hand in plain PyTorch.

Each hand model creates its modules in forward order, so its ``parameters()`` and
``buffers()`` line up one-to-one with the Circuit's; ``assert_trains_alike`` copies them over
and compares outputs, gradients, parameters and BatchNorm statistics over two SGD steps, in
train and eval mode.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock

Check = Callable[..., None]


def images(channels: int = 3, size: int = 8, steps: int = 2) -> list[Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(2, channels, size, size, generator=generator) for _ in range(steps)]


def vectors(*shape: int, steps: int = 2) -> list[Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(*shape, generator=generator) for _ in range(steps)]


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- ResNet stage: the seed's Quick Start ---


def quickstart() -> Circuit:
    return Circuit(
        nn.Conv2d(3, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        StartBlock("resnet", num_repeats=3),
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


class HandResidual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        residual = x
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return x + residual


class HandQuickStart(nn.Module):
    def __init__(self, num_repeats: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.bn = nn.BatchNorm2d(64)
        self.blocks = nn.ModuleList(HandResidual(64) for _ in range(num_repeats))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))


def test_resnet_stage_quickstart(assert_trains_alike: Check) -> None:
    hand, circuit = HandQuickStart(), quickstart()
    assert count(circuit) == count(hand) == 224_906
    assert_trains_alike(hand, circuit, images())


# --- Pre-norm transformer-style MLP block ---


class HandPreNormMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.down(F.gelu(self.up(self.norm(x))))


def test_pre_norm_mlp_blocks(assert_trains_alike: Check) -> None:
    circuit = Circuit(
        StartBlock("layer", num_repeats=3),
        SaveInput("residual"),
        nn.LayerNorm(16),
        nn.Linear(16, 32),
        nn.GELU(),
        nn.Linear(32, 16),
        GetInput("residual"),
        EndBlock("layer"),
        nn.LayerNorm(16),
    )
    hand = nn.Sequential(*(HandPreNormMLP(16, 32) for _ in range(3)), nn.LayerNorm(16))
    assert_trains_alike(hand, circuit, vectors(2, 5, 16))


# --- U-Net with cat skips and nested blocks ---


class HandUNet(nn.Module):
    """enc1 -> [pool -> enc2 -> 2 x residual bottleneck -> up] -> cat enc1 -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Conv2d(3, 8, 3, padding=1)
        self.enc2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bottleneck = nn.ModuleList(
            nn.ModuleDict(
                {
                    "conv": nn.Conv2d(16, 16, 3, padding=1),
                    "bn": nn.BatchNorm2d(16),
                    "merge": nn.Conv2d(32, 16, 1),
                }
            )
            for _ in range(2)
        )
        self.up = nn.ConvTranspose2d(16, 16, 2, stride=2)
        self.dec2 = nn.Conv2d(32, 8, 3, padding=1)
        self.dec1 = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        e1 = F.relu(self.enc1(x))  # (B, 8, H, W)
        x = F.max_pool2d(e1, 2)
        e2 = F.relu(self.enc2(x))  # (B, 16, H/2, W/2)
        x = F.max_pool2d(e2, 2)
        for layer in self.bottleneck:
            skip = x
            x = F.relu(layer["bn"](layer["conv"](x)))
            x = layer["merge"](torch.cat((x, skip), dim=1))
        x = self.up(x)  # (B, 16, H/2, W/2)
        x = F.relu(self.dec2(torch.cat((x, e2), dim=1)))  # (B, 8, H/2, W/2)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = F.relu(self.dec1(torch.cat((x, e1), dim=1)))  # (B, 8, H, W)
        return self.head(x)


def test_unet_with_cat_skips_and_nested_blocks(assert_trains_alike: Check) -> None:
    circuit = Circuit(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        SaveInput("enc1"),
        nn.MaxPool2d(2),
        StartBlock("level2", num_repeats=1),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        SaveInput("enc2"),
        nn.MaxPool2d(2),
        StartBlock("bottleneck", num_repeats=2),
        SaveInput("skip"),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        GetInput("skip", op="cat"),
        nn.Conv2d(32, 16, 1),
        EndBlock("bottleneck"),
        nn.ConvTranspose2d(16, 16, 2, stride=2),
        GetInput("enc2", op=torch.cat),
        nn.Conv2d(32, 8, 3, padding=1),
        nn.ReLU(),
        EndBlock("level2"),
        nn.Upsample(scale_factor=2.0, mode="nearest"),
        GetInput("enc1", op="cat"),
        nn.Conv2d(16, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 2, 1),
    )
    assert_trains_alike(HandUNet(), circuit, images())


# --- Nested blocks: outer x inner repeats ---


def test_nested_blocks_run_inner_outer_times_inner(assert_trains_alike: Check) -> None:
    calls: list[int] = []

    def counted(x: Tensor) -> Tensor:
        calls.append(1)
        return x

    circuit = Circuit(
        StartBlock("outer", num_repeats=2),
        nn.Linear(6, 6),
        StartBlock("inner", num_repeats=3),
        SaveInput("r"),
        nn.Linear(6, 6),
        nn.Tanh(),
        counted,
        GetInput("r"),
        EndBlock("inner"),
        nn.LayerNorm(6),
        EndBlock("outer"),
    )

    class HandInner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(6, 6)

        def forward(self, x: Tensor) -> Tensor:
            return torch.tanh(self.linear(x)) + x

    class HandOuter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(6, 6)
            self.inner = nn.Sequential(*(HandInner() for _ in range(3)))
            self.norm = nn.LayerNorm(6)

        def forward(self, x: Tensor) -> Tensor:
            return self.norm(self.inner(self.linear(x)))

    hand = nn.Sequential(HandOuter(), HandOuter())
    assert count(circuit) == count(hand) == 2 * (42 + 3 * 42 + 12)
    circuit(torch.randn(1, 6))
    assert len(calls) == 2 * 3
    assert_trains_alike(hand, circuit, vectors(4, 6))


# --- A save before a block, read by every repeat; each repeat's own saves stay private ---


def test_save_before_block_read_in_every_repeat(assert_trains_alike: Check) -> None:
    circuit = Circuit(
        nn.Linear(5, 5),
        SaveInput("x0"),
        StartBlock("stage", num_repeats=3),
        SaveInput("local"),
        nn.Linear(5, 5),
        nn.Tanh(),
        GetInput("x0"),
        nn.Linear(5, 5),
        GetInput("local", op="mul"),
        EndBlock("stage"),
        nn.Linear(5, 2),
    )

    class Hand(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Linear(5, 5)
            self.pairs = nn.ModuleList(
                nn.ModuleList([nn.Linear(5, 5), nn.Linear(5, 5)]) for _ in range(3)
            )
            self.head = nn.Linear(5, 2)

        def forward(self, x: Tensor) -> Tensor:
            x = self.stem(x)
            x0 = x
            for first, second in self.pairs:  # type: ignore[misc]
                local = x
                x = torch.tanh(first(x)) + x0
                x = second(x) * local
            return self.head(x)

    assert_trains_alike(Hand(), circuit, vectors(3, 5))


# --- share_weights=True: one set of modules runs every repeat ---


def test_shared_weights_call_one_block_n_times(assert_trains_alike: Check) -> None:
    def build(share_weights: bool) -> Circuit:
        return Circuit(
            StartBlock("rec", num_repeats=4, share_weights=share_weights),
            SaveInput("r"),
            nn.Linear(6, 6),
            nn.BatchNorm1d(6),
            nn.ReLU(),
            GetInput("r"),
            EndBlock("rec"),
        )

    class HandBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(6, 6)
            self.bn = nn.BatchNorm1d(6)

        def forward(self, x: Tensor) -> Tensor:
            return F.relu(self.bn(self.linear(x))) + x

    class Hand(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = HandBlock()

        def forward(self, x: Tensor) -> Tensor:
            for _ in range(4):
                x = self.block(x)
            return x

    circuit = build(share_weights=True)
    assert count(circuit) == count(HandBlock()) == 42 + 12
    assert count(build(share_weights=False)) == 4 * count(circuit)
    assert_trains_alike(Hand(), circuit, vectors(5, 6))
    bn = circuit.get_submodule("rec.0.3")
    assert isinstance(bn, nn.BatchNorm1d)
    assert bn.num_batches_tracked.item() == 2 * 4  # updated by every repeat of both steps


# --- Transforms on SaveInput and GetInput (projection shortcuts) ---


class HandProjection(nn.Module):
    """A downsampling residual unit with a 1x1 projection shortcut, then 2 plain units whose
    shortcut goes through a trained 1x1 conv applied at read time."""

    def __init__(self) -> None:
        super().__init__()
        self.project = nn.Conv2d(4, 8, 1, stride=2)  # applied at save time: created first
        self.conv1 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.units = nn.ModuleList(
            nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1)])
            for _ in range(2)
        )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.project(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)) + shortcut)
        for conv, bn, gate in self.units:  # type: ignore[misc]
            saved = x
            x = bn(conv(x))
            x = x + gate(saved)  # the read's transform runs after the body: created last
        return x


def test_transforms_on_save_and_read(assert_trains_alike: Check) -> None:
    circuit = Circuit(
        SaveInput("shortcut", transform=nn.Conv2d(4, 8, 1, stride=2)),
        nn.Conv2d(4, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        GetInput("shortcut"),
        nn.ReLU(),
        StartBlock("unit", num_repeats=2),
        SaveInput("saved"),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        GetInput("saved", transform=nn.Conv2d(8, 8, 1)),
        EndBlock("unit"),
    )
    assert_trains_alike(HandProjection(), circuit, images(channels=4))


# --- Ops: torch.mul, a lambda, an nn.Module, "add", "mul" ---


class Gate(nn.Module):
    """An op with its own trained parameter: ``current + scale * saved``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, dim))

    def forward(self, current: Tensor, saved: Tensor) -> Tensor:
        return current + self.scale * saved


def test_ops(assert_trains_alike: Check) -> None:
    def half_sum(current: Tensor, saved: Tensor) -> Tensor:
        return current + 0.5 * saved

    circuit = Circuit(
        SaveInput("a"),
        nn.Linear(4, 4),
        GetInput("a", op=torch.mul),
        SaveInput("b"),
        nn.Linear(4, 4),
        GetInput("b", op=lambda current, saved: current - 2.0 * saved),
        SaveInput("c"),
        nn.Linear(4, 4),
        GetInput("c", op=Gate(4)),
        SaveInput("d"),
        nn.Linear(4, 4),
        GetInput("d", op="add"),
        SaveInput("e"),
        nn.Linear(4, 4),
        GetInput("e", op="mul"),
        SaveInput("f"),
        nn.Tanh(),
        GetInput("f", op=half_sum),
        SaveInput("g"),
        nn.Linear(4, 4),
        GetInput("g", op=torch.sub),  # argument order: current first
    )

    class Hand(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1, self.l2, self.l3 = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
            self.gate = Gate(4)
            self.l4, self.l5, self.l6 = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x: Tensor) -> Tensor:
            x = self.l1(x) * x
            x = self.l2(x) - 2.0 * x
            x = self.gate(self.l3(x), x)
            x = self.l4(x) + x
            x = self.l5(x) * x
            x = torch.tanh(x) + 0.5 * x
            return self.l6(x) - x

    assert_trains_alike(Hand(), circuit, vectors(3, 4))


# --- Many reads of one save (DenseNet-style) ---


def test_many_reads_of_one_save(assert_trains_alike: Check) -> None:
    circuit = Circuit(
        nn.Linear(4, 4),
        SaveInput("x0"),
        nn.Linear(4, 4),
        GetInput("x0"),
        nn.Tanh(),
        GetInput("x0", op="cat"),
        nn.Linear(8, 4),
        GetInput("x0", op="mul"),
        StartBlock("again", num_repeats=2),
        nn.Linear(4, 4),
        GetInput("x0"),
        EndBlock("again"),
    )

    class Hand(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.a = nn.Linear(4, 4), nn.Linear(4, 4)
            self.merge = nn.Linear(8, 4)
            self.repeats = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))

        def forward(self, x: Tensor) -> Tensor:
            x0 = self.stem(x)
            x = torch.tanh(self.a(x0) + x0)
            x = self.merge(torch.cat((x, x0), dim=1)) * x0
            for linear in self.repeats:
                x = linear(x) + x0
            return x

    assert_trains_alike(Hand(), circuit, vectors(3, 4))


# --- Rebinding a name: a transformer layer uses one name for both residuals ---


def test_rebinding_a_name(assert_trains_alike: Check) -> None:
    circuit = Circuit(
        StartBlock("layer", num_repeats=2),
        SaveInput("residual"),
        nn.LayerNorm(8),
        nn.Linear(8, 8),
        GetInput("residual"),
        SaveInput("residual"),
        nn.LayerNorm(8),
        nn.Linear(8, 16),
        nn.GELU(),
        nn.Linear(16, 8),
        GetInput("residual"),
        EndBlock("layer"),
    )

    class HandLayer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1, self.mix = nn.LayerNorm(8), nn.Linear(8, 8)
            self.norm2, self.up, self.down = nn.LayerNorm(8), nn.Linear(8, 16), nn.Linear(16, 8)

        def forward(self, x: Tensor) -> Tensor:
            x = x + self.mix(self.norm1(x))
            return x + self.down(F.gelu(self.up(self.norm2(x))))

    assert_trains_alike(nn.Sequential(HandLayer(), HandLayer()), circuit, vectors(2, 3, 8))


# --- Plain callables in the layer list ---


def test_plain_callables_are_layers(assert_trains_alike: Check) -> None:
    circuit = Circuit(
        nn.Conv2d(3, 4, 3, padding=1),
        F.relu,
        lambda x: x * 2.0 - 1.0,
        functools.partial(torch.flatten, start_dim=1),
        torch.tanh,
        nn.Linear(4 * 8 * 8, 3),
    )

    class Hand(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 3)

        def forward(self, x: Tensor) -> Tensor:
            x = F.relu(self.conv(x)) * 2.0 - 1.0
            return self.fc(torch.tanh(torch.flatten(x, start_dim=1)))

    assert_trains_alike(Hand(), circuit, images())


# --- A Circuit nested in a Circuit ---


def residual_circuit(dim: int) -> Circuit:
    # Its skip name clashes with the outer one on purpose: a nested Circuit is its own scope.
    return Circuit(SaveInput("r"), nn.Linear(dim, dim), nn.ReLU(), GetInput("r"))


def test_circuit_nested_in_a_circuit(assert_trains_alike: Check) -> None:
    circuit = Circuit(
        nn.Linear(4, 4),
        SaveInput("r"),
        residual_circuit(4),
        nn.Linear(4, 4),
        GetInput("r", op="mul"),
        StartBlock("stack", num_repeats=2),
        residual_circuit(4),
        EndBlock("stack"),
    )

    class HandResidual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x: Tensor) -> Tensor:
            return F.relu(self.linear(x)) + x

    class Hand(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.inner, self.mix = nn.Linear(4, 4), HandResidual(), nn.Linear(4, 4)
            self.stack = nn.Sequential(HandResidual(), HandResidual())

        def forward(self, x: Tensor) -> Tensor:
            r = self.stem(x)
            x = self.mix(self.inner(r)) * r
            return self.stack(x)

    assert_trains_alike(Hand(), circuit, vectors(3, 4))


# --- StartBlock(..., checkpoint=True) ---


def checkpointed_stage(checkpoint: bool) -> Circuit:
    return Circuit(
        nn.Conv2d(3, 8, 3, padding=1),
        StartBlock("stage", num_repeats=3, checkpoint=checkpoint),
        SaveInput("residual"),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        GetInput("residual"),
        EndBlock("stage"),
    )


def test_checkpointed_block_matches_the_unchecked_model(assert_trains_alike: Check) -> None:
    class Hand(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.blocks = nn.Sequential(*(HandResidual(8) for _ in range(3)))

        def forward(self, x: Tensor) -> Tensor:
            return self.blocks(self.stem(x))

    checkpointed = checkpointed_stage(checkpoint=True)
    assert_trains_alike(Hand(), checkpointed, images())
    bn = checkpointed.get_submodule("stage.2.4")
    assert isinstance(bn, nn.BatchNorm2d)
    assert bn.num_batches_tracked.item() == 2  # once per training step, not again in backward
    assert_trains_alike(checkpointed, checkpointed_stage(checkpoint=False), images())


def test_checkpointed_shared_nested_block_reading_an_outer_save(assert_trains_alike: Check) -> None:
    circuit = Circuit(
        nn.Linear(4, 4),
        SaveInput("x0"),
        StartBlock("outer", num_repeats=2, checkpoint=True),
        StartBlock("inner", num_repeats=2, share_weights=True, checkpoint=True),
        SaveInput("r"),
        nn.Linear(4, 4),
        nn.BatchNorm1d(4),
        nn.Tanh(),
        GetInput("r"),
        GetInput("x0", op="mul"),
        EndBlock("inner"),
        EndBlock("outer"),
    )

    class HandInner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear, self.bn = nn.Linear(4, 4), nn.BatchNorm1d(4)

        def forward(self, x: Tensor, x0: Tensor) -> Tensor:
            return (torch.tanh(self.bn(self.linear(x))) + x) * x0

    class Hand(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Linear(4, 4)
            self.inners = nn.ModuleList(HandInner() for _ in range(2))  # one per outer repeat

        def forward(self, x: Tensor) -> Tensor:
            x0 = self.stem(x)
            x = x0
            for inner in self.inners:
                for _ in range(2):
                    x = inner(x, x0)
            return x

    assert_trains_alike(Hand(), circuit, vectors(6, 4))
