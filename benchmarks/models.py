"""The benchmark models: each written by hand, as a ``Circuit``, and as ``nn.Sequential``.

The hand-written models are the yardstick of issue 4: the layers a user would otherwise put in
a custom ``nn.Module`` with a hand-written ``forward``. Every ``Circuit`` here declares the
same layers in the same order, so weights copy one-to-one in ``parameters()`` order
(``check_equivalent`` proves it before anything is timed).

``torch_circuit`` is imported inside the builders, never at module level, so that a benchmark
process can put the old torch-circuit 0.9.1 first on ``sys.path`` and build its circuits
with the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

# --------------------------------------------------------------------------------------------
# Residual MLP: x + fc2(relu(fc1(x))), repeated. Python-overhead-bound at batch 1.


class MLPBlock(nn.Module):
    """One residual MLP block, written by hand."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(self.act(self.fc1(x)))


class NestedMLPBlock(MLPBlock):
    """The same block, its ``forward`` marked as a region ``torch.compile`` compiles once."""

    @torch.compiler.nested_compile_region
    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(self.act(self.fc1(x)))


class ResidualMLP(nn.Module):
    """Residual MLP blocks, by hand: a Python loop over a ``ModuleList``."""

    def __init__(self, width: int, repeats: int, block: type[MLPBlock] = MLPBlock) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(block(width) for _ in range(repeats))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class UnrolledResidualMLP(nn.Module):
    """Residual MLP blocks, by hand, with a straight-line ``forward`` (no loop, no submodule
    call per block): what one long trace of the model looks like, written out.
    """

    def __init__(self, width: int, repeats: int) -> None:
        super().__init__()
        for index in range(repeats):
            setattr(self, f"fc1_{index}", nn.Linear(width, width))
            setattr(self, f"fc2_{index}", nn.Linear(width, width))
        lines = ["def forward(self, x):", "    relu = torch.relu"]
        for index in range(repeats):
            lines.append(f"    x = x + self.fc2_{index}(relu(self.fc1_{index}(x)))")
        lines.append("    return x")
        namespace: dict[str, Any] = {"torch": torch}
        exec(compile("\n".join(lines), f"<unrolled residual MLP x{repeats}>", "exec"), namespace)
        self._forward = namespace["forward"]

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(self, x)  # type: ignore[no-any-return]


def mlp_circuit(width: int, repeats: int) -> nn.Module:
    """The residual MLP as a ``Circuit``."""
    from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock

    return Circuit(
        StartBlock("block", num_repeats=repeats),
        SaveInput("residual"),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, width),
        GetInput("residual", op=torch.add),
        EndBlock("block"),
    )


def mlp_sequential(width: int, repeats: int) -> nn.Module:
    """The residual MLP as ``nn.Sequential`` of hand-written blocks."""
    return nn.Sequential(*(MLPBlock(width) for _ in range(repeats)))


# --------------------------------------------------------------------------------------------
# Pre-norm transformer blocks: x + attn(ln(x)), then x + mlp(ln(x)). Compile benchmarks.


class SelfAttention(nn.Module):
    """``nn.MultiheadAttention`` as a layer of one tensor (batch first, no weights returned)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


class TransformerBlock(nn.Module):
    """One pre-norm transformer block, written by hand."""

    def __init__(self, width: int, heads: int = 4) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class Transformer(nn.Module):
    """Transformer blocks, by hand: a Python loop over a ``ModuleList``."""

    def __init__(self, width: int, repeats: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(width) for _ in range(repeats))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def transformer_circuit(width: int, repeats: int) -> nn.Module:
    """The transformer blocks as a ``Circuit``."""
    from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock

    return Circuit(
        StartBlock("layer", num_repeats=repeats),
        SaveInput("attn"),
        nn.LayerNorm(width),
        SelfAttention(width, 4),
        GetInput("attn"),
        SaveInput("mlp"),
        nn.LayerNorm(width),
        nn.Linear(width, 4 * width),
        nn.GELU(),
        nn.Linear(4 * width, width),
        GetInput("mlp"),
        EndBlock("layer"),
    )


# --------------------------------------------------------------------------------------------
# Residual conv blocks: relu(x + conv2(relu(conv1(x)))), repeated. Memory benchmarks.


class ConvBlock(nn.Module):
    """One residual conv block, written by hand."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act2(x + self.conv2(self.act1(self.conv1(x))))


class ResidualConv(nn.Module):
    """Residual conv blocks, by hand; ``checkpoint_every=k`` recomputes each run of ``k``
    blocks during backward (``torch.utils.checkpoint``; 0: no checkpointing).
    """

    def __init__(self, channels: int, repeats: int, checkpoint_every: int = 0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ConvBlock(channels) for _ in range(repeats))
        self.checkpoint_every = checkpoint_every

    def forward(self, x: Tensor) -> Tensor:
        every = self.checkpoint_every
        if not every or not torch.is_grad_enabled():
            for block in self.blocks:
                x = block(x)
            return x
        for start in range(0, len(self.blocks), every):
            segment = nn.Sequential(*self.blocks[start : start + every])
            x = checkpoint(segment, x, use_reentrant=False)
        return x


def conv_circuit(channels: int, repeats: int, checkpointed: bool | int = False) -> nn.Module:
    """The residual conv blocks as a ``Circuit``; ``checkpointed`` is ``checkpoint=``."""
    from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock

    options = {"checkpoint": checkpointed} if checkpointed else {}  # 0.9.1 has no checkpoint
    return Circuit(
        StartBlock("block", num_repeats=repeats, **options),
        SaveInput("residual"),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1),
        GetInput("residual", op=torch.add),
        nn.ReLU(),
        EndBlock("block"),
    )


def conv_sequential(channels: int, repeats: int) -> nn.Module:
    """The residual conv blocks as ``nn.Sequential`` of hand-written blocks."""
    return nn.Sequential(*(ConvBlock(channels) for _ in range(repeats)))


class ResidualConvBN(nn.Module):
    """The Quick Start's blocks, by hand; ``checkpointed`` recomputes each during backward."""

    def __init__(self, channels: int, repeats: int, checkpointed: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(QuickStartBlock(channels) for _ in range(repeats))
        self.checkpointed = checkpointed

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            if self.checkpointed and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def convbn_circuit(channels: int, repeats: int, checkpointed: bool = False) -> nn.Module:
    """The Quick Start's blocks as a ``Circuit``; ``checkpointed`` sets ``checkpoint=True``."""
    from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock

    options = {"checkpoint": True} if checkpointed else {}
    return Circuit(
        StartBlock("resnet", num_repeats=repeats, **options),
        SaveInput("residual"),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        GetInput("residual", op=torch.add),
        EndBlock("resnet"),
    )


# --------------------------------------------------------------------------------------------
# The seed README's Quick Start: a compute-bound ResNet.


class QuickStartBlock(nn.Module):
    """One block of the Quick Start, written by hand."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))) + x


class QuickStart(nn.Module):
    """The seed README's Quick Start model, by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3, padding=1)
        self.bn = nn.BatchNorm2d(64)
        self.act = nn.ReLU()
        self.blocks = nn.ModuleList(QuickStartBlock() for _ in range(3))
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.bn(self.conv(x)))  # (B, 64, H, W)
        for block in self.blocks:
            x = block(x)
        return self.fc(self.flatten(self.pool(x)))  # (B, 10)


def quickstart_circuit() -> nn.Module:
    """The seed README's Quick Start, verbatim."""
    from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock

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


def quickstart_sequential() -> nn.Module:
    """The Quick Start as ``nn.Sequential`` with hand-written blocks."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        *(QuickStartBlock() for _ in range(3)),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


# --------------------------------------------------------------------------------------------
# Construction cost: 100 repeats of a 10-layer block.


def _ten_layers(width: int) -> list[nn.Module]:
    return [module for _ in range(5) for module in (nn.Linear(width, width), nn.ReLU())]


class TenLayerBlock(nn.Module):
    """Five ``Linear``/``ReLU`` pairs, by hand."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_ten_layers(width))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class DeepStack(nn.Module):
    """``repeats`` ten-layer blocks, by hand."""

    def __init__(self, width: int, repeats: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TenLayerBlock(width) for _ in range(repeats))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def deep_circuit(width: int, repeats: int) -> nn.Module:
    """``repeats`` ten-layer blocks as a ``Circuit`` (each repeat freshly initialised)."""
    from torch_circuit import Circuit, EndBlock, StartBlock

    return Circuit(StartBlock("block", num_repeats=repeats), *_ten_layers(width), EndBlock("block"))


# --------------------------------------------------------------------------------------------
# Registry: benchmark processes name a model by a string.

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp/hand": lambda width, repeats: ResidualMLP(width, repeats),
    "mlp/hand-unrolled": lambda width, repeats: UnrolledResidualMLP(width, repeats),
    "mlp/hand-nested-region": lambda width, repeats: ResidualMLP(width, repeats, NestedMLPBlock),
    "mlp/hand-regional": lambda width, repeats: ResidualMLP(width, repeats),
    "mlp/circuit": mlp_circuit,
    "mlp/sequential": mlp_sequential,
    "transformer/hand": Transformer,
    "transformer/hand-regional": Transformer,
    "transformer/circuit": transformer_circuit,
    "conv/hand": lambda channels, repeats: ResidualConv(channels, repeats),
    "conv/hand-checkpoint": lambda channels, repeats: ResidualConv(channels, repeats, 1),
    "conv/hand-checkpoint-pairs": lambda channels, repeats: ResidualConv(channels, repeats, 2),
    "conv/circuit": conv_circuit,
    "conv/circuit-checkpoint": lambda channels, repeats: conv_circuit(channels, repeats, True),
    "conv/circuit-checkpoint-pairs": lambda channels, repeats: conv_circuit(channels, repeats, 2),
    "conv/sequential": conv_sequential,
    "convbn/hand": lambda channels, repeats: ResidualConvBN(channels, repeats),
    "convbn/hand-checkpoint": lambda channels, repeats: ResidualConvBN(channels, repeats, True),
    "convbn/circuit": convbn_circuit,
    "convbn/circuit-checkpoint": lambda channels, repeats: convbn_circuit(channels, repeats, True),
    "quickstart/hand": QuickStart,
    "quickstart/circuit": quickstart_circuit,
    "quickstart/sequential": quickstart_sequential,
    "deep/hand": DeepStack,
    "deep/circuit": deep_circuit,
}


def build(name: str, **sizes: int) -> nn.Module:
    """Build the model registered as ``name`` (``"<family>/<variant>"``) with ``sizes``."""
    return BUILDERS[name](**sizes)


def copy_parameters(source: nn.Module, target: nn.Module) -> None:
    """Copy parameters, then buffers, from ``source`` to ``target`` one-to-one in order."""
    with torch.no_grad():
        for kind in ("parameters", "buffers"):
            sources = list(getattr(source, kind)())
            targets = list(getattr(target, kind)())
            if [s.shape for s in sources] != [t.shape for t in targets]:
                raise ValueError(
                    f"{kind} of {type(source).__name__} and "
                    f"{type(target).__name__} do not match one-to-one"
                )
            for src, dst in zip(sources, targets, strict=True):
                dst.copy_(src)


def check_equivalent(reference: nn.Module, candidate: nn.Module, x: Tensor) -> float:
    """Copy ``reference``'s weights into ``candidate`` and return the largest output and
    gradient difference of one forward and backward (0.0 when they compute the same thing).
    """
    copy_parameters(reference, candidate)
    differences = []
    outputs = []
    for model in (reference, candidate):
        model.zero_grad(set_to_none=True)
        out = model(x)
        out.float().square().sum().backward()
        outputs.append(out.detach())
    differences.append((outputs[0] - outputs[1]).abs().max().item())
    for ref, cand in zip(reference.parameters(), candidate.parameters(), strict=True):
        assert ref.grad is not None and cand.grad is not None
        differences.append((ref.grad - cand.grad).abs().max().item())
    return max(differences)
