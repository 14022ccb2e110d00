"""How things are measured: interleaved timing, peak memory and cold compile time.

Timing runs in the calling process: every candidate is warmed up, then the candidates take
turns, one timed round each, in a rotating order, and each gets the median of its rounds (a
shared machine slows all candidates alike within a round, and the median drops the rounds a
neighbour spoiled).

Peak memory and cold compile time are measured in a fresh process each, started by
``in_fresh_process``, which runs this file as a script (``python measure.py SPEC``) and reads
back one JSON line. A spec may name a folder to put first on ``sys.path``: the old
torch-circuit 0.9.1 has our import name, so it is measured from its own folder.
"""

from __future__ import annotations

import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# glibc returns freed blocks of 64 KiB or more to the system at once, so RSS follows live
# tensors closely and a run repeats to the kilobyte.
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
COMPILE_ENV = {"TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}


# --------------------------------------------------------------------------------------------
# Timing, in this process.


def time_interleaved(
    candidates: Mapping[str, Callable[[], object]],
    rounds: int,
    calls: int = 1,
    warmup: int = 2,
) -> dict[str, list[float]]:
    """Time each candidate in turn, ``rounds`` times; seconds per call of every round.

    Args:
        candidates: name → a function to time.
        rounds: how many timed rounds each candidate gets.
        calls: calls per round (the round's time is divided by it).
        warmup: untimed calls of each candidate first.
    """
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                function = candidates[name]
                start = time.perf_counter()
                for _ in range(calls):
                    function()
                times[name].append((time.perf_counter() - start) / calls)
            gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def summarize(times: Mapping[str, list[float]], reference: str) -> dict[str, dict[str, Any]]:
    """Median, spread and ratio to ``reference``'s median, per candidate.

    ``ratio_paired`` is the median of the per-round ratios (each candidate's round against the
    reference's round of the same index), which cancels slow phases of a shared machine.
    """
    base = statistics.median(times[reference])
    result = {}
    for name, values in times.items():
        median = statistics.median(values)
        paired = [v / r for v, r in zip(values, times[reference], strict=True)]
        result[name] = {
            "median_s": median,
            "min_s": min(values),
            "max_s": max(values),
            "rounds": len(values),
            "ratio": median / base,
            "ratio_paired": statistics.median(paired),
        }
    return result


# --------------------------------------------------------------------------------------------
# Fresh processes.


def in_fresh_process(spec: Mapping[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Run ``spec`` (see ``worker``) in a new Python process and return its JSON result.

    A failure in the process is returned as ``{"error": ...}`` rather than raised, so that
    one unavailable row does not end a benchmark run.
    """
    env = dict(os.environ)
    env.update(MEMORY_ENV if spec["kind"] == "memory" else {})
    env.update(COMPILE_ENV if spec["kind"] == "compile" else {})
    env.setdefault("MPLBACKEND", "Agg")
    command = [sys.executable, str(HERE / "measure.py"), json.dumps(spec)]
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return {"error": f"exit {done.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def _rss_kib(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}; peak RSS needs Linux")
    return int(match.group(1))


def _reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM (the peak) to the current RSS (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")


def _training_step(model: Any, x: Any, optimizer: Any) -> None:
    optimizer.zero_grad(set_to_none=True)
    model(x).float().square().mean().backward()
    optimizer.step()


def _measure_memory(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Peak RSS of two inference forwards or training steps, in this (fresh) process.

    A throwaway instance of the model first runs one step, so that the libraries' one-off
    costs (code pages, thread pools, kernel caches) are paid before measuring. Then the
    measured instance, its input and optimizer are built and the peak is reset to the current
    RSS: ``peak_delta_kib`` is how far two steps in a row raise RSS above it (two, so that
    what a model keeps from one call to the next counts too), and ``peak_kib`` the raw peak
    of the process, ``import torch`` included.
    """
    import models
    import torch

    torch.set_num_threads(1)
    training = spec["mode"] == "train"

    def prepare() -> Callable[[], None]:
        model = models.build(spec["model"], **spec["sizes"])
        x = torch.randn(*spec["input"])
        model.train(training)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3) if training else None

        def step() -> None:
            if optimizer is None:
                with torch.no_grad():
                    model(x)
            else:
                _training_step(model, x, optimizer)

        step.model, step.x, step.optimizer = model, x, optimizer  # type: ignore[attr-defined]
        return step

    torch.manual_seed(1)
    prepare()()
    gc.collect()
    torch.manual_seed(0)
    step = prepare()
    gc.collect()
    before = _rss_kib("VmRSS")
    _reset_peak_rss()
    step()
    step()
    peak = _rss_kib("VmHWM")
    result: dict[str, Any] = {
        "rss_before_kib": before,
        "peak_kib": peak,
        "peak_delta_kib": peak - before,
    }
    if torch.cuda.is_available():
        model, x, optimizer = step.model, step.x, step.optimizer  # type: ignore[attr-defined]
        result.update(_measure_cuda_memory(model, x, optimizer, training))
    return result


def _measure_cuda_memory(model: Any, x: Any, optimizer: Any, training: bool) -> dict[str, Any]:
    """``torch.cuda.max_memory_allocated`` of the same step on the GPU, above what was live."""
    import torch

    model.cuda()
    x = x.cuda()
    if optimizer is not None:
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step() -> None:
        if optimizer is None:
            with torch.no_grad():
                model(x)
        else:
            _training_step(model, x, optimizer)

    step()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return {"cuda_peak_bytes": peak, "cuda_peak_delta_bytes": peak - before}


def _compile_model(model: Any, how: str, backend: str = "inductor") -> Any:
    import torch

    if how == "fullgraph":
        return torch.compile(model, fullgraph=True, backend=backend)
    if how == "module.compile":
        model.compile(backend=backend)
        return model
    if how == "fullgraph-no-reuse":
        return torch.compile(model, fullgraph=True, options={"allow_buffer_reuse": False})
    if how == "unrolled-fullgraph":  # a Circuit as torch-circuit 0.1 compiled it
        return _Unrolled(torch.compile(model, fullgraph=True))
    if how == "each-block":
        for block in model.blocks:
            block.compile(backend=backend)
        return model
    raise ValueError(f"unknown compile mode {how!r}; use fullgraph, module.compile, each-block")


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the C++ compiler): user + system.

    Unlike wall time it hardly moves when other jobs share the machine's cores.
    """
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class _Unrolled:
    """Calls a compiled ``Circuit`` with its regions switched off (every repeat unrolled)."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled

    def __call__(self, x: Any) -> Any:
        from torch_circuit.regions import unrolled

        with unrolled():
            return self.compiled(x)


def _graph_breaks(model: Any, x: Any) -> int:
    import torch

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(x)
    return int(explanation.graph_break_count)


def _measure_compile(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Cold compile time: the first forward and backward after compiling, caches disabled.

    Then the median of ``steps`` training steps (forward, backward, SGD step) of the compiled
    model, and, with ``explain``, the graph-break count from ``torch._dynamo.explain``. With
    ``spec["mode"] == "inference"``: the first ``no_grad`` forward (eval mode), and forwards.
    """
    import models
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    eager = models.build(spec["model"], **spec["sizes"])
    x = torch.randn(*spec["input"])
    compiled = _compile_model(eager, spec["how"], spec.get("backend", "inductor"))
    inference = spec.get("mode") == "inference"
    if inference:
        eager.eval()
    start, cpu = time.perf_counter(), _cpu_seconds()
    if inference:
        _no_grad_forward(compiled, x)
    else:
        compiled(x).float().square().mean().backward()
    cold = time.perf_counter() - start
    cold_cpu = _cpu_seconds() - cpu
    optimizer = torch.optim.SGD(eager.parameters(), lr=1e-3)

    def step() -> object:
        return (
            _no_grad_forward(compiled, x) if inference else _training_step(compiled, x, optimizer)
        )

    times = time_interleaved({"step": step}, rounds=spec["steps"], warmup=2)
    result: dict[str, Any] = {
        "cold_s": cold,
        "cold_cpu_s": cold_cpu,
        "step_s": statistics.median(times["step"]),
    }
    if spec.get("explain"):
        result["graph_breaks"] = _graph_breaks(eager, x)
    return result


def _measure_timing(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Interleaved timing of several models in this process.

    ``spec["candidates"]`` lists ``{"label", "model", "how"}``, the reference first; ``how``
    is ``None`` (eager) or a compile mode (the model is compiled and warmed up first).
    ``spec["mode"]`` is ``"forward"`` (``no_grad``, eval mode) or ``"train"`` (forward,
    backward and SGD step, train mode).
    """
    import models
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(*spec["input"])
    candidates: dict[str, Callable[[], object]] = {}
    for entry in spec["candidates"]:
        eager = models.build(entry["model"], **spec["sizes"])
        eager.train(spec["mode"] == "train")
        model = _compile_model(eager, entry["how"]) if entry.get("how") else eager
        if spec["mode"] == "train":
            optimizer = torch.optim.SGD(eager.parameters(), lr=1e-3)
            candidates[entry["label"]] = lambda m=model, o=optimizer: _training_step(m, x, o)
        else:
            candidates[entry["label"]] = lambda m=model: _no_grad_forward(m, x)
    times = time_interleaved(
        candidates, rounds=spec["rounds"], calls=spec.get("calls", 1), warmup=spec.get("warmup", 2)
    )
    return {"summary": summarize(times, reference=spec["candidates"][0]["label"])}


def _no_grad_forward(model: Any, x: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(x)


def worker(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Measure one thing in this process, as ``spec`` says.

    ``spec["kind"]`` is ``"memory"``, ``"compile"`` or ``"timing"``; ``spec["path"]``, when
    given, is put first on ``sys.path`` before ``torch_circuit`` is imported.
    """
    if spec.get("path"):
        sys.path.insert(0, spec["path"])
    measures = {"memory": _measure_memory, "compile": _measure_compile, "timing": _measure_timing}
    result = measures[spec["kind"]](spec)
    import torch_circuit

    result["torch_circuit"] = getattr(torch_circuit, "__version__", "?")
    return result


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))
