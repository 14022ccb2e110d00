"""Issue 10's benchmarks: a masked pre-norm encoder (the padding mask a named input) against
the same encoder written by hand, in eager forward, training step and peak memory.

``run.py`` registers these as ``masked_encoder_forward``, ``masked_encoder_train`` and
``masked_encoder_memory``; ``python benchmarks/dataflow.py SPEC`` is the fresh process that
measures memory.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock  # noqa: E402

SIZES = {"width": 64, "heads": 4, "ff": 256, "layers": 6, "batch": 8, "length": 32}
QUICK_SIZES = {"width": 32, "heads": 2, "ff": 64, "layers": 2, "batch": 2, "length": 8}


class Attention(nn.Module):
    """Self-attention with a key-padding mask: the op of a read of the mask."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.attn(x, x, x, key_padding_mask=mask, need_weights=False)[0]


def circuit(width: int, heads: int, ff: int, layers: int, **_: int) -> Circuit:
    return Circuit(
        StartBlock("layer", num_repeats=layers),
        SaveInput("x"),
        nn.LayerNorm(width),
        GetInput("mask", op=Attention(width, heads)),
        GetInput("x"),
        SaveInput("x"),
        nn.LayerNorm(width),
        nn.Linear(width, ff),
        nn.GELU(),
        nn.Linear(ff, width),
        GetInput("x"),
        EndBlock("layer"),
        nn.LayerNorm(width),
        inputs=("mask",),
    )


class HandEncoder(nn.Module):
    """The same encoder as a module with a hand-written forward, built in forward order."""

    def __init__(self, width: int, heads: int, ff: int, layers: int, **_: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm1": nn.LayerNorm(width),
                    "attention": Attention(width, heads),
                    "norm2": nn.LayerNorm(width),
                    "up": nn.Linear(width, ff),
                    "down": nn.Linear(ff, width),
                }
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer["attention"](layer["norm1"](x), mask) + x
            x = layer["down"](nn.functional.gelu(layer["up"](layer["norm2"](x)))) + x
        return self.norm(x)  # type: ignore[no-any-return]


def inputs(batch: int, length: int, width: int, **_: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, length, width, generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    return x, torch.arange(length)[None, :] >= lengths[:, None]


def pair(sizes: dict[str, int]) -> tuple[nn.Module, nn.Module]:
    """The hand-written encoder and its circuit twin, with the same weights (checked)."""
    torch.manual_seed(0)
    hand, twin = HandEncoder(**sizes), circuit(**sizes)
    with torch.no_grad():
        for source, target in zip(hand.parameters(), twin.parameters(), strict=True):
            target.copy_(source)
    x, mask = inputs(**sizes)
    if not torch.equal(hand(x, mask), twin(x, mask)):
        raise AssertionError("the circuit and the hand-written encoder differ")
    return hand, twin


CONTROL = "hand-written, a second instance"


def timing_candidates(sizes: dict[str, int], mode: str) -> dict[str, Callable[[], object]]:
    """What `measure.time_interleaved` times: a forward or a training step of each model.

    `CONTROL` is the hand-written model again, another instance with the same weights: how far
    it lands from the first is how finely this machine can tell two models apart (the same
    kernels run slower or faster depending on where a model's tensors happen to be placed).
    """
    hand, twin = pair(sizes)
    control = HandEncoder(**sizes)
    control.load_state_dict(hand.state_dict())
    x, mask = inputs(**sizes)
    candidates: dict[str, Callable[[], object]] = {}
    for name, model in (("hand-written", hand), ("Circuit", twin), (CONTROL, control)):
        model.train(mode == "train")
        if mode == "train":
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
            candidates[name] = lambda m=model, o=optimizer: _step(m, x, mask, o)
        else:
            candidates[name] = lambda m=model: _forward(m, x, mask)
    return candidates


def _forward(model: nn.Module, x: Tensor, mask: Tensor) -> object:
    with torch.no_grad():
        return model(x, mask)


def _step(model: nn.Module, x: Tensor, mask: Tensor, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad(set_to_none=True)
    model(x, mask).square().mean().backward()
    optimizer.step()


def memory_in_fresh_process(model: str, sizes: dict[str, int], mode: str) -> dict[str, Any]:
    """Peak RSS above the RSS before two steps, measured in a process of its own."""
    spec = json.dumps({"model": model, "sizes": sizes, "mode": mode})
    env = {"MALLOC_MMAP_THRESHOLD_": "65536", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, __file__, spec], capture_output=True, text=True, env=env, timeout=600
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _measure_memory(spec: dict[str, Any]) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import measure

    torch.set_num_threads(1)
    sizes, training = spec["sizes"], spec["mode"] == "train"

    def prepare() -> Callable[[], None]:
        torch.manual_seed(0)
        model = HandEncoder(**sizes) if spec["model"] == "hand" else circuit(**sizes)
        model.train(training)
        x, mask = inputs(**sizes)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        return (
            (lambda: _step(model, x, mask, optimizer))
            if training
            else (lambda: _forward(model, x, mask))
        )  # type: ignore[return-value]

    prepare()()  # one-off costs paid by a throwaway instance
    gc.collect()
    step = prepare()
    gc.collect()
    before = measure._rss_kib("VmRSS")
    measure._reset_peak_rss()
    step()
    step()
    return {"peak_delta_kib": measure._rss_kib("VmHWM") - before}


def memory_rows(sizes: dict[str, int], mode: str, runs: int) -> dict[str, list[float]]:
    """Per model, the peak deltas of `runs` fresh processes, interleaved."""
    figures: dict[str, list[float]] = {"hand-written": [], "Circuit": []}
    for _ in range(runs):
        for name, model in (("hand-written", "hand"), ("Circuit", "circuit")):
            result = memory_in_fresh_process(model, sizes, mode)
            if "error" in result:
                raise RuntimeError(f"memory of {name}: {result['error']}")
            figures[name].append(result["peak_delta_kib"])
    return figures


def saved_for_backward_kib(sizes: dict[str, int]) -> dict[str, float]:
    """Per model, the tensor storage one training forward saves for backward, in KiB.

    Exact, unlike peak RSS: every storage autograd keeps is counted once, by address.
    """
    hand, twin = pair(sizes)
    x, mask = inputs(**sizes)
    figures: dict[str, float] = {}
    for name, model in (("hand-written", hand), ("Circuit", twin)):
        model.train()
        storages: dict[int, int] = {}

        def pack(tensor: Tensor, found: dict[int, int] = storages) -> Tensor:
            storage = tensor.untyped_storage()
            found[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(x, mask)
        figures[name] = sum(storages.values()) / 1024
    return figures


def median(values: list[float]) -> float:
    return statistics.median(values)


if __name__ == "__main__":
    print(json.dumps(_measure_memory(json.loads(sys.argv[1]))))
