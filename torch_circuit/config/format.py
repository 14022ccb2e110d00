"""The document's fixed vocabulary: its format name and version, dtypes, and how errors name
their place in it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import NoReturn

import torch

__all__ = ["DTYPES", "DTYPE_NAMES", "FORMAT", "VERSION", "close_to", "fail"]

FORMAT = "torch-circuit"
# The version this library writes. It reads every version from 1 up to this one; a version bump
# adds fields or entries (an older file keeps its meaning), and a newer file is refused.
VERSION = 1

# The dtypes a document may name (never looked up on `torch` by the name in the file).
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def fail(where: str, message: str, kind: type[Exception] = ValueError) -> NoReturn:
    """Raise `kind` (a `TypeError` or `ValueError`) as `"<where>: <message>"`."""
    raise kind(f"{where}: {message}")


def close_to(word: str, choices: Iterable[str]) -> str:
    """`" Did you mean 'x'?"` when one of `choices` is close to `word`, else `""`."""
    by_lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.75)
    return f" Did you mean {by_lower[close[0]]!r}?" if close else ""
