"""Where a `Circuit` can be cut into pipeline stages, and which cuts `split` chooses.

A cut is a `Path`: a point between two steps of the forward, read off the circuit's plan
through the public interface of `Scope` and `Block` (`steps`, `num_captures`,
`num_slots`, indexing a block by repeat).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..block import Block
from ..circuit import Circuit
from ..markers import SaveInput
from ..nodes import BlockNode
from ..program import ReadSkip, RunBlock, SaveSkip, Step
from ..scope import Scope

__all__ = [
    "BlockInfo",
    "Path",
    "ScopeInfo",
    "check_circuit",
    "cuts_at",
    "cuts_for",
    "label",
    "scope_info",
    "split_points",
]

# A point between two steps of the forward: the index of a step in the top-level scope, then,
# for a point inside that step's block, a repeat index, a step index in that repeat, and so on.
# (3,) is before top-level step 3; (3, 1, 2) is before step 2 of repeat 1 of the block at step 3.
Path = tuple[int, ...]


@dataclass(frozen=True)
class ScopeInfo:
    """A scope's steps and frame size, the entry keys in order, and its blocks by step."""

    steps: tuple[Step, ...]
    num_captures: int
    num_slots: int
    entry_keys: tuple[str, ...]
    entry_steps: tuple[int, ...]  # for each entry, the index of the first step at or after it
    slot_names: tuple[str, ...]
    blocks: dict[int, BlockInfo]

    def step_of(self, key: str) -> int | None:
        """The step an entry's key starts at, or `None` for no such entry."""
        for entry, step in zip(self.entry_keys, self.entry_steps, strict=True):
            if entry == key:
                return step
        return None

    def live_slots(self, step: int) -> tuple[int, ...]:
        """Slots holding a value when step `step` is about to run (or is part-way through)."""
        written = set(range(self.num_captures))
        for earlier in self.steps[:step]:
            if isinstance(earlier, SaveSkip):
                written.add(earlier.slot)
        read: set[int] = set()
        for later in self.steps[step:]:
            read.update(_slots_read(later))
        return tuple(sorted(written & read))


@dataclass(frozen=True)
class BlockInfo:
    """A block run by a step: its declaration, the slots it captures, and its body's scope."""

    node: BlockNode
    captures: tuple[int, ...]  # the enclosing scope's slots, passed in as the body's first
    body: ScopeInfo

    def repeat_key(self, index: int) -> str:
        return self.node.repeat_key(index)


def _slots_read(step: Step) -> tuple[int, ...]:
    if isinstance(step, ReadSkip):
        return step.slots
    if isinstance(step, RunBlock):
        return step.slots
    return ()


def scope_info(scope: Scope, outer_names: Sequence[str] = ()) -> ScopeInfo:
    """What cutting `scope` needs to know, read off its plan; `outer_names` names the
    skips it captures."""
    steps = scope.steps
    keys = tuple(node.key for node in scope.nodes)
    step_index = {step.key: index for index, step in enumerate(steps)}
    entry_steps = []
    next_step = 0
    for key in keys:
        if key in step_index:
            next_step = step_index[key]
        entry_steps.append(next_step)
        if key in step_index:
            next_step += 1
    names = [""] * scope.num_slots
    if not outer_names:  # a circuit: its named inputs fill the first slots
        outer_names = [node.name for node in scope.input_nodes if node.readers]
    names[: len(outer_names)] = outer_names
    blocks: dict[int, BlockInfo] = {}
    for index, step in enumerate(steps):
        if isinstance(step, SaveSkip):
            save = scope.get_submodule(step.key)
            names[step.slot] = save.name if isinstance(save, SaveInput) else step.key
        elif isinstance(step, RunBlock):
            block = _block(scope, step.key)
            captured = [names[slot] for slot in step.slots]
            body = scope_info(_repeat(block, 0), captured)
            blocks[index] = BlockInfo(block.node, step.slots, body)
    return ScopeInfo(
        steps=steps,
        num_captures=scope.num_captures,
        num_slots=scope.num_slots,
        entry_keys=keys,
        entry_steps=tuple(entry_steps),
        slot_names=tuple(names),
        blocks=blocks,
    )


def _block(scope: Scope, key: str) -> Block:
    block = scope.get_submodule(key)
    if not isinstance(block, Block):
        raise TypeError(
            f"the circuit's module {key!r} is a {type(block).__name__}, not the Block it was "
            "built with, so the circuit cannot be cut there; split the circuit as built."
        )
    return block


def _repeat(block: Block, index: int) -> Scope:
    repeat = block[index]
    if not isinstance(repeat, Scope):
        raise TypeError(
            f"repeat {index} of block {block.name!r} is a {type(repeat).__name__}, not the "
            "repeat it was built with, so the circuit cannot be cut there; split the circuit "
            "as built."
        )
    return repeat


def _scope_at(info: ScopeInfo, path: Path) -> ScopeInfo:
    """The scope a path's last step index counts in (`path` has odd length)."""
    for depth in range(0, len(path) - 1, 2):
        info = info.blocks[path[depth]].body
    return info


def _canonical(info: ScopeInfo, path: Path) -> Path:
    """One spelling per point: before repeat 0 is before the block, past the end is next."""
    cut = list(path)
    while cut:
        if len(cut) % 2 == 0:  # ends on a repeat index
            block = _scope_at(info, tuple(cut[:-1])).blocks[cut[-2]]
            if cut[-1] == 0:
                cut.pop()
            elif cut[-1] == block.node.num_repeats:
                cut.pop()
                cut[-1] += 1
            else:
                break
        else:  # ends on a step index
            scope = _scope_at(info, tuple(cut))
            if len(cut) > 1 and cut[-1] == 0:
                cut.pop()
            elif len(cut) > 1 and cut[-1] == len(scope.steps):
                cut.pop()
                cut[-1] += 1
            else:
                break
    return tuple(cut)


def label(info: ScopeInfo, path: Path) -> str:
    if not path:
        return "the start"
    if path == (len(info.steps),):
        return "the end"
    parts = []
    scope = info
    for depth, index in enumerate(path):
        if depth % 2 == 0:
            parts.append(scope.steps[index].key)
        else:
            parts.append(str(index))
            scope = scope.blocks[path[depth - 1]].body
    return ".".join(parts)


def _parse_point(info: ScopeInfo, point: str) -> Path:
    if not isinstance(point, str):
        raise TypeError(
            f"split point {point!r} ({type(point).__name__}) is not a string; name the module "
            "the next stage starts with by its state_dict prefix, e.g. 'resnet' or 'resnet.2'."
        )
    tokens = point.split(".")
    path: list[int] = []
    scope = info
    where = "at the top level"
    for depth, token in enumerate(tokens):
        if depth % 2 == 0:
            step = scope.step_of(token)
            if step is None:
                raise ValueError(
                    f"split point {point!r}: {token!r} names no layer or block {where}; "
                    f"valid here: {list(scope.entry_keys)}."
                )
            path.append(step)
            continue
        block = scope.blocks.get(path[-1])
        if block is None or block.node.key != tokens[depth - 1]:
            raise ValueError(
                f"split point {point!r}: {tokens[depth - 1]!r} is not a block, so nothing can "
                f"follow it; end the split point at {'.'.join(tokens[:depth])!r}."
            )
        repeats = block.node.num_repeats
        if not token.isdigit() or int(token) >= repeats:
            raise ValueError(
                f"split point {point!r}: {token!r} is not a repeat of block "
                f"{block.node.name!r}, which has repeats 0 to {repeats - 1}."
            )
        path.append(int(token))
        scope = block.body
        where = f"in block {block.node.name!r}"
    return _canonical(info, tuple(path))


def _check_cut(info: ScopeInfo, path: Path, point: str) -> None:
    """Reject a cut through tied weights or through a checkpointed repeat."""
    scope = info
    for depth in range(1, len(path), 2):
        block = scope.blocks[path[depth - 1]]
        node = block.node
        if node.share_weights:
            raise ValueError(
                f"split point {point!r} cuts block {node.name!r} (StartBlock at position "
                f"{node.position}), whose repeats share weights: each stage would train its "
                "own copy of the tied weights. Split before or after the block instead."
            )
        if node.checkpoint and depth + 1 < len(path):
            repeat = path[depth]
            raise ValueError(
                f"split point {point!r} is inside repeat {repeat} of block {node.name!r} "
                f"(StartBlock at position {node.position}, checkpoint=True): a checkpointed "
                "repeat is recomputed as one unit, so a stage cannot end inside it. Split "
                f"between repeats instead, e.g. {node.name + '.' + str(repeat)!r}, or build "
                "the block with checkpoint=False."
            )
        scope = block.body


def _boundaries(info: ScopeInfo) -> list[Path]:
    """The cuts at top-level blocks and between their repeats, in forward order."""
    end = len(info.steps)
    cuts: set[Path] = set()
    for step, block in info.blocks.items():
        cuts.update({(step,), (step + 1,)})
        if not block.node.share_weights:
            cuts.update((step, repeat) for repeat in range(1, block.node.num_repeats))
    return sorted(cut for cut in cuts if cut not in {(0,), (end,)})


def split_points(model: Circuit) -> list[str]:
    """The split points `split(model, num_stages)` chooses among, in forward order.

    These are the boundaries before and after every top-level block and between its repeats
    (not between the repeats of a block with shared weights). `split(model, at=...)` also
    accepts any top-level layer, and any layer inside a repeat that is not checkpointed.

    Examples:
        >>> split_points(model)
        ['resnet', 'resnet.1', 'resnet.2', '13']
    """
    info = scope_info(check_circuit(model, "split_points"))
    return [label(info, cut) for cut in _boundaries(info)]


def check_circuit(model: Any, caller: str) -> Circuit:
    """`model`, if it is a `Circuit` a pipeline can cut: its stages hand on only skips."""
    if not isinstance(model, Circuit):
        raise TypeError(
            f"{caller} splits a Circuit, got {type(model).__name__}; pass the Circuit itself "
            "(not a DDP, FSDP or compiled wrapper of it)."
        )
    port = model.port
    if port.outputs:
        names = [name for name, _ in port.outputs]
        raise ValueError(
            f"{caller} cannot cut a circuit with named outputs ({names}): a pipeline's stages "
            "hand on only the current tensor and skips, so an output made in an earlier stage "
            "could not reach the caller. Remove the Output markers for pipeline training, or "
            "train it with DDP or FSDP2 (torch_circuit.distributed.shard)."
        )
    if port.stacks:
        names = [name for name, _, _ in port.stacks]
        raise ValueError(
            f"{caller} cannot cut a circuit with stacks of pushed skips ({names}); use plain "
            "skips (SaveInput/GetInput without push/pop) for pipeline training, or DDP/FSDP2."
        )
    return model


def _cost(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _costs_before(model: Circuit, info: ScopeInfo, cuts: Sequence[Path]) -> list[int]:
    """Parameters run before each top-level cut (a shared repeat counts at every run)."""
    per_step: list[list[int]] = []
    for index, step in enumerate(info.steps):
        if index in info.blocks:
            per_step.append([_cost(repeat) for repeat in _block(model, step.key)])
        else:
            per_step.append([_cost(model.get_submodule(step.key))])
    return [
        sum(sum(costs) for costs in per_step[: cut[0]])
        + (sum(per_step[cut[0]][: cut[1]]) if len(cut) > 1 else 0)
        for cut in cuts
    ]


def _balanced(costs: Sequence[int], total: int, num_cuts: int) -> list[int]:
    """Indices of `num_cuts` cuts minimising the largest stage's cost (dynamic programme)."""
    count = len(costs)
    # best[j][i]: the smallest largest-stage cost with cut i as the j-th cut (0-based)
    best = [[float(cost) for cost in costs] for _ in range(num_cuts)]
    previous: list[list[int]] = [[-1] * count for _ in range(num_cuts)]
    for j in range(1, num_cuts):
        for i in range(count):
            best[j][i] = float("inf")
            for k in range(j - 1, i):
                value = max(best[j - 1][k], costs[i] - costs[k])
                if value < best[j][i]:
                    best[j][i], previous[j][i] = value, k
    last = min(
        range(num_cuts - 1, count), key=lambda i: max(best[num_cuts - 1][i], total - costs[i])
    )
    chosen = [last]
    for j in range(num_cuts - 1, 0, -1):
        chosen.append(previous[j][chosen[-1]])
    return chosen[::-1]


def cuts_for(model: Circuit, info: ScopeInfo, num_stages: int | None) -> list[Path]:
    if num_stages is None:
        raise TypeError("split needs num_stages=N or at=[split points]; pass one of the two.")
    if isinstance(num_stages, bool) or not isinstance(num_stages, int):
        raise TypeError(
            f"num_stages must be a positive int, got {num_stages!r} ({type(num_stages).__name__})."
        )
    if num_stages < 1:
        raise ValueError(f"num_stages must be a positive int, got {num_stages}.")
    candidates = _boundaries(info)
    if num_stages - 1 > len(candidates):
        labels = [label(info, cut) for cut in candidates]
        raise ValueError(
            f"cannot split into {num_stages} stages: the circuit has {len(candidates)} "
            f"boundaries at blocks and repeats ({labels}), so at most {len(candidates) + 1} "
            f"stage{'s' if candidates else ''}. Use fewer stages (fewer processes), more "
            "repeats, or name the split points with at=[...]: any top-level layer can start a "
            "stage."
        )
    if num_stages == 1:
        return []
    costs = _costs_before(model, info, candidates)
    total = _costs_before(model, info, [(len(info.steps),)])[0]
    return [candidates[i] for i in _balanced(costs, total, num_stages - 1)]


def cuts_at(info: ScopeInfo, points: list[str]) -> list[Path]:
    cuts: list[Path] = []
    for number, point in enumerate(points):
        cut = _parse_point(info, point)
        _check_cut(info, cut, point)
        if cut in {(), (0,), (len(info.steps),)}:
            edge = "end" if cut == (len(info.steps),) else "start"
            raise ValueError(
                f"split point {point!r} is at the {edge} of the circuit, so a stage would be "
                "empty; remove it."
            )
        if cuts and cut <= cuts[-1]:
            raise ValueError(
                f"split point {point!r} comes at or before the previous one, "
                f"{points[number - 1]!r}; list split points once each, in forward order."
            )
        cuts.append(cut)
    return cuts
