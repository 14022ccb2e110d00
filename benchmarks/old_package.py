"""The old torch-circuit 0.9.1, installed into a folder of its own for side-by-side runs.

It has our import name, ``torch_circuit``, so it cannot live beside this project in one
process: benchmarks measure it in a separate process that puts its folder first on
``sys.path`` (see ``measure.in_fresh_process``). Its torchvision dependency is not needed to
build or run a ``Circuit``, hence ``--no-deps``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

OLD_VERSION = "0.9.1"
DEFAULT_CACHE = Path.home() / ".cache" / "torch-circuit-benchmarks" / f"torch-circuit-{OLD_VERSION}"


def install_old_package(cache: Path = DEFAULT_CACHE) -> tuple[Path | None, str]:
    """Install torch-circuit 0.9.1 into ``cache`` unless it is there already.

    Returns:
        ``(folder, note)``: the folder to put first on ``sys.path``, or ``None`` with the
        reason (the pip output's last line) when it could not be installed.
    """
    if (cache / "torch_circuit" / "__init__.py").is_file():
        return cache, f"torch-circuit {OLD_VERSION} from {cache}"
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--target",
        str(cache),
        f"torch-circuit=={OLD_VERSION}",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"pip install torch-circuit=={OLD_VERSION} failed: {error}"
    if done.returncode != 0 or not (cache / "torch_circuit" / "__init__.py").is_file():
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        return None, f"pip install torch-circuit=={OLD_VERSION} failed: {lines[-1]}"
    return cache, f"torch-circuit {OLD_VERSION} installed into {cache}"
