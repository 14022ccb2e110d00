"""Hints for the mistake a new user makes first: reading a name no visible save provides.

`resolve.py` reports such a read with the names visible there and, if one is close, "did you
mean"; otherwise `fix_for_unknown` looks through the layer list for where the save is: later
than the read, or inside a block that ended before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .markers import EndBlock, SaveInput, StartBlock

__all__ = ["fix_for_unknown"]


def fix_for_unknown(layers: Sequence[Any], name: str, position: int) -> str:
    """Where the save a read misses is, if anywhere: later, or inside an ended block."""
    open_blocks: list[tuple[StartBlock, int]] = []
    inside: list[tuple[int, StartBlock, int]] = []  # save position, its block, block start
    for index, item in enumerate(layers):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            item = item[1]
        if isinstance(item, StartBlock):
            open_blocks.append((item, index))
        elif isinstance(item, EndBlock) and open_blocks:
            _, start = open_blocks.pop()
            for saved, owner, owner_start in inside:
                if owner_start == start and saved < index < position:
                    return (
                        f"SaveInput({name!r}) at position {saved} is inside block "
                        f"{owner.name!r}, which ends at position {index}: a name saved inside "
                        "a block is not visible after its EndBlock. Save it before the block "
                        "to use it after."
                    )
        elif isinstance(item, SaveInput) and item.name == name:
            if index > position:
                return (
                    f"SaveInput({name!r}) comes later, at position {index}; move it before "
                    f"position {position}."
                )
            if open_blocks:
                block, start = open_blocks[-1]
                inside.append((index, block, start))
    return f"Add SaveInput({name!r}) before it."
