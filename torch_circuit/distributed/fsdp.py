"""FSDP2 for a `Circuit`: every repeat one communication unit, like a transformer's layers."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..block import Block
from .groups import require_process_group

__all__ = ["shard"]


def shard(model: nn.Module, **fully_shard_kwargs: Any) -> nn.Module:
    """Shard `model` with FSDP2: `fully_shard` each repeat of every block, then the root.

    Each repeat becomes one communication unit, all-gathered just before it runs and freed
    after, the way a transformer is sharded per layer. A block with `share_weights=True` has
    one repeat module, gathered at every repeat. Blocks nested in blocks are sharded innermost
    first. The call is the same as doing it by hand:

        for module in reversed(list(model.modules())):
            if isinstance(module, torch_circuit.block.Block):
                for repeat in module.children():
                    fully_shard(repeat, **kwargs)
        fully_shard(model, **kwargs)

    Args:
        model: a `Circuit`, or any module containing some.
        **fully_shard_kwargs: passed to every `fully_shard` call (`mesh`,
            `reshard_after_forward`, `mp_policy`, `offload_policy`, ...).

    Returns:
        `model` itself, now an `FSDPModule`.

    Examples:
        >>> dist.init_process_group("nccl")
        >>> model = shard(Circuit(...).cuda())
        >>> optimizer = torch.optim.AdamW(model.parameters())
    """
    require_process_group("torch_circuit.distributed.shard")
    from torch.distributed.fsdp import fully_shard

    # reversed pre-order: every repeat is sharded before the repeats that contain it
    for module in reversed(list(model.modules())):
        if isinstance(module, Block):
            for repeat in module.children():
                fully_shard(repeat, **fully_shard_kwargs)
    fully_shard(model, **fully_shard_kwargs)
    return model
