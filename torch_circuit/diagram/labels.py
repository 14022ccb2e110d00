"""What each drawn thing of a diagram says: a layer's lines, a skip's or an output's label,
a transform's lines, a frame's header.

A node drawn inside a folded frame stands for one occurrence per repeat of that frame;
`represented_modules` finds the modules of all of them, so that a layer built per repeat
(`PerRepeat`) can say how its repeats differ.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..nodes import BlockNode, LayerNode, OutputNode, ReadNode, SaveNode, Visit
from .describe import count_params, describe_layer, format_shape
from .view import represented

__all__ = [
    "MAX_TRANSFORM_LINES",
    "frame_label",
    "layer_lines",
    "output_label",
    "read_label",
    "represented_keys",
    "represented_modules",
    "save_label",
    "transform_layers",
    "transform_text",
]

MAX_TRANSFORM_LINES = 3
"""A transform of more layers is drawn as one line: its class, layer count and parameters."""

MAX_SHOWN_REPEATS = 3
"""A layer built per repeat lists its repeats' settings up to this many, else first … last."""

MAX_PER_REPEAT_LINE = 40
"""The longest list of a layer's settings per repeat; past it, the first and the last."""


def transform_text(module: nn.Module) -> str | None:
    """A marker's transform in one line (`Conv2d 8→16, k1`), or `None` without one."""
    transform = getattr(module, "transform", None)
    return None if transform is None else describe_layer(transform)


def transform_layers(module: nn.Module) -> tuple[str, ...]:
    """A marker's transform as drawn: a line per layer with its parameter count
    (`Conv2d 32→64, k1, s2 · 2,048 params`), or one line when it has more than
    `MAX_TRANSFORM_LINES` layers; empty without a transform."""
    transform = getattr(module, "transform", None)
    if not isinstance(transform, nn.Module):
        return ()
    leaves = [m for m in transform.modules() if not any(True for _ in m.children())]
    if len(leaves) > MAX_TRANSFORM_LINES:
        total = count_params(transform)
        return (f"{type(transform).__name__}: {len(leaves)} layers · {total:,} params",)
    return tuple(_with_params(leaf) for leaf in leaves)


def _with_params(module: nn.Module) -> str:
    params = count_params(module)
    name = describe_layer(module)
    return f"{name} · {params:,} params" if params else name


def frame_label(node: BlockNode, repeat: int | None) -> str:
    """`name ×N` for a folded block, `name [r/N]` for one repeat (`· shared` if tied)."""
    shared = " · shared" if node.share_weights else ""
    if repeat is None:
        return f"{node.name} ×{node.num_repeats}{shared}"
    return f"{node.name} [{repeat + 1}/{node.num_repeats}]{shared}"


def is_named(node: LayerNode | SaveNode | ReadNode | OutputNode) -> bool:
    """Whether the node was given a name (`("stem", layer)`) rather than keyed by position."""
    return node.key != str(node.position)


def represented_keys(visit: Visit) -> list[str]:
    """The keys of the modules that run at `visit` in every repeat it stands for (itself
    alone outside folded frames), in forward order."""
    keys = [""]
    consumed = ""  # the part of repeat 0's key read so far
    for frame in visit.frames:
        block = frame.key[len(consumed) :]
        repeats = range(frame.node.num_repeats) if frame.repeat is None else (frame.repeat,)
        keys = [f"{key}{block}.{frame.node.repeat_key(r)}." for key in keys for r in repeats]
        consumed = f"{frame.repeat_key}."
    leaf = visit.key[len(consumed) :]
    return list(dict.fromkeys(f"{key}{leaf}" for key in keys))


def represented_modules(root: nn.Module, visit: Visit) -> list[nn.Module]:
    """The modules that run at `visit` in every repeat it stands for (see `represented_keys`)."""
    return [root.get_submodule(key) for key in represented_keys(visit)]


def layer_lines(visit: Visit, modules: Sequence[nn.Module]) -> tuple[str, ...]:
    """A layer box's lines: what it is (after its name, if it has one), how its repeats
    differ when it is built per repeat and drawn folded, and its parameter count.

    `modules` are the modules the box stands for (`represented_modules`); one, unless the
    layer is built per repeat and drawn in a folded frame.
    """
    first = modules[0]
    described = describe_layer(first)
    node = visit.node
    if is_named(node):
        described = f"{node.key}: {described}"
    lines = [described]
    if len(modules) > 1:
        lines.append(_per_repeat_line(modules))
    counts = [count_params(module) for module in modules]
    if len(set(counts)) > 1:
        lines.append(f"{min(counts):,} … {max(counts):,} params")
    elif counts[0]:
        lines.append(f"{counts[0]:,} params")
    return tuple(lines)


def _per_repeat_line(modules: Sequence[nn.Module]) -> str:
    """`built per repeat` where the repeats' layers read alike, else how they differ: the
    settings that differ (`per repeat: 16→32 · 32→64 · 64→128`, the kernel and stride that do
    not are on the line above), or the first and the last (`per repeat: 16→32 … 128→256`)."""
    described = [describe_layer(module) for module in modules]
    if len(set(described)) == 1:
        return "built per repeat"
    names = {type(module).__name__ for module in modules}
    if len(names) == 1:  # one class: its settings alone say how the repeats differ
        name = next(iter(names))
        described = _differing([text[len(name) :].strip() for text in described])
    shown = list(dict.fromkeys(described))
    line = "per repeat: " + " · ".join(shown)
    if len(shown) > MAX_SHOWN_REPEATS or len(line) > MAX_PER_REPEAT_LINE:
        return f"per repeat: {described[0]} … {described[-1]}"
    return line


def _differing(details: Sequence[str]) -> list[str]:
    """The settings of each repeat's layer that are not the same in all of them
    (`["16→32, k3", "32→64, k3"]` -> `["16→32", "32→64"]`)."""
    parts = [detail.split(", ") for detail in details]
    if len({len(p) for p in parts}) != 1:
        return list(details)
    keep = [i for i in range(len(parts[0])) if len({p[i] for p in parts}) > 1]
    return [", ".join(p[i] for i in keep) for p in parts]


def save_label(node: SaveNode, shape: Sequence[int] | None, per_repeat: bool) -> str:
    """A skip's label at its save: `enc1 (1, 16, 64, 64)`; a push says so (`skip · push`)."""
    parts = [node.name]
    if node.push:
        parts.append("push")
    if per_repeat and node.per_repeat:
        parts.append("per repeat")
    label = " · ".join(parts)
    return f"{label} {format_shape(shape)}" if shape is not None else label


def read_label(node: ReadNode, op: str, per_repeat: bool) -> str:
    """A read's label: `enc1 · cat`, `k, v · attend`, `skip · cat · pop` (`op` names the
    module's op: a part built per repeat is named by what it built); a part built per repeat
    and drawn folded adds `· per repeat`."""
    parts = [", ".join(node.names), op]
    if node.pop:
        parts.append("pop")
    if per_repeat and node.per_repeat:
        parts.append("per repeat")
    return " · ".join(parts)


def output_label(node: OutputNode, visit: Visit, first: int) -> str:
    """What an output's tap is labelled: its name, `name[i]` where it is one of several
    results of a block drawn expanded (`first` is the index of its run), and `name ×k` where
    it stands for `k` runs in folded frames."""
    runs = represented(visit)
    if runs > 1:
        return f"{node.name} ×{runs}"
    if node.count > 1:
        return f"{node.name}[{first}]"
    return node.name
