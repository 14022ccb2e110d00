"""How the time to write a diagram grows with the model: DOT, Mermaid and the layout.

Usage::

    python benchmarks/text_diagrams.py            # 2,000 to 16,000 layers, 3 rounds each
    python benchmarks/text_diagrams.py --quick    # 250 to 2,000 layers, 1 round (a smoke test)

Each model is written at four sizes, each double the last; the table gives the median CPU
time, the time per node, and the growth from the smallest size to the largest against the growth
in size (8x): a ratio near 8 is linear time, 64 would be quadratic. Three models:

* **chain**: `Circuit(*[nn.ReLU() for _ in range(n)])`, the reproducer of issue 14;
* **residual**: `n / 3` residual units `SaveInput("r"), nn.ReLU(), GetInput("r")`, many
  short skips;
* **nested**: `n / 2` saves, then their reads in reverse order (a U-Net of `n / 2` levels):
  every skip is live across the middle, the worst case for lane levels.

The layout (`layout_circuit`, the positions every drawn diagram and the HTML page use) is
measured from 600 to 4,800 nodes, as a drawing is refused past `view.MAX_DRAWN` (5,000):
wrapped into columns as by default (the column height found by a search over the column
count), except the nested model, in one column (wrapped, each of its skips would cross every
column and be drawn once per column: the drawing grows faster than the model, whatever the
algorithm).
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from torch import nn

from torch_circuit import Circuit, GetInput, SaveInput
from torch_circuit.diagram.layout import layout_circuit


def chain(size: int) -> Circuit:
    return Circuit(*[nn.ReLU() for _ in range(size)])


def residual(size: int) -> Circuit:
    layers: list[Any] = []
    for _ in range(size // 3):
        layers += [SaveInput("r"), nn.ReLU(), GetInput("r")]
    return Circuit(*layers)


def nested(size: int) -> Circuit:
    levels = size // 2
    saves = [SaveInput(f"s{level}") for level in range(levels)]
    reads = [GetInput(f"s{level}") for level in reversed(range(levels))]
    return Circuit(*saves, *reads)


MODELS: dict[str, Callable[[int], Circuit]] = {
    "chain": chain,
    "residual": residual,
    "nested": nested,
}

WRITERS: dict[str, Callable[[Circuit], object]] = {
    "to_dot": lambda model: model.to_dot(),
    "to_mermaid": lambda model: model.to_mermaid(),
    "layout": lambda model: layout_circuit(model),
}

ONE_COLUMN = {"nested"}
"""Models laid out in one column: wrapped, every skip of the nested model crosses every
column, so the drawing itself (not the work per node) would grow faster than the model."""


def median_seconds(work: Callable[[], object], rounds: int) -> float:
    """The median CPU time of `rounds` runs of `work` (CPU time: on a shared machine, time
    spent waiting for a core is not the code's), each from a collected heap with the cyclic
    garbage collector paused: its full collections cost time in proportion to everything
    alive, which would add a growth of its own to the code measured."""
    times = []
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            start = time.process_time()
            work()
            times.append(time.process_time() - start)
        finally:
            gc.enable()
    return statistics.median(times)


def measure(writer: str, model: str, sizes: list[int], rounds: int) -> list[float]:
    """The median time of `writer` on `model` at each size; prints a row per size."""
    build, write = MODELS[model], WRITERS[writer]
    if writer == "layout" and model in ONE_COLUMN:

        def write(circuit: Circuit) -> object:
            return layout_circuit(circuit, max_column_height=1e9)

    times = []
    for size in sizes:
        circuit = build(size)
        nodes = len(circuit.nodes)
        seconds = median_seconds(functools.partial(write, circuit), rounds)
        times.append(seconds)
        print(
            f"{writer:<11}{model:<10}{nodes:>8,}{seconds:>11.3f} s"
            f"{1e6 * seconds / nodes:>10.1f} us/node"
        )
    growth = times[-1] / times[0]
    print(
        f"{writer:<11}{model:<10}{'growth':>8}{growth:>11.2f}x  for {sizes[-1] // sizes[0]}x "
        "the nodes (linear: the same; quadratic: its square)"
    )
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else 5
    text_sizes = [250, 500, 1000, 2000] if args.quick else [2000, 4000, 8000, 16000]
    layout_sizes = [150, 300, 600, 1200] if args.quick else [600, 1200, 2400, 4800]
    print(f"{'writer':<11}{'model':<10}{'nodes':>8}{'median':>13}{'per node':>15}")
    for writer in ("to_dot", "to_mermaid"):
        for model in MODELS:
            measure(writer, model, text_sizes, rounds)
    for model in MODELS:
        measure("layout", model, layout_sizes, rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
