"""Train a `Circuit` on `torch.distributed`: FSDP2 sharding per repeat, and pipeline stages.

DDP needs nothing from here: a `Circuit` is a plain `nn.Module`, so
`DistributedDataParallel(model)` works as for a hand-written model.

- `fsdp.py`: `shard` applies FSDP2's `fully_shard` to every repeat of every block, then to
  the root.
- `cuts.py`: where a circuit can be cut (`split_points`), and the cuts `split` chooses.
- `stages.py`: `split` cuts a circuit into pipeline stages at block or repeat boundaries
  (or at any named layer), each stage carrying the skip tensors that cross its boundaries as
  extra inputs and outputs; `pipeline_stage` wraps this rank's stage in a
  `torch.distributed.pipelining.PipelineStage`.

A split point names the module the next stage starts with, as its `state_dict` prefix:
`"resnet"` (before block `resnet`), `"resnet.2"` (before repeat 2 of it), `"13"` (before
the top-level layer at argument position 13), `"resnet.1.5"` (before the layer at position 5
inside repeat 1).
"""

from .cuts import split_points
from .fsdp import shard
from .stages import CircuitStage, pipeline_stage, split

__all__ = ["CircuitStage", "pipeline_stage", "shard", "split", "split_points"]
