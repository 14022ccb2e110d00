"""Smoke test of the benchmark suite: ``benchmarks/run.py --quick`` runs every benchmark.

Timing targets are not asserted (a shared CI machine cannot hold them); what is asserted is
that every benchmark reports numeric figures and ratios, and that each compares like with
like: the ``Circuit`` computes exactly what the hand-written model computes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "benchmarks" / "run.py"

# One per target of issue 4 (the eager and training targets are measured on two models), and
# issue 10's masked encoder (its mask a named input).
BENCHMARKS = {
    "masked_encoder_forward",
    "masked_encoder_train",
    "masked_encoder_memory",
    "eager_mlp_forward",
    "eager_quickstart_forward",
    "train_step_mlp",
    "train_step_quickstart",
    "memory_inference",
    "memory_train",
    "checkpoint",
    "checkpoint_convbn",
    "compile",
    "compiled_step",
    "compiled_step_compute_bound",
    "build",
}


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUN), *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
        env=env,
        check=False,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    done = _run("--quick", "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), out.parent


def test_quick_run_reports_every_benchmark_with_numeric_ratios(
    quick_report: tuple[dict[str, Any], Path],
) -> None:
    report, _ = quick_report
    assert report["mode"] == "quick"
    assert report["machine"]["torch"] == torch.__version__
    assert set(report["benchmarks"]) == BENCHMARKS
    for name, bench in report["benchmarks"].items():
        assert bench["rows"], name
        for label, values in bench["rows"].items():
            assert "error" not in values, f"{name}/{label}: {values.get('error')}"
            assert _is_number(values["value"]) and values["value"] > 0, f"{name}/{label}"
            assert _is_number(values["ratio"]) and values["ratio"] > 0, f"{name}/{label}"
        assert bench["checks"], name
        for item in bench["checks"]:
            assert _is_number(item["value"]), f"{name}: {item['what']}"
            assert isinstance(item["met"], bool), f"{name}: {item['what']}"


def test_quick_run_compares_like_with_like(quick_report: tuple[dict[str, Any], Path]) -> None:
    report, _ = quick_report
    benchmarks = report["benchmarks"]
    for name in ("eager_mlp_forward", "eager_quickstart_forward", "train_step_mlp"):
        assert benchmarks[name]["max_difference_to_hand"] == 0.0, name
    assert set(benchmarks["checkpoint"]["max_differences"].values()) == {0.0}
    assert (
        benchmarks["compile"]["rows"]["Circuit: torch.compile(fullgraph=True)"]["graph_breaks"] == 0
    )


def test_quick_run_draws_the_figures(quick_report: tuple[dict[str, Any], Path]) -> None:
    _, folder = quick_report
    for figure in ("perf_ratios.png", "perf_compile.png"):
        assert (folder / figure).read_bytes().startswith(b"\x89PNG"), figure


def test_unknown_benchmark_name_is_rejected_with_the_choices(tmp_path: Path) -> None:
    done = _run("--only", "eager,nope", "--out", str(tmp_path / "r.json"))
    assert done.returncode == 2
    assert "unknown benchmark(s) ['eager', 'nope']; choose from" in done.stderr
    assert "'compiled_step'" in done.stderr
    assert not (tmp_path / "r.json").exists()


def test_old_package_that_cannot_be_installed_is_an_unavailable_row(tmp_path: Path) -> None:
    # pip with no index and no local wheels cannot find torch-circuit 0.9.1.
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path)}
    out = tmp_path / "r.json"
    cache = tmp_path / "old"
    args = ("--quick", "--only", "memory_inference", "--old", "--old-cache", str(cache))
    done = _run(*args, "--no-plot", "--out", str(out), env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["old_package"].startswith("pip install torch-circuit==0.9.1 failed")
    rows = report["benchmarks"]["memory_inference"]["rows"]
    assert rows["torch-circuit 0.9.1"]["value"] is None
    assert rows["torch-circuit 0.9.1"]["error"] == report["old_package"]
    assert _is_number(rows["Circuit"]["ratio"])
