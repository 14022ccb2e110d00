"""Where a diagram is written: the formats, the checks made before any work, atomic writes."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["FORMATS", "check_save_path", "write_atomically"]

FORMATS = {".pdf": "pdf", ".png": "png", ".svg": "svg", ".html": "html"}
"""File extensions `visualize` writes, and the format each selects (`.html`: the interactive
page; the others: matplotlib's)."""


def check_save_path(save_path: str | os.PathLike[str] | None) -> Path | None:
    """The path to write, after checking its extension and that its folder is writable."""
    if save_path is None:
        return None
    if not isinstance(save_path, str | os.PathLike):
        raise TypeError(
            f"save_path must be a file path such as 'architecture.pdf', got "
            f"{save_path!r} ({type(save_path).__name__})."
        )
    path = Path(save_path).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise ValueError(
            f"save_path {str(path)!r} has the extension {path.suffix or '(none)'!r}, which "
            f"visualize cannot write; use one of {sorted(FORMATS)}, e.g. "
            f"{str(path.with_suffix('.pdf'))!r}."
        )
    folder = path.parent
    if path.is_dir():
        raise IsADirectoryError(
            f"save_path {str(path)!r} is a folder; give a file name inside it, e.g. "
            f"{str(path / 'architecture.pdf')!r}."
        )
    if not folder.is_dir():
        raise FileNotFoundError(
            f"cannot write {str(path)!r}: the folder {str(folder)!r} does not exist; "
            "create it first or choose another save_path."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(
            f"cannot write {str(path)!r}: the folder {str(folder)!r} is not writable; "
            "choose a save_path in a folder you can write to."
        )
    return path


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` whole or not at all: `write` fills a temporary file, then a rename."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # O_EXCL: never clobber another file; mode 0o666 lets the umask decide, as open() does.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:
        raise PermissionError(
            f"cannot write {str(path)!r}: {error.strerror}; choose a save_path in a folder "
            "you can write to."
        ) from error
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
