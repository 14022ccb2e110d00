"""Helpers the examples share: prove equivalence, train side by side, plot.

The examples put this file's folder on ``sys.path`` by being run as scripts
(``python examples/resnet_mnist.py``), so they import it as ``_common``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # the examples only ever write files

import torch
from torch import Tensor, nn
from tqdm import tqdm

from torch_circuit import Circuit

LossFn = Callable[[Tensor, Tensor], Tensor]
# What a model is called with: one tensor, or a tuple of its positional arguments (as
# `torch_circuit.copy_weights` takes them): `(tokens, mask)`, `(x_t, t)`.
Inputs = Tensor | tuple[Tensor, ...]
Batch = tuple[Inputs, Tensor]

# Relative and absolute tolerance for "equal": the two models run the same float32 ops in the
# same order, so in practice they agree to the last bit; the slack covers reordered reductions.
RTOL = 1e-4
ATOL = 1e-5

# These models are small: splitting their operations over threads saves little, and on a
# machine whose cores are busy with other work the threads wait on each other. On 2 cores
# shared with other jobs, one thread ran each example 1.2 to 11 times faster than PyTorch's
# default of one per core (7 times, comparing medians of 3 interleaved runs).
DEFAULT_THREADS = 1


def example_parser(description: str | None, out: str) -> argparse.ArgumentParser:
    """A parser holding the options every example takes: --seed, --out, --threads, --smoke."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"intra-op CPU threads (default {DEFAULT_THREADS}; 0: PyTorch's own default, one "
        "per core)",
    )
    parser.add_argument("--smoke", action="store_true", help="a few steps, for CI")
    return parser


def parse_example_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> Any:
    """Parse ``argv`` and apply ``--threads``."""
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error(f"--threads must be 0 (PyTorch's default) or more, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


class EquivalenceError(AssertionError):
    """The Circuit and its hand-written twin disagree beyond float tolerance."""


def largest_difference(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    """The largest absolute elementwise difference over pairs of tensors."""
    return max((float((x - y).abs().max()) for x, y in zip(a, b, strict=True)), default=0.0)


def _all_close(a: Sequence[Tensor], b: Sequence[Tensor]) -> bool:
    return all(torch.allclose(x, y, rtol=RTOL, atol=ATOL) for x, y in zip(a, b, strict=True))


def call(model: nn.Module, inputs: Inputs) -> Tensor:
    """`model(inputs)`, or `model(*inputs)` when `inputs` is a tuple of arguments."""
    return model(*inputs) if isinstance(inputs, tuple) else model(inputs)  # type: ignore[no-any-return]


def check_equivalence(
    circuit: nn.Module,
    reference: nn.Module,
    inputs: Inputs,
    targets: Tensor,
    loss_fn: LossFn,
    label: str,
) -> tuple[float, float]:
    """Run one batch forward and backward through both models and compare.

    Prints the largest output and gradient differences and raises ``EquivalenceError`` if
    they exceed float tolerance. Gradients are cleared afterwards.

    Returns:
        The largest output difference and the largest gradient difference.
    """
    outputs: list[Tensor] = []
    grads: list[list[Tensor]] = []
    for model in (circuit, reference):
        model.zero_grad(set_to_none=True)
        output = call(model, inputs)
        loss_fn(output, targets).backward()
        outputs.append(output.detach())
        grads.append(
            [torch.zeros_like(p) if p.grad is None else p.grad for p in model.parameters()]
        )
        model.zero_grad(set_to_none=True)
    output_diff = largest_difference(outputs[:1], outputs[1:])
    grad_diff = largest_difference(grads[0], grads[1])
    print(
        f"[check] {label}: largest output difference {output_diff:.2e}, "
        f"largest gradient difference {grad_diff:.2e} over {len(grads[0])} parameter tensors"
    )
    if not (_all_close(outputs[:1], outputs[1:]) and _all_close(grads[0], grads[1])):
        raise EquivalenceError(
            f"{label}: the Circuit and the hand-written model differ beyond "
            f"rtol={RTOL}, atol={ATOL}."
        )
    return output_diff, grad_diff


def check_same_weights(circuit: nn.Module, reference: nn.Module, label: str) -> float:
    """Compare parameters and buffers of two models pairwise; raise if they drifted apart."""
    a = [t.detach().float() for t in (*circuit.parameters(), *circuit.buffers())]
    b = [t.detach().float() for t in (*reference.parameters(), *reference.buffers())]
    diff = largest_difference(a, b)
    if not _all_close(a, b):
        raise EquivalenceError(f"{label}: weights drifted apart by {diff:.2e}.")
    return diff


@dataclass
class ModelRecord:
    """One model's figures for one epoch."""

    loss: float
    metric: float
    seconds: float


@dataclass
class History:
    """Per-epoch records of each model trained, keyed by model name."""

    metric_name: str
    epochs: list[dict[str, ModelRecord]] = field(default_factory=list)


def train_side_by_side(
    models: dict[str, nn.Module],
    batches: Callable[[int], Iterable[Batch]],
    loss_fn: LossFn,
    evaluate: Callable[[nn.Module], float],
    *,
    epochs: int,
    lr: float,
    metric_name: str,
    max_steps: int | None = None,
) -> History:
    """Train each model on the same batches in the same order, one step each in turn.

    With a single model this is a plain training loop with per-epoch reports.

    Every model gets its own ``AdamW`` with the same settings. After each epoch the models'
    losses, metrics and weights are compared (when there are two or more): they must agree
    within float tolerance, else ``EquivalenceError``.

    Args:
        models: name -> model; the first is the reference for the comparisons.
        batches: epoch -> the epoch's batches (called once per epoch, shared by all models).
        loss_fn: ``(output, target) -> scalar loss``.
        evaluate: model -> test metric (e.g. accuracy), run after each epoch.
        epochs: number of passes over ``batches``.
        lr: learning rate.
        metric_name: how to label ``evaluate``'s result.
        max_steps: stop each epoch after this many steps (the smoke mode).
    """
    names = list(models)
    optimizers = {
        name: torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        for name, model in models.items()
    }
    schedulers = {
        name: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        for name, opt in optimizers.items()
    }
    history = History(metric_name)
    for epoch in range(1, epochs + 1):
        epoch_batches = list(batches(epoch))[:max_steps]
        losses = {name: 0.0 for name in names}
        seconds = {name: 0.0 for name in names}
        progress = tqdm(epoch_batches, desc=f"epoch {epoch}/{epochs}", leave=False, disable=None)
        for inputs, targets in progress:
            for name in names:
                model, optimizer = models[name], optimizers[name]
                start = time.perf_counter()
                model.train()
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(call(model, inputs), targets)
                loss.backward()
                optimizer.step()
                seconds[name] += time.perf_counter() - start
                losses[name] += float(loss.detach()) * len(targets)
            progress.set_postfix(loss=f"{float(loss.detach()):.4f}")
        num_seen = sum(len(targets) for _, targets in epoch_batches)
        record = {}
        for name in names:
            schedulers[name].step()
            start = time.perf_counter()
            metric = evaluate(models[name])
            seconds[name] += time.perf_counter() - start
            record[name] = ModelRecord(losses[name] / num_seen, metric, seconds[name])
        history.epochs.append(record)
        print(format_epoch(epoch, record, metric_name), flush=True)
        compare_epoch(models, record, label=f"epoch {epoch}")
    return history


def format_epoch(epoch: int, record: dict[str, ModelRecord], metric_name: str) -> str:
    """``epoch  3 | circuit: loss 0.1234  accuracy 97.50%  1.2s | plain: ...``."""
    parts = [
        f"{name}: loss {r.loss:.4f}  {metric_name} {format_metric(metric_name, r.metric)}"
        f"  {r.seconds:4.1f}s"
        for name, r in record.items()
    ]
    return f"epoch {epoch:2d} | " + " | ".join(parts)


def format_metric(metric_name: str, value: float) -> str:
    """Accuracies as percentages, anything else (IoU) as a plain fraction."""
    return f"{100 * value:6.2f}%" if "accuracy" in metric_name else f"{value:.4f}"


def compare_epoch(models: dict[str, nn.Module], record: dict[str, ModelRecord], label: str) -> None:
    """Raise ``EquivalenceError`` unless every model matches the first in loss, metric, weights."""
    names = list(models)
    first = names[0]
    for other in names[1:]:
        a, b = record[first], record[other]
        if abs(a.loss - b.loss) > ATOL + RTOL * abs(a.loss) or abs(a.metric - b.metric) > 1e-6:
            raise EquivalenceError(
                f"{label}: {first} and {other} differ: loss {a.loss} vs {b.loss}, "
                f"metric {a.metric} vs {b.metric}."
            )
        diff = check_same_weights(models[first], models[other], label)
        print(f"[check] {label}: {first} and {other} agree; largest weight difference {diff:.2e}")


def plot_history(history: History, path: Path, title: str) -> None:
    """Save loss and metric per epoch for every model, one line style per model."""
    import matplotlib.pyplot as plt

    names = list(history.epochs[0]) if history.epochs else []
    epochs = range(1, len(history.epochs) + 1)
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(9, 3.5))
    styles: list[dict[str, Any]] = [
        {"linestyle": "-", "linewidth": 3, "alpha": 0.5},
        {"linestyle": "--", "marker": "."},
    ]
    for index, name in enumerate(names):
        style = styles[index % len(styles)]
        ax_loss.plot(epochs, [e[name].loss for e in history.epochs], label=name, **style)
        ax_metric.plot(epochs, [e[name].metric for e in history.epochs], label=name, **style)
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log")
    ax_metric.set(xlabel="epoch", ylabel=f"test {history.metric_name}")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"saved {path}")


def save_diagram(
    model: Circuit, out: Path, stem: str, input_shape: Sequence[int] | None = None
) -> list[Path]:
    """Write the model's diagram as ``<stem>.pdf`` and ``<stem>.png`` into ``out``.

    With ``input_shape``, every edge is labelled with the shape of the tensor it carries.
    """
    import matplotlib.pyplot as plt

    paths = [out / f"{stem}.pdf", out / f"{stem}.png"]
    for path in paths:
        figure = model.visualize(save_path=str(path), input_shape=input_shape)
        plt.close(figure)
        print(f"saved {path}")
    return paths


def fail(message: str) -> int:
    """Print an expected mistake (a missing data set, say) to stderr; return the exit code."""
    print(f"error: {message}", file=sys.stderr)
    return 2
