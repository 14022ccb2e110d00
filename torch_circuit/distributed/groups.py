"""Checks made before any collective call, so that a missing process group fails fast."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["require_process_group"]


def require_process_group(caller: str, group: ProcessGroup | None = None) -> None:
    """Raise unless torch.distributed is usable, before any collective could hang."""
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError(
            f"{caller} needs torch.distributed, which this PyTorch build lacks; "
            "install a build with distributed support."
        )
    if group is None and not dist.is_initialized():
        raise RuntimeError(
            f"{caller} needs an initialised default process group, and there is none; call "
            "torch.distributed.init_process_group('gloo' or 'nccl') first (torchrun sets the "
            "environment variables it reads)."
        )
