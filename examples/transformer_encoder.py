"""A pre-norm transformer encoder as a Circuit: one layer written once, repeated N times.

The task is generated: read a sequence of digits and write it out sorted, one output token
per input position (``3 1 4 1 5`` -> ``1 1 3 4 5``). The sequences have different lengths,
from 1 to 10 digits, so every sequence is padded to 10 with a padding token, and attention
must not look at the padding. The score is token accuracy over the real (unpadded) positions
of held-out sequences.

Three idioms carry a transformer over into a flat layer list:

* **The padding mask is a named input.** ``Circuit(..., inputs={"mask": None})`` makes it an
  argument of ``forward`` after the tokens, ``model(tokens, mask)``, like
  ``nn.TransformerEncoder``'s ``src_key_padding_mask`` (and, as there, leaving it out means
  no position is padding).
* **Attention is the op of a read of the mask.** ``GetInput("mask", op=SelfAttention(...))``
  computes ``attention(x, mask)`` in every layer: queries, keys and values are all the current
  tensor, and the keys at padded positions are masked out. Only the output, not the attention
  weights, flows on.
* **Both residuals use one skip name.** Each layer saves ``"residual"`` before attention, adds
  it back, then saves ``"residual"`` again before the MLP: the second save rebinds the name,
  like assigning a variable.

``StartBlock("layer", num_repeats=N)`` makes N independent layers (``share_weights=True``
would tie them, as in ALBERT). Before and after training, the script copies the Circuit's
weights into the same encoder written by hand, gives both the same padded batch and mask, and
checks that outputs and gradients agree; it also checks that the mask works (what the padding
holds changes no real position's output).

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
    EquivalenceError,
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
PAD = VOCAB  # the padding token, after the digits
SEQ_LEN = 10  # the longest sequence; the shortest has one digit
IGNORE = -100  # the target at padded positions: cross_entropy's ignore_index


# Layers a flat list needs -----------------------------------------------------------------------


@register  # so that configs can name it: examples/configs/transformer.yaml
class SelfAttention(nn.Module):
    """``nn.MultiheadAttention`` as the op of a read of the mask: ``attention(x, mask)``.

    Queries, keys and values are all ``x``; ``mask`` is ``True`` at padded positions (or
    ``None``: nothing is padding).
    """

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:  # (B, T, d), (B, T)
        return self.attn(x, x, x, key_padding_mask=mask, need_weights=False)[0]


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
    """Token ids (B, T) and a padding mask (B, T) -> logits (B, T, VOCAB).

    Called as ``model(tokens, mask)`` or ``model(tokens, mask=mask)``; ``model(tokens)`` treats
    no position as padding.
    """
    return Circuit(
        nn.Embedding(VOCAB + 1, d_model),  # (B, T) -> (B, T, d); the digits and PAD
        AddPositions(max_len, d_model),
        StartBlock("layer", num_repeats=num_layers),
        SaveInput("residual"),
        nn.LayerNorm(d_model),
        GetInput("mask", op=SelfAttention(d_model, num_heads)),  # attention(x, mask)
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
        inputs={"mask": None},  # a named input of forward, read in every layer
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

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        h = self.ln1(x)
        x = self.attn(h, h, h, key_padding_mask=mask, need_weights=False)[0] + x
        return self.mlp(self.ln2(x)) + x


class PlainEncoder(nn.Module):
    """``build_circuit``'s network as one usually writes it in PyTorch."""

    def __init__(
        self, num_layers: int = 3, d_model: int = 64, num_heads: int = 4, max_len: int = SEQ_LEN
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB + 1, d_model)
        # A module, not a bare nn.Parameter: parameters() lists a module's own parameters
        # before its children's, which would put the positions ahead of the embedding.
        self.pos = AddPositions(max_len, d_model)
        self.layers = nn.ModuleList(PlainLayer(d_model, num_heads) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.pos(self.embed(tokens))
        for layer in self.layers:
            x = layer(x, mask)
        return self.head(self.ln_f(x))


# Data and training ------------------------------------------------------------------------------


def make_sorting(count: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """``count`` digit sequences of random lengths 1 to SEQ_LEN, padded, and their sorted twins.

    Returns:
        ``tokens`` (count, SEQ_LEN): the digits, then ``PAD``; ``mask`` (count, SEQ_LEN):
        ``True`` at padded positions; ``targets`` (count, SEQ_LEN): the digits sorted, then
        ``IGNORE``.
    """
    gen = torch.Generator().manual_seed(seed)
    digits = torch.randint(0, VOCAB, (count, SEQ_LEN), generator=gen)
    lengths = torch.randint(1, SEQ_LEN + 1, (count, 1), generator=gen)
    mask = torch.arange(SEQ_LEN)[None, :] >= lengths
    # Padding sorts last: sort with PAD in the padded places, then mark those as ignored.
    tokens = digits.masked_fill(mask, PAD)
    targets = tokens.sort(dim=1).values.masked_fill(mask, IGNORE)
    return tokens, mask, targets


def sequence_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy over the real positions: logits (B, T, V), targets (B, T)."""
    return nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE)


def token_accuracy(model: nn.Module, tokens: Tensor, mask: Tensor, targets: Tensor) -> float:
    """The fraction of real (unpadded) output positions predicted right."""
    model.eval()
    with torch.no_grad():
        right = model(tokens, mask).argmax(-1) == targets
    return float(right[~mask].float().mean())


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
    test = make_sorting(2000, seed=10_000)  # epochs use seeds 1, 2, ...
    check = tuple(part[:32] for part in test)
    print(
        f"sorting 1 to {SEQ_LEN} digits, padded to {SEQ_LEN}; "
        f"{steps * args.batch_size} fresh sequences per epoch"
    )

    torch.manual_seed(args.seed)
    circuit = build_circuit(num_layers=args.layers)
    print(circuit)
    check_against_plain(circuit, args.layers, *check, "after building")
    check_mask_masks(circuit, *check[:2])

    def batches(epoch: int) -> list[tuple[tuple[Tensor, Tensor], Tensor]]:
        parts = (p.split(args.batch_size) for p in make_sorting(steps * args.batch_size, epoch))
        return [((tokens, mask), targets) for tokens, mask, targets in zip(*parts, strict=True)]

    history = train_side_by_side(
        {"circuit": circuit},  # called as circuit(tokens, mask): a batch's inputs are a tuple
        batches,
        sequence_loss,
        lambda _: token_accuracy(circuit, *test),
        epochs=epochs,
        lr=args.lr,
        metric_name="token accuracy",
    )
    check_against_plain(circuit, args.layers, *check, "after training")
    check_mask_masks(circuit, *check[:2])

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
    circuit: Circuit, num_layers: int, tokens: Tensor, mask: Tensor, targets: Tensor, label: str
) -> None:
    """Copy the Circuit's weights into a hand-written encoder; compare outputs and gradients
    on the same padded batch and mask."""
    plain = PlainEncoder(num_layers=num_layers)
    copy_weights(circuit, plain, (tokens[:1], mask[:1]))
    plain.train(circuit.training)
    check_equivalence(circuit, plain, (tokens, mask), targets, sequence_loss, label)


def check_mask_masks(model: nn.Module, tokens: Tensor, mask: Tensor) -> None:
    """What the padded positions hold must change no real position's output."""
    other = tokens.masked_fill(mask, 3)  # any digit in place of PAD
    with torch.no_grad():
        diff = float((model(tokens, mask) - model(other, mask))[~mask].abs().max())
    print(f"[check] the mask: changing the padding moves real outputs by at most {diff:.2e}")
    if diff > 1e-5:
        raise EquivalenceError(f"the padding mask leaks: real outputs moved by {diff:.2e}.")


if __name__ == "__main__":
    sys.exit(main())
