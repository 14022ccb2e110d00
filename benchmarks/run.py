"""Issue 4's benchmarks: ``Circuit`` against the same model written by hand, side by side.

Usage::

    python benchmarks/run.py                  # the full run (about 15 minutes on 2 cores)
    python benchmarks/run.py --quick          # every benchmark once, small (CI smoke test)
    python benchmarks/run.py --only compile   # one benchmark (comma-separate several)

Each benchmark measures candidates in one run (hand-written first: the yardstick), prints a
table of medians and ratios, and checks the issue's targets. Results go to ``--out`` as JSON
(with the machine and torch version) and ``plot.py`` draws them beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import measure
import models
import old_package
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
OLD_LABEL = "torch-circuit 0.9.1"


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the full run and ``--quick``."""

    quick: bool
    mlp_repeats: int = 16
    mlp_rounds: int = 31
    mlp_calls: int = 100
    train_calls: int = 30
    quickstart_batch: int = 32
    quickstart_rounds: int = 11
    quickstart_train_rounds: int = 7
    conv_input: tuple[int, ...] = (8, 32, 64, 64)
    memory_runs: int = 2
    compile_repeats: tuple[int, ...] = (2, 8, 32, 64)
    compile_batch: int = 8
    compile_runs: int = 3  # fresh processes per figure for the Circuit rows (median is kept)
    transformer_repeats: tuple[int, ...] = (2, 8, 32)
    transformer_input: tuple[int, ...] = (2, 16, 256)
    transformer_runs: int = 1
    compile_backend: str = "inductor"  # --quick: "aot_eager" (no C++ compiler: seconds)
    compiled_step_rounds: int = 21
    wide_width: int = 512  # the compute-bound compiled step
    wide_batch: int = 256
    wide_repeats: int = 16
    wide_rounds: int = 15
    build_repeats: int = 100
    build_rounds: int = 11


FULL = Sizes(quick=False)
QUICK = Sizes(
    quick=True,
    mlp_repeats=16,
    mlp_rounds=5,
    mlp_calls=20,
    train_calls=10,
    quickstart_batch=4,
    quickstart_rounds=3,
    quickstart_train_rounds=3,
    conv_input=(2, 16, 32, 32),
    memory_runs=1,
    compile_repeats=(1, 2),
    compile_runs=1,
    transformer_repeats=(1, 2),
    compile_backend="aot_eager",
    compiled_step_rounds=5,
    wide_width=128,
    wide_batch=32,
    wide_repeats=2,
    wide_rounds=3,
    build_repeats=20,
    build_rounds=3,
)


class Context:
    """What every benchmark gets: the sizes, and the old package's folder if measured."""

    def __init__(
        self, sizes: Sizes, old_path: Path | None, old_note: str, old_wanted: bool, extra: bool
    ) -> None:
        self.sizes = sizes
        self.old_path = old_path
        self.old_note = old_note
        # Why the old package's rows are missing when it was asked for (its install failed).
        self.old_unavailable = old_note if old_wanted and old_path is None else None
        self.extra = extra


# --------------------------------------------------------------------------------------------
# Result records.


def row(value: float | None, unit: str, ratio: float | None, **more: Any) -> dict[str, Any]:
    """One candidate's figure and its ratio to the benchmark's reference row."""
    return {"value": value, "unit": unit, "ratio": ratio, **more}


def check(
    what: str, value: float | None, target: float, row: str | None = None, at_most: bool = True
) -> dict[str, Any]:
    """One of the issue's targets: ``value`` (of ``row``, if a ratio) against ``target``."""
    met = None if value is None else (value <= target if at_most else value >= target)
    return {"what": what, "row": row, "value": value, "target": target, "at_most": at_most,
            "met": met}  # fmt: skip


def timing_rows(summary: dict[str, dict[str, Any]], **extra: Any) -> dict[str, dict[str, Any]]:
    return {
        name: row(
            s["median_s"],
            "s",
            s["ratio"],
            ratio_paired=s["ratio_paired"],
            min_s=s["min_s"],
            max_s=s["max_s"],
            rounds=s["rounds"],
            **extra,
        )
        for name, s in summary.items()
    }


def unavailable(reason: str) -> dict[str, Any]:
    return row(None, "", None, error=reason)


# --------------------------------------------------------------------------------------------
# 1. Eager time: forward, and a training step.


def _forward(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def call() -> object:
        with torch.no_grad():
            return model(x)

    return call


def _train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def call() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(x).float().square().mean().backward()
        optimizer.step()

    return call


def _eager(
    ctx: Context,
    family: str,
    sizes: dict[str, int],
    shape: tuple[int, ...],
    mode: str,
    rounds: int,
    calls: int,
) -> dict[str, Any]:
    """Hand-written, ``Circuit`` and ``nn.Sequential`` in this process; 0.9.1 in its own."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(*shape)
    hand = models.build(f"{family}/hand", **sizes)
    built = {
        "hand-written": hand,
        "Circuit": models.build(f"{family}/circuit", **sizes),
        "nn.Sequential": models.build(f"{family}/sequential", **sizes),
    }
    difference = max(models.check_equivalent(hand, m, x) for m in built.values())
    make = _forward if mode == "forward" else _train_step
    for model in built.values():
        model.train(mode == "train")
    candidates = {name: make(model, x) for name, model in built.items()}
    times = measure.time_interleaved(candidates, rounds=rounds, calls=calls)
    rows = timing_rows(measure.summarize(times, reference="hand-written"))
    if ctx.old_path is not None:
        rows[OLD_LABEL] = _old_timing(ctx, family, sizes, shape, mode, rounds, calls)
    elif ctx.old_unavailable is not None:
        rows[OLD_LABEL] = unavailable(ctx.old_unavailable)
    what = "no_grad forward, eval mode" if mode == "forward" else "forward, backward, SGD step"
    return {
        "setup": f"{what}; input {list(shape)}; {sizes}; 1 thread; "
        f"{rounds} interleaved rounds of {calls} calls",
        "reference": "hand-written",
        "max_difference_to_hand": difference,
        "rows": rows,
        "checks": [
            check("Circuit / hand-written (median)", rows["Circuit"]["ratio"], 1.02, "Circuit"),
        ],
    }


def _old_timing(
    ctx: Context,
    family: str,
    sizes: dict[str, int],
    shape: tuple[int, ...],
    mode: str,
    rounds: int,
    calls: int,
) -> dict[str, Any]:
    """The old package against hand-written, interleaved in a process of their own."""
    spec = {
        "kind": "timing",
        "path": str(ctx.old_path),
        "candidates": [
            {"label": "hand-written", "model": f"{family}/hand"},
            {"label": OLD_LABEL, "model": f"{family}/circuit"},
        ],
        "sizes": sizes,
        "input": list(shape),
        "mode": mode,
        "rounds": rounds,
        "calls": calls,
    }
    result = measure.in_fresh_process(spec)
    if "error" in result:
        return unavailable(result["error"])
    old = result["summary"][OLD_LABEL]
    hand = result["summary"]["hand-written"]
    return row(
        old["median_s"],
        "s",
        old["ratio"],
        ratio_paired=old["ratio_paired"],
        hand_median_s=hand["median_s"],
        note="timed against hand-written in its own process; repeats share weights in 0.9.1",
    )


def bench_eager_mlp_forward(ctx: Context) -> dict[str, Any]:
    s = ctx.sizes
    return _eager(
        ctx, "mlp", {"width": 64, "repeats": s.mlp_repeats}, (1, 64), "forward",
        s.mlp_rounds, s.mlp_calls,
    )  # fmt: skip


def bench_eager_quickstart_forward(ctx: Context) -> dict[str, Any]:
    s = ctx.sizes
    shape = (s.quickstart_batch, 3, 32, 32)
    return _eager(ctx, "quickstart", {}, shape, "forward", s.quickstart_rounds, 1)


def bench_train_step_mlp(ctx: Context) -> dict[str, Any]:
    s = ctx.sizes
    return _eager(
        ctx, "mlp", {"width": 64, "repeats": s.mlp_repeats}, (1, 64), "train",
        s.mlp_rounds, s.train_calls,
    )  # fmt: skip


def bench_train_step_quickstart(ctx: Context) -> dict[str, Any]:
    s = ctx.sizes
    shape = (s.quickstart_batch, 3, 32, 32)
    return _eager(ctx, "quickstart", {}, shape, "train", s.quickstart_train_rounds, 1)


# --------------------------------------------------------------------------------------------
# 2. Peak memory, 8 residual conv blocks; 4. checkpointing, 16 blocks.


def _memory_rows(
    ctx: Context,
    candidates: dict[str, tuple[str, str | None]],
    sizes: dict[str, int],
    mode: str,
) -> dict[str, dict[str, Any]]:
    """Peak RSS above the pre-step RSS, per candidate, each run in a fresh process."""
    shape = list(ctx.sizes.conv_input)
    figures: dict[str, list[dict[str, Any]]] = {name: [] for name in candidates}
    for _ in range(ctx.sizes.memory_runs):  # interleaved, like the timings
        for name, (model, path) in candidates.items():
            spec = {"kind": "memory", "model": model, "sizes": sizes, "input": shape, "mode": mode}
            if path is not None:
                spec["path"] = path
            figures[name].append(measure.in_fresh_process(spec))
    reference = next(iter(candidates))
    rows: dict[str, dict[str, Any]] = {}
    base: float | None = None
    for name, runs in figures.items():
        errors = [r["error"] for r in runs if "error" in r]
        if errors:
            rows[name] = unavailable(errors[0])
            continue
        delta = statistics.median(r["peak_delta_kib"] for r in runs)
        if name == reference:
            base = delta
        more: dict[str, Any] = {
            "runs_kib": [r["peak_delta_kib"] for r in runs],
            "raw_peak_kib": statistics.median(r["peak_kib"] for r in runs),
        }
        if "cuda_peak_delta_bytes" in runs[0]:
            more["cuda_peak_delta_bytes"] = statistics.median(
                r["cuda_peak_delta_bytes"] for r in runs
            )
        rows[name] = row(delta, "KiB", None if base is None else delta / base, **more)
    cuda_base = rows[reference].get("cuda_peak_delta_bytes")
    for values in rows.values():
        if cuda_base and "cuda_peak_delta_bytes" in values:
            values["cuda_ratio"] = values["cuda_peak_delta_bytes"] / cuda_base
    return rows


def _memory(ctx: Context, mode: str) -> dict[str, Any]:
    old = str(ctx.old_path) if ctx.old_path is not None else None
    candidates: dict[str, tuple[str, str | None]] = {
        "hand-written": ("conv/hand", None),
        "Circuit": ("conv/circuit", None),
    }
    if not ctx.sizes.quick:
        candidates["nn.Sequential"] = ("conv/sequential", None)
    if old is not None:
        candidates[OLD_LABEL] = ("conv/circuit", old)
    rows = _memory_rows(ctx, candidates, {"channels": ctx.sizes.conv_input[1], "repeats": 8}, mode)
    if ctx.old_unavailable is not None:
        rows[OLD_LABEL] = unavailable(ctx.old_unavailable)
    what = "no_grad forward, eval mode" if mode == "inference" else "forward, backward, SGD step"
    checks = [
        check("Circuit / hand-written (peak RSS above RSS before the model runs)",
              rows["Circuit"]["ratio"], 1.02, "Circuit"),
    ]  # fmt: skip
    if "cuda_ratio" in rows["Circuit"]:
        checks.append(
            check("Circuit / hand-written (cuda max_memory_allocated)",
                  rows["Circuit"]["cuda_ratio"], 1.02)
        )  # fmt: skip
    return {
        "setup": f"{what}; 8 residual conv blocks; input {list(ctx.sizes.conv_input)}; fresh "
        f"process per figure, MALLOC_MMAP_THRESHOLD_=65536; value = peak RSS (VmHWM) over "
        "two steps minus RSS before them (after a throwaway instance ran one); median of "
        f"{ctx.sizes.memory_runs} process(es)",
        "reference": "hand-written",
        "rows": rows,
        "checks": checks,
    }


def bench_memory_inference(ctx: Context) -> dict[str, Any]:
    return _memory(ctx, "inference")


def bench_memory_train(ctx: Context) -> dict[str, Any]:
    return _memory(ctx, "train")


def _checkpoint_gradients(family: str, channels: int, shape: tuple[int, ...]) -> dict[str, float]:
    """Largest output and gradient differences, checkpointed against not, same weights."""
    torch.manual_seed(0)
    x = torch.randn(*shape)

    def build(variant: str) -> nn.Module:
        return models.build(f"{family}/{variant}", channels=channels, repeats=16)

    differences = {
        "Circuit checkpoint=True vs Circuit": models.check_equivalent(
            build("circuit"), build("circuit-checkpoint"), x
        ),
        "Circuit checkpoint=True vs hand-written": models.check_equivalent(
            build("hand"), build("circuit-checkpoint"), x
        ),
    }
    if family == "conv":
        differences["Circuit checkpoint=2 vs Circuit"] = models.check_equivalent(
            build("circuit"), build("circuit-checkpoint-pairs"), x
        )
    return differences


def _checkpoint(ctx: Context, family: str, block: str) -> dict[str, Any]:
    candidates: dict[str, tuple[str, str | None]] = {
        "Circuit": (f"{family}/circuit", None),
        "Circuit checkpoint=True": (f"{family}/circuit-checkpoint", None),
    }
    if family == "conv":
        candidates["Circuit checkpoint=2"] = ("conv/circuit-checkpoint-pairs", None)
    if not ctx.sizes.quick:
        candidates["hand-written"] = (f"{family}/hand", None)
        candidates["hand-written, checkpoint per block"] = (f"{family}/hand-checkpoint", None)
        if family == "conv":
            candidates["hand-written, checkpoint per 2 blocks"] = (
                "conv/hand-checkpoint-pairs",
                None,
            )
    channels = ctx.sizes.conv_input[1]
    rows = _memory_rows(ctx, candidates, {"channels": channels, "repeats": 16}, "train")
    differences = _checkpoint_gradients(family, channels, (2, channels, 16, 16))
    checks = [
        check("Circuit checkpoint=True / Circuit (training peak)",
              rows["Circuit checkpoint=True"]["ratio"], 0.5, "Circuit checkpoint=True"),
        check("gradients: largest absolute difference to the unchecked Circuit",
              differences["Circuit checkpoint=True vs Circuit"], 0.0),
    ]  # fmt: skip
    if "Circuit checkpoint=2" in rows:
        checks += [
            check("Circuit checkpoint=2 / Circuit (training peak)",
                  rows["Circuit checkpoint=2"]["ratio"], 0.5, "Circuit checkpoint=2"),
            check("gradients, checkpoint=2: largest absolute difference to the unchecked Circuit",
                  differences["Circuit checkpoint=2 vs Circuit"], 0.0),
        ]  # fmt: skip
    return {
        "setup": f"forward, backward, SGD step; 16 residual {block} blocks; input "
        f"{list(ctx.sizes.conv_input)}; peak RSS over two steps above RSS before them, fresh "
        "process each; gradients compared on input [2, C, 16, 16] with copied weights",
        "reference": "Circuit",
        "max_differences": differences,
        "rows": rows,
        "checks": checks,
    }


def bench_checkpoint(ctx: Context) -> dict[str, Any]:
    return _checkpoint(ctx, "conv", "conv (conv-ReLU-conv-add-ReLU)")


def bench_checkpoint_convbn(ctx: Context) -> dict[str, Any]:
    return _checkpoint(ctx, "convbn", "conv-BN (the Quick Start's block)")


# --------------------------------------------------------------------------------------------
# 3. Cold compile time against repeat count; compiled step time.

HAND_UNROLLED = "hand-written, unrolled: torch.compile(fullgraph=True)"
HAND_LOOP = "hand-written: torch.compile(fullgraph=True)"
CIRCUIT_FULLGRAPH = "Circuit: torch.compile(fullgraph=True)"
CIRCUIT_REGIONAL = "Circuit: model.compile()"
CIRCUIT_UNROLLED = "Circuit, regions off: torch.compile(fullgraph=True)"
EACH_BLOCK = "hand-written, each block .compile()"
NESTED = "hand-written, nested_compile_region: torch.compile(fullgraph=True)"
INFERENCE = " [inference]"
NO_REUSE = "hand-written, unrolled: torch.compile(options={'allow_buffer_reuse': False})"
TARGET_VARIANTS = (CIRCUIT_FULLGRAPH, CIRCUIT_REGIONAL)


@dataclass(frozen=True)
class Variant:
    """One row of a compile benchmark: a model, how it is compiled, what a process measures."""

    model: str
    how: str
    mode: str = "train"
    extra: bool = False  # only with --extra (the default of a full run)


def _compile_variants(family: str) -> dict[str, Variant]:
    hand = "mlp/hand-unrolled" if family == "mlp" else f"{family}/hand"
    variants = {
        HAND_UNROLLED if family == "mlp" else HAND_LOOP: Variant(hand, "fullgraph"),
        CIRCUIT_FULLGRAPH: Variant(f"{family}/circuit", "fullgraph"),
        CIRCUIT_REGIONAL: Variant(f"{family}/circuit", "module.compile"),
    }
    if family == "mlp":  # the hand-written recipes, for comparison (not for the transformer:
        # each cold compile of it takes a minute here)
        variants[EACH_BLOCK] = Variant(f"{family}/hand-regional", "each-block", extra=True)
    if family == "mlp":
        variants[NESTED] = Variant("mlp/hand-nested-region", "fullgraph", extra=True)
        variants[HAND_UNROLLED + INFERENCE] = Variant(hand, "fullgraph", "inference")
        variants[CIRCUIT_FULLGRAPH + INFERENCE] = Variant("mlp/circuit", "fullgraph", "inference")
    return variants


def _compile_growth(
    ctx: Context,
    family: str,
    width: int,
    shape: list[int],
    repeats: tuple[int, ...],
    circuit_runs: int,
) -> dict[str, Any]:
    """Cold compile time of every variant at every repeat count, fresh processes, interleaved.

    Each round visits every variant and size once; the Circuit rows get `compile_runs`
    rounds and the others one. A figure is the median of its processes.
    """
    variants = {
        name: v for name, v in _compile_variants(family).items() if ctx.extra or not v.extra
    }
    if ctx.sizes.quick:
        variants = {name: variants[name] for name in (CIRCUIT_FULLGRAPH, CIRCUIT_REGIONAL)}
    runs = {name: circuit_runs if name in TARGET_VARIANTS else 1 for name in variants}
    figures: dict[str, dict[int, list[dict[str, Any]]]] = {
        name: {r: [] for r in repeats} for name in variants
    }
    for run in range(max(runs.values())):
        for name, v in variants.items():
            if run >= runs[name]:
                continue
            for count in repeats:
                spec = {
                    "kind": "compile", "model": v.model, "how": v.how, "mode": v.mode,
                    "backend": ctx.sizes.compile_backend,
                    "sizes": {"width": width, "repeats": count}, "input": shape, "steps": 5,
                    "explain": v.how == "fullgraph" and v.model.endswith("circuit") and run == 0,
                }  # fmt: skip
                figures[name][count].append(measure.in_fresh_process(spec))
    small, large = repeats[0], repeats[-1]
    rows: dict[str, dict[str, Any]] = {}
    for name, by_repeats in figures.items():
        errors = [f["error"] for fs in by_repeats.values() for f in fs if "error" in f]
        if errors:
            rows[name] = unavailable(errors[0])
            continue
        cold = {str(r): statistics.median(f["cold_s"] for f in fs) for r, fs in by_repeats.items()}
        cpu = {
            str(r): statistics.median(f["cold_cpu_s"] for f in fs) for r, fs in by_repeats.items()
        }
        more: dict[str, Any] = {
            "cold_s": cold,
            "cold_cpu_s": cpu,
            "cpu_ratio": cpu[str(large)] / cpu[str(small)],
            "cold_runs_s": {str(r): [f["cold_s"] for f in fs] for r, fs in by_repeats.items()},
            "step_s": {str(r): fs[0]["step_s"] for r, fs in by_repeats.items()},
        }
        breaks = [
            f["graph_breaks"] for fs in by_repeats.values() for f in fs if "graph_breaks" in f
        ]
        if breaks:
            more["graph_breaks"] = max(breaks)
        rows[name] = row(cold[str(large)], "s", cold[str(large)] / cold[str(small)], **more)
    hand = rows.get(HAND_UNROLLED if family == "mlp" else HAND_LOOP, {})
    growth = f"cold compile at {large} / at {small} repeats"
    checks = []
    for name in TARGET_VARIANTS:
        values = rows.get(name, {})
        checks.append(check(f"{name}: {growth}", values.get("ratio"), 1.5, name))
        if hand.get("value") and values.get("value"):
            checks.append(
                check(f"{name}: cold compile at {large} / hand-written's at {large}",
                      values["value"] / hand["value"], 0.5)
            )  # fmt: skip
    checks.append(
        check(f"{CIRCUIT_FULLGRAPH}: graph breaks (torch._dynamo.explain)",
              rows.get(CIRCUIT_FULLGRAPH, {}).get("graph_breaks"), 0)
    )  # fmt: skip
    what = "residual MLP" if family == "mlp" else "pre-norm transformer blocks (attention + MLP)"
    return {
        "setup": f"{what}, width {width}, input {shape}; first forward and backward after "
        "compiling ([inference]: first no_grad forward, eval mode), fresh process, "
        "TORCHINDUCTOR_FORCE_DISABLE_CACHES=1; value = cold seconds at "
        f"{large} repeats, ratio = at {large} / at {small} repeats; Circuit rows: median of "
        f"{circuit_runs} processes, others: 1; backend {ctx.sizes.compile_backend}",
        "reference": f"the same model at {small} repeats",
        "repeats": list(repeats),
        "rows": rows,
        "checks": checks,
    }


def bench_compile(ctx: Context) -> dict[str, Any]:
    s = ctx.sizes
    return _compile_growth(ctx, "mlp", 64, [s.compile_batch, 64], s.compile_repeats, s.compile_runs)


def bench_compile_transformer(ctx: Context) -> dict[str, Any]:
    s = ctx.sizes
    return _compile_growth(
        ctx, "transformer", 256, list(s.transformer_input), s.transformer_repeats,
        s.transformer_runs,
    )  # fmt: skip


def bench_compiled_step(ctx: Context) -> dict[str, Any]:
    return _compiled_step(
        ctx,
        64,
        ctx.sizes.compile_repeats[-1],
        ctx.sizes.compile_batch,
        ctx.sizes.compiled_step_rounds,
        20,
    )


def bench_compiled_step_compute_bound(ctx: Context) -> dict[str, Any]:
    s = ctx.sizes
    return _compiled_step(ctx, s.wide_width, s.wide_repeats, s.wide_batch, s.wide_rounds, 5)


def _compiled_step(
    ctx: Context, width: int, repeats: int, batch: int, rounds: int, calls: int
) -> dict[str, Any]:
    spec = {
        "kind": "timing",
        "candidates": [
            {"label": HAND_UNROLLED, "model": "mlp/hand-unrolled", "how": "fullgraph"},
            {"label": CIRCUIT_FULLGRAPH, "model": "mlp/circuit", "how": "fullgraph"},
            {"label": CIRCUIT_REGIONAL, "model": "mlp/circuit", "how": "module.compile"},
        ],
        "sizes": {"width": width, "repeats": repeats},
        "input": [batch, width],
        "mode": "train",
        "rounds": rounds,
        "calls": calls,
        "warmup": 3,
    }  # fmt: skip
    if ctx.extra:
        spec["candidates"] += [
            {"label": EACH_BLOCK, "model": "mlp/hand-regional", "how": "each-block"},
            {"label": NO_REUSE, "model": "mlp/hand-unrolled", "how": "fullgraph-no-reuse"},
        ]
    result = measure.in_fresh_process(spec)
    if "error" in result:
        rows = {name["label"]: unavailable(result["error"]) for name in spec["candidates"]}
    else:
        rows = timing_rows(result["summary"])
    return {
        "setup": f"residual MLP, width {width}, {repeats} repeats, input [{batch}, {width}]; "
        "compiled training step (forward, backward, eager SGD step), 1 thread, one process, "
        f"{rounds} interleaved rounds of {calls} steps",
        "reference": HAND_UNROLLED,
        "rows": rows,
        "checks": [
            check("Circuit torch.compile(fullgraph=True) / unrolled hand-written compile",
                  rows[CIRCUIT_FULLGRAPH]["ratio"], 1.05, CIRCUIT_FULLGRAPH),
            check("Circuit model.compile() / unrolled hand-written compile",
                  rows[CIRCUIT_REGIONAL]["ratio"], 1.05, CIRCUIT_REGIONAL),
        ],
    }  # fmt: skip


# --------------------------------------------------------------------------------------------
# 5. Construction.


def bench_build(ctx: Context) -> dict[str, Any]:
    repeats = ctx.sizes.build_repeats
    torch.set_num_threads(1)
    candidates = {
        "hand-written": lambda: models.build("deep/hand", width=64, repeats=repeats),
        "Circuit": lambda: models.build("deep/circuit", width=64, repeats=repeats),
    }
    times = measure.time_interleaved(candidates, rounds=ctx.sizes.build_rounds, warmup=1)
    rows = timing_rows(measure.summarize(times, reference="hand-written"))
    return {
        "setup": f"{repeats} repeats of a 10-layer block (5 × Linear(64, 64) + ReLU), parameter "
        f"initialisation included, {ctx.sizes.build_rounds} interleaved rounds",
        "reference": "hand-written",
        "rows": rows,
        "checks": [
            check("Circuit / hand-written build time", rows["Circuit"]["ratio"], 1.5, "Circuit")
        ],
    }


# --------------------------------------------------------------------------------------------
# 6. Beyond one tensor: a masked encoder, the mask a named input (issue 10).


def _masked_encoder_timing(ctx: Context, mode: str) -> dict[str, Any]:
    import dataflow

    torch.set_num_threads(1)
    sizes = dataflow.QUICK_SIZES if ctx.sizes.quick else dataflow.SIZES
    rounds, calls = (3, 2) if ctx.sizes.quick else (31, 10 if mode == "train" else 20)
    candidates = dataflow.timing_candidates(sizes, mode)
    times = measure.time_interleaved(candidates, rounds=rounds, calls=calls)
    rows = timing_rows(measure.summarize(times, reference="hand-written"))
    what = "no_grad forward, eval mode" if mode == "forward" else "forward, backward, SGD step"
    return {
        "setup": f"{what}; pre-norm encoder, key-padding mask as a named input; {sizes}; "
        f"1 thread; {rounds} interleaved rounds of {calls} calls",
        "reference": "hand-written",
        "rows": rows,
        "checks": [
            check("Circuit / hand-written (median)", rows["Circuit"]["ratio"], 1.02, "Circuit")
        ],
    }


def bench_masked_encoder_forward(ctx: Context) -> dict[str, Any]:
    return _masked_encoder_timing(ctx, "forward")


def bench_masked_encoder_train(ctx: Context) -> dict[str, Any]:
    return _masked_encoder_timing(ctx, "train")


def bench_masked_encoder_memory(ctx: Context) -> dict[str, Any]:
    import dataflow

    # The full sizes even in a quick run: the quick model's tensors are a few KiB, which malloc
    # serves from pages the process already holds, so its peak RSS often does not move at all.
    sizes = dataflow.SIZES
    runs = ctx.sizes.memory_runs
    rows: dict[str, dict[str, Any]] = {}
    checks = []
    for mode in ("inference", "train"):
        figures = dataflow.memory_rows(sizes, mode, runs)
        base = dataflow.median(figures["hand-written"])
        for name, values in figures.items():
            value = dataflow.median(values)
            rows[f"{name}, {mode}"] = row(value, "KiB", value / base, runs_kib=values)
        checks.append(
            check(
                f"Circuit / hand-written, {mode} (peak RSS above RSS before the model runs)",
                rows[f"Circuit, {mode}"]["ratio"],
                1.02,
                f"Circuit, {mode}",
            )
        )
    saved = dataflow.saved_for_backward_kib(sizes)
    for name, value in saved.items():
        rows[f"{name}, saved for backward"] = row(value, "KiB", value / saved["hand-written"])
    checks.append(
        check(
            "Circuit / hand-written, tensors saved for backward (exact)",
            rows["Circuit, saved for backward"]["ratio"],
            1.02,
            "Circuit, saved for backward",
        )
    )
    return {
        "setup": f"pre-norm encoder, mask a named input; {sizes}; peak RSS: fresh process per "
        f"figure, MALLOC_MMAP_THRESHOLD_=65536, median of {runs} process(es); saved for "
        "backward: the storages autograd keeps in one training forward, counted once each",
        "reference": "hand-written, inference",
        "rows": rows,
        "checks": checks,
    }


BENCHMARKS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "eager_mlp_forward": bench_eager_mlp_forward,
    "eager_quickstart_forward": bench_eager_quickstart_forward,
    "train_step_mlp": bench_train_step_mlp,
    "train_step_quickstart": bench_train_step_quickstart,
    "memory_inference": bench_memory_inference,
    "memory_train": bench_memory_train,
    "checkpoint": bench_checkpoint,
    "checkpoint_convbn": bench_checkpoint_convbn,
    "compile": bench_compile,
    "compile_transformer": bench_compile_transformer,
    "compiled_step": bench_compiled_step,
    "compiled_step_compute_bound": bench_compiled_step_compute_bound,
    "build": bench_build,
    "masked_encoder_forward": bench_masked_encoder_forward,
    "masked_encoder_train": bench_masked_encoder_train,
    "masked_encoder_memory": bench_masked_encoder_memory,
}


# --------------------------------------------------------------------------------------------
# Report.


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = list(os.getloadavg())
    return info


def _format_value(values: dict[str, Any]) -> str:
    if values.get("value") is None:
        return "unavailable"
    value, unit = values["value"], values["unit"]
    if unit == "s":
        return f"{value * 1e3:.3f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "KiB":
        return f"{value / 1024:.1f} MiB"
    return f"{value} {unit}"


def print_benchmark(name: str, result: dict[str, Any]) -> None:
    print(f"\n== {name} ({result['seconds']:.0f} s)\n   {result['setup']}")
    for label, values in result["rows"].items():
        ratio = values.get("ratio")
        ratio_text = "" if ratio is None else f"{ratio:7.3f}×"
        extra = values.get("error") or ""
        if "cold_s" in values:
            extra = "cold " + ", ".join(f"{r}: {s:.1f} s" for r, s in values["cold_s"].items())
            if "cpu_ratio" in values:
                extra += f"; CPU-time ratio {values['cpu_ratio']:.3f}"
            if "graph_breaks" in values:
                extra += f"; graph breaks {values['graph_breaks']}"
        print(f"   {label:<64} {_format_value(values):>13} {ratio_text:>9}  {extra}")
    for item in result["checks"]:
        value = item["value"]
        text = "n/a" if value is None else f"{value:.4g}"
        verdict = {True: "met", False: "MISSED", None: "not measured"}[item["met"]]
        sign = "≤" if item["at_most"] else "≥"
        print(f"   target: {item['what']}: {text} {sign} {item['target']}  → {verdict}")


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables, for docs/performance.md."""
    lines = [
        f"Command: `{report['command']}` ({report['mode']} run, {report['seconds']:.0f} s, "
        f"started {report['started']})",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cpus']} CPUs, "
        f"{report['machine']['platform']}; Python {report['machine']['python']}, torch "
        f"{report['machine']['torch']}; GPU: {report['machine']['cuda'] or 'none'}; old "
        f"package: {report['old_package']}",
    ]
    lines += ["", "| benchmark | target | measured | |", "|---|---|---:|---|"]
    for name, bench in report["benchmarks"].items():
        for item in bench["checks"]:
            value = "n/a" if item["value"] is None else f"{item['value']:.4g}"
            sign = "≤" if item["at_most"] else "≥"
            verdict = {True: "met", False: "**missed**", None: "not measured"}[item["met"]]
            what = item["what"].replace("|", "\\|")  # a pipe would end the table cell
            lines.append(f"| {name} | {what} {sign} {item['target']} | {value} | {verdict} |")
    for name, bench in report["benchmarks"].items():
        lines += ["", f"### {name}", "", bench["setup"], "", "| candidate | value | ratio | note |"]
        lines.append("|---|---:|---:|---|")
        for label, values in bench["rows"].items():
            ratio = values.get("ratio")
            note = values.get("error") or values.get("note") or ""
            if "cold_s" in values:
                note = "cold " + ", ".join(
                    f"{r} repeats: {t:.1f} s" for r, t in values["cold_s"].items()
                )
                if "cold_cpu_s" in values:
                    note += (
                        "; CPU time "
                        + ", ".join(f"{t:.1f}" for t in values["cold_cpu_s"].values())
                        + f" s (ratio {values['cpu_ratio']:.3f})"
                    )
                if "graph_breaks" in values:
                    note += f"; graph breaks: {values['graph_breaks']}"
            if "raw_peak_kib" in values:
                runs = ", ".join(f"{kib / 1024:.2f}" for kib in values["runs_kib"])
                note = (note + "; " if note else "") + (
                    f"runs: {runs} MiB; raw process peak {values['raw_peak_kib'] / 1024:.0f} MiB"
                )
            if "ratio_paired" in values:
                note = (note + "; " if note else "") + f"paired ratio {values['ratio_paired']:.3f}"
            ratio_text = "" if ratio is None else f"{ratio:.3f}×"
            lines.append(f"| {label} | {_format_value(values)} | {ratio_text} | {note} |")
        lines.append("")
        for item in bench["checks"]:
            value = item["value"]
            text = "n/a" if value is None else f"{value:.4g}"
            verdict = {True: "met", False: "**missed**", None: "not measured"}[item["met"]]
            sign = "≤" if item["at_most"] else "≥"
            lines.append(f"- target: {item['what']}: {text} {sign} {item['target']}: {verdict}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer rounds")
    parser.add_argument("--only", help="comma-separated benchmark names: " + ", ".join(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=REPO / "out" / "benchmarks" / "results.json")
    parser.add_argument(
        "--old",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure torch-circuit 0.9.1 too (default: yes, but not with --quick)",
    )
    parser.add_argument(
        "--old-cache",
        type=Path,
        default=old_package.DEFAULT_CACHE,
        help="the folder torch-circuit 0.9.1 is installed into (default: %(default)s)",
    )
    parser.add_argument(
        "--extra",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also compile the hand-written recipes (nested region, each block); "
        "default: yes, but not with --quick",
    )
    parser.add_argument("--no-plot", action="store_true", help="write the JSON only")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: print, tabulate and plot a saved results file",
    )
    args = parser.parse_args(argv)  # fmt: skip
    if args.render is not None:
        return render(json.loads(args.render.read_text()), args.render, plot_too=not args.no_plot)

    names = list(BENCHMARKS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    sizes = QUICK if args.quick else FULL
    old_path, old_note = None, "not measured (--quick or --no-old)"
    old_wanted = args.old if args.old is not None else not args.quick
    if old_wanted:
        old_path, old_note = old_package.install_old_package(args.old_cache)
    extra = args.extra if args.extra is not None else not args.quick
    ctx = Context(sizes, old_path, old_note, old_wanted, extra)
    command = "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    report: dict[str, Any] = {
        "command": command.strip(),
        "mode": "quick" if args.quick else "full",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "old_package": old_note,
        "benchmarks": {},
    }
    print(f"{report['command']}\n{json.dumps(report['machine'])}\nold package: {old_note}")
    start = time.perf_counter()
    for name in names:
        began = time.perf_counter()
        result = BENCHMARKS[name](ctx)
        result["seconds"] = time.perf_counter() - began
        report["benchmarks"][name] = result
        print_benchmark(name, result)
    report["seconds"] = time.perf_counter() - start
    if hasattr(os, "getloadavg"):
        report["machine"]["load_average_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out} ({report['seconds']:.0f} s)")
    return render(report, args.out, plot_too=not args.no_plot, echo=False)


def render(report: dict[str, Any], out: Path, plot_too: bool = True, echo: bool = True) -> int:
    """Write ``out``'s Markdown table (``.md`` beside it) and figures; print the tables."""
    if echo:
        for name, result in report["benchmarks"].items():
            print_benchmark(name, result)
    out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {out.with_suffix('.md')}")
    if plot_too:
        import plot

        for path in plot.plot(report, out.parent):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
