"""What a layer is called in a diagram, and how it is coloured.

`describe_layer` names a module's class and the settings that tell it from its siblings
(`Conv2d 3→64, k3, p1`); `layer_family` picks the colour. The summary table and every
renderer use the same names.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..markers import LambdaLayer
from ..scope import Scope

__all__ = [
    "COLOR_KEYS",
    "DEFAULT_COLORS",
    "FAMILIES",
    "OP_SYMBOLS",
    "count_params",
    "describe_layer",
    "format_shape",
    "layer_family",
    "text_width",
]

FAMILIES = ("conv", "linear", "norm", "activation", "pooling", "attention", "dropout", "other")
"""Layer families, each drawn in its own colour."""

COLOR_KEYS = (*FAMILIES, "skip", "io")
"""The keys a `color_map` may set: the families, skip edges, and the input/output boxes."""

DEFAULT_COLORS: dict[str, str] = {
    "conv": "#9ecae1",
    "linear": "#fdd49e",
    "norm": "#c7e9c0",
    "activation": "#fcbba1",
    "pooling": "#dadaeb",
    "attention": "#fdae6b",
    "dropout": "#e5e5e5",
    "other": "#f0f0f0",
    "skip": "#c0392b",
    "io": "#ffffff",
}
"""Colours by layer family, plus `skip` (skip edges and merges) and `io` (input/output)."""

OP_SYMBOLS = {"add": "+", "mul": "×", "cat": "cat"}


# --- What a layer is called and how it is coloured ---


def layer_family(module: nn.Module) -> str:
    """The family of `module` (one of `FAMILIES`), which picks its colour."""
    name = type(module).__name__
    origin = type(module).__module__
    if isinstance(module, nn.MultiheadAttention) or "Attention" in name or "Transformer" in name:
        return "attention"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear | nn.Bilinear):
        return "linear"
    if "Norm" in name:
        return "norm"
    if origin == "torch.nn.modules.activation":
        return "activation"
    if origin == "torch.nn.modules.pooling":
        return "pooling"
    if origin == "torch.nn.modules.dropout":
        return "dropout"
    return "other"


def _size(value: object) -> str:
    """`3` for `3` or `(3, 3)`; `3×1` for `(3, 1)`."""
    if isinstance(value, tuple | list):
        items = [str(v) for v in value]
        return items[0] if len(set(items)) == 1 else "×".join(items)
    return str(value)


def _is_zero(value: object) -> bool:
    if isinstance(value, tuple | list):
        return all(v == 0 for v in value)
    return value == 0


def _is_one(value: object) -> bool:
    if isinstance(value, tuple | list):
        return all(v == 1 for v in value)
    return value == 1


def _conv_detail(module: nn.modules.conv._ConvNd) -> str:
    parts = [f"{module.in_channels}→{module.out_channels}", f"k{_size(module.kernel_size)}"]
    if not _is_one(module.stride):
        parts.append(f"s{_size(module.stride)}")
    if isinstance(module.padding, str):
        parts.append(f"p={module.padding}")
    elif not _is_zero(module.padding):
        parts.append(f"p{_size(module.padding)}")
    if module.groups != 1:
        parts.append(f"g{module.groups}")
    return ", ".join(parts)


def _pool_detail(module: nn.Module) -> str:
    if hasattr(module, "output_size"):
        return f"→{_size(module.output_size)}"
    kernel = getattr(module, "kernel_size", None)
    if kernel is None:
        return ""
    parts = [f"k{_size(kernel)}"]
    stride = getattr(module, "stride", None)
    if stride is not None and stride != kernel and not _is_one(stride):
        parts.append(f"s{_size(stride)}")
    return ", ".join(parts)


def _norm_detail(module: nn.Module) -> str:
    if isinstance(module, nn.GroupNorm):
        return f"{module.num_groups} groups, {module.num_channels}"
    shape = getattr(module, "normalized_shape", None)
    if shape is not None:
        return _size(tuple(shape))
    features = getattr(module, "num_features", None)
    return "" if features is None else str(features)


def _detail(module: nn.Module) -> str:
    """The settings that tell one layer of a class from another: channels, kernel, stride."""
    if isinstance(module, Scope):  # a Circuit inside the circuit
        count = sum(1 for _ in module.children())
        return f"{count} layers"
    if isinstance(module, LambdaLayer):
        return module.extra_repr()
    if isinstance(module, nn.modules.conv._ConvNd):
        return _conv_detail(module)
    if isinstance(module, nn.Linear):
        return f"{module.in_features}→{module.out_features}"
    if isinstance(module, nn.MultiheadAttention):
        return f"d{module.embed_dim}, {module.num_heads} heads"
    if isinstance(module, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer):
        attention = module.self_attn
        return f"d{attention.embed_dim}, {attention.num_heads} heads"
    if isinstance(module, nn.Embedding):
        return f"{module.num_embeddings}×{module.embedding_dim}"
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return f"p={module.p:g}"
    family = layer_family(module)
    if family == "norm":
        return _norm_detail(module)
    if family == "pooling":
        return _pool_detail(module)
    return ""


def describe_layer(module: nn.Module) -> str:
    """One line naming `module`'s class and key settings, e.g. `Conv2d 3→64, k3, p1`."""
    detail = _detail(module)
    return f"{type(module).__name__} {detail}" if detail else type(module).__name__


def count_params(module: nn.Module) -> int:
    """The number of parameters of `module` and its children."""
    return sum(p.numel() for p in module.parameters())


def format_shape(shape: Sequence[int] | None) -> str:
    """`(1, 64, 32, 32)`, or an empty string when no shape is known."""
    if shape is None:
        return ""
    return "(" + ", ".join(str(d) for d in shape) + ")"


def text_width(text: str, size: float) -> float:
    """An upper estimate, in inches, of `text`'s width at `size` points (DejaVu Sans)."""
    return len(text) * size * 0.6 / 72
