"""A pre-norm transformer encoder as a Circuit: one layer written once, repeated N times.

The task is generated: read a sequence of digits and write it out sorted, one output token
per input position (``3 1 4 1 5`` -> ``1 1 3 4 5``). The score is token accuracy on held-out
sequences.

Two idioms carry a transformer over into a flat layer list:

* **Attention takes three tensors**, a Circuit layer takes one. ``SelfAttention`` below is a
  tiny ``nn.Module`` that calls ``attn(x, x, x, need_weights=False)[0]``: queries, keys and
  values are all the current tensor, and only the output (not the weights) flows on.
* **Both residuals use one skip name.** Each layer saves ``"residual"`` before attention, adds
  it back, then saves ``"residual"`` again before the MLP: the second save rebinds the name,
  like assigning a variable.

``StartBlock("layer", num_repeats=N)`` makes N independent layers (``share_weights=True``
would tie them, as in ALBERT). Before and after training, the script copies the Circuit's
weights into the same encoder written by hand and checks that outputs and gradients agree.

Run:
    python examples/transformer_encoder.py           # under a minute on 2 CPU cores
    python examples/transformer_encoder.py --smoke   # a few steps, still checks equivalence

Writes into ``--out`` (default ``out/transformer_encoder``): ``transformer.pdf``/``.png`` (the
diagram) and ``training.png`` (loss and token accuracy per epoch).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from _common import (
    check_equivalence,
    example_parser,
    parse_example_args,
    plot_history,
    save_diagram,
    train_side_by_side,
)
from torch import Tensor, nn

from torch_circuit import (
    Circuit,
    EndBlock,
    GetInput,
    SaveInput,
    StartBlock,
    copy_weights,
    register,
)

TARGET_ACCURACY = 0.95
VOCAB = 10  # the digits 0-9
SEQ_LEN = 10


# Layers a flat list needs -----------------------------------------------------------------------


@register  # so that configs can name it: examples/configs/transformer.yaml
class SelfAttention(nn.Module):
    """``nn.MultiheadAttention`` as a one-tensor layer: queries, keys and values are all ``x``."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, d) -> (B, T, d)
        return self.attn(x, x, x, need_weights=False)[0]


@register
class AddPositions(nn.Module):
    """Add a learned embedding of each position to the token embeddings."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, max_len, d_model) * 0.02)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, d)
        return x + self.weight[:, : x.shape[1]]


# The model, as a Circuit ------------------------------------------------------------------------


def build_circuit(
    num_layers: int = 3, d_model: int = 64, num_heads: int = 4, max_len: int = SEQ_LEN
) -> Circuit:
    """Token ids (B, T) -> logits (B, T, VOCAB) through ``num_layers`` pre-norm layers."""
    return Circuit(
        nn.Embedding(VOCAB, d_model),  # (B, T) -> (B, T, d)
        AddPositions(max_len, d_model),
        StartBlock("layer", num_repeats=num_layers),
        SaveInput("residual"),
        nn.LayerNorm(d_model),
        SelfAttention(d_model, num_heads),
        GetInput("residual"),  # x = x + attention(norm(x))
        SaveInput("residual"),  # rebinds the name for the second residual
        nn.LayerNorm(d_model),
        nn.Linear(d_model, 4 * d_model),
        nn.GELU(),
        nn.Linear(4 * d_model, d_model),
        GetInput("residual"),  # x = x + mlp(norm(x))
        EndBlock("layer"),
        nn.LayerNorm(d_model),
        nn.Linear(d_model, VOCAB),  # (B, T, VOCAB)
    )


# The same model, by hand ------------------------------------------------------------------------


class PlainLayer(nn.Module):
    """One pre-norm encoder layer: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.ln1(x)
        x = self.attn(h, h, h, need_weights=False)[0] + x
        return self.mlp(self.ln2(x)) + x


class PlainEncoder(nn.Module):
    """``build_circuit``'s network as one usually writes it in PyTorch."""

    def __init__(
        self, num_layers: int = 3, d_model: int = 64, num_heads: int = 4, max_len: int = SEQ_LEN
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d_model)
        # A module, not a bare nn.Parameter: parameters() lists a module's own parameters
        # before its children's, which would put the positions ahead of the embedding.
        self.pos = AddPositions(max_len, d_model)
        self.layers = nn.ModuleList(PlainLayer(d_model, num_heads) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.pos(self.embed(tokens))
        for layer in self.layers:
            x = layer(x)
        return self.head(self.ln_f(x))


# Data and training ------------------------------------------------------------------------------


def make_sorting(count: int, seed: int) -> tuple[Tensor, Tensor]:
    """``count`` random digit sequences (count, SEQ_LEN) and the same sequences sorted."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (count, SEQ_LEN), generator=gen)
    return tokens, tokens.sort(dim=1).values


def sequence_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy over every position: logits (B, T, V), targets (B, T)."""
    return nn.functional.cross_entropy(logits.transpose(1, 2), targets)  # wants (B, V, T)


def token_accuracy(model: nn.Module, tokens: Tensor, targets: Tensor) -> float:
    """The fraction of output positions predicted right."""
    model.eval()
    with torch.no_grad():
        return float((model(tokens).argmax(-1) == targets).float().mean())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = example_parser(__doc__, out="out/transformer_encoder")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps-per-epoch", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    return parse_example_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    epochs, steps = (1, 3) if args.smoke else (args.epochs, args.steps_per_epoch)
    test_tokens, test_targets = make_sorting(2000, seed=10_000)  # epochs use seeds 1, 2, ...
    print(f"sorting {SEQ_LEN} digits; {steps * args.batch_size} fresh sequences per epoch")

    torch.manual_seed(args.seed)
    circuit = build_circuit(num_layers=args.layers)
    print(circuit)
    check_against_plain(circuit, args.layers, test_tokens[:32], test_targets[:32], "after building")

    def batches(epoch: int) -> list[tuple[Tensor, Tensor]]:
        tokens, targets = make_sorting(steps * args.batch_size, seed=epoch)
        return list(zip(tokens.split(args.batch_size), targets.split(args.batch_size), strict=True))

    history = train_side_by_side(
        {"circuit": circuit},
        batches,
        sequence_loss,
        lambda model: token_accuracy(model, test_tokens, test_targets),
        epochs=epochs,
        lr=args.lr,
        metric_name="token accuracy",
    )
    check_against_plain(circuit, args.layers, test_tokens[:32], test_targets[:32], "after training")

    args.out.mkdir(parents=True, exist_ok=True)
    plot_history(history, args.out / "training.png", "Transformer encoder Circuit: sorting digits")
    save_diagram(circuit, args.out, "transformer")

    final = history.epochs[-1]["circuit"].metric
    verdict = "reached" if final >= TARGET_ACCURACY else "below"
    print(
        f"final token accuracy {100 * final:.2f}% ({verdict} the {TARGET_ACCURACY:.0%} target) "
        f"in {time.perf_counter() - started:.0f}s; all equivalence checks passed"
    )
    return 0


def check_against_plain(
    circuit: Circuit, num_layers: int, tokens: Tensor, targets: Tensor, label: str
) -> None:
    """Copy the Circuit's weights into a hand-written encoder; compare outputs and gradients."""
    plain = PlainEncoder(num_layers=num_layers)
    copy_weights(circuit, plain, tokens[:1])
    plain.train(circuit.training)
    check_equivalence(circuit, plain, tokens, targets, sequence_loss, label)


if __name__ == "__main__":
    sys.exit(main())
