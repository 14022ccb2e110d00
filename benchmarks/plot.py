"""Draw a benchmark report: ratios to hand-written as bars, compile time against repeats as lines.

Usage::

    python benchmarks/plot.py out/benchmarks/results.json [OUTDIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RATIO_FIGURE = "perf_ratios.png"
COMPILE_FIGURE = "perf_compile.png"
COMPILE_FIGURES = {"compile": COMPILE_FIGURE, "compile_transformer": "perf_compile_transformer.png"}


def _ratio_bars(report: dict[str, Any]) -> list[tuple[str, str, float, float | None]]:
    """``(benchmark, row, ratio, target)`` for each row with a ratio, reference rows left out.

    A row carries the target of the check it is the subject of (``Circuit`` rows, mostly).
    The compile benchmark's ratios are growth with depth (at most repeats / at fewest).
    """
    bars = []
    for name, bench in report["benchmarks"].items():
        for label, values in bench["rows"].items():
            if label == bench["reference"] or values.get("ratio") is None:
                continue
            targets = [c["target"] for c in bench["checks"] if c.get("row") == label]
            target = targets[0] if targets else None
            bars.append((name, label, float(values["ratio"]), target))
    return bars


def plot_ratios(report: dict[str, Any], path: Path) -> Path:
    """Horizontal bars: every candidate's ratio to its benchmark's reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = _ratio_bars(report)
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(bars) + 1.6))
    labels = [f"{name}: {label}" for name, label, _, _ in bars]
    ratios = [ratio for _, _, ratio, _ in bars]
    colors = []
    for _, _, ratio, target in bars:
        if target is None:
            colors.append("#b0b0b0")
        else:
            colors.append("#4c9a5b" if ratio <= target else "#c44e52")
    positions = list(range(len(bars)))[::-1]
    ax.barh(positions, ratios, color=colors)
    for position, (_, _, ratio, target) in zip(positions, bars, strict=True):
        ax.annotate(f"{ratio:.3f}×", (ratio, position), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=7)  # fmt: skip
        if target is not None:
            ax.plot([target, target], [position - 0.4, position + 0.4], color="black", lw=1.5)
    ax.axvline(1.0, color="black", lw=0.6, ls="--")
    ax.set_yticks(positions, labels, fontsize=7)
    ax.set_xlabel("ratio to reference: hand-written (compile: fewest repeats); lower is better")
    ax.set_title(
        f"{report['mode']} run, torch {report['machine']['torch']}; black tick = target", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_compile(report: dict[str, Any], path: Path, name: str = "compile") -> Path | None:
    """Lines: cold compile seconds against repeat count, one per compile variant."""
    bench = report["benchmarks"].get(name)
    if bench is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, values in bench["rows"].items():
        cold = values.get("cold_s")
        if not cold:
            continue
        repeats = sorted(int(r) for r in cold)
        style = "-" if label.startswith("Circuit") else "--"
        if "[inference]" in label:
            style = ":"
        ax.plot(repeats, [cold[str(r)] for r in repeats], style, marker="o", label=label)
    block = "residual MLP block" if name == "compile" else "transformer block"
    ax.set_xlabel(f"repeats of the {block}")
    ax.set_ylabel("cold compile time, first forward + backward (s)\n([inference]: forward)")
    ax.set_ylim(bottom=0)
    ax.set_xticks(bench["repeats"])
    ax.legend(fontsize=7)
    torch_version = report["machine"]["torch"]
    ax.set_title(f"Cold compile time against depth (torch {torch_version})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot(report: dict[str, Any], folder: Path) -> list[Path]:
    """Draw both figures into ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [plot_ratios(report, folder / RATIO_FIGURE)]
    for name, figure in COMPILE_FIGURES.items():
        compile_path = plot_compile(report, folder / figure, name)
        if compile_path is not None:
            written.append(compile_path)
    return written


if __name__ == "__main__":
    source = Path(sys.argv[1])
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else source.parent
    for written in plot(json.loads(source.read_text()), target):
        print(f"wrote {written}")
