"""A saved Quick Start against ``torch.save(model.state_dict())``: bytes on disk and load time.

Usage::

    python benchmarks/config_io.py            # 31 interleaved rounds
    python benchmarks/config_io.py --quick    # 3 rounds (a smoke test)

``torch_circuit.save`` writes ``config.json`` and ``model.safetensors``; the baseline is one
``torch.save`` of the ``state_dict``. Loading is timed two ways, each against its yardstick in
the same run (medians of interleaved rounds, see ``measure.py``):

* **model**: ``torch_circuit.load(folder)`` (build from the config, read the weights, fill the
  model) against what the baseline needs for the same result: build the model in Python,
  ``torch.load(weights_only=True)``, ``load_state_dict``.
* **weights only**: ``safetensors.torch.load_file`` against ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import measure
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))

import quickstart  # noqa: E402 - the examples folder goes on sys.path first

import torch_circuit  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 31")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 31
    torch.set_num_threads(1)

    torch.manual_seed(0)
    model = quickstart.build_model()
    with tempfile.TemporaryDirectory() as tmp:
        folder = torch_circuit.save(model, Path(tmp) / "quickstart")
        baseline = Path(tmp) / "quickstart.pt"
        torch.save(model.state_dict(), baseline)

        config_bytes = (folder / "config.json").stat().st_size
        weights_bytes = (folder / "model.safetensors").stat().st_size
        saved = config_bytes + weights_bytes
        base = baseline.stat().st_size
        print(f"{'on disk':<22}{'bytes':>12}{'ratio':>9}")
        print(f"{'torch.save(state_dict)':<22}{base:>12,}{1:>9.3f}")
        print(f"{'torch_circuit.save':<22}{saved:>12,}{saved / base:>9.3f}")
        print(f"{'  config.json':<22}{config_bytes:>12,}")
        print(f"{'  model.safetensors':<22}{weights_bytes:>12,}{weights_bytes / base:>9.3f}")

        def plain_load() -> object:
            twin = quickstart.build_model()
            twin.load_state_dict(torch.load(baseline, weights_only=True))
            return twin

        loaded = torch_circuit.load(folder).state_dict().values()
        if not all(map(torch.equal, loaded, model.state_dict().values())):
            raise RuntimeError("torch_circuit.load did not restore the saved state exactly")
        for label, candidates in (
            (
                "model",
                {
                    "build + torch.load": plain_load,
                    "torch_circuit.load": lambda: torch_circuit.load(folder),
                },
            ),
            (
                "weights only",
                {
                    "torch.load": lambda: torch.load(baseline, weights_only=True),
                    "safetensors load_file": lambda: load_file(str(folder / "model.safetensors")),
                },
            ),
        ):
            reference = next(iter(candidates))
            summary = measure.summarize(measure.time_interleaved(candidates, rounds), reference)
            print(f"\nload, {label} ({rounds} rounds, medians)")
            for name, figures in summary.items():
                print(
                    f"  {name:<24}{1000 * figures['median_s']:9.2f} ms"
                    f"   ratio {figures['ratio']:.3f} (paired {figures['ratio_paired']:.3f})"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
