"""The layers of `torch.nn` a config describes without registration, and how.

Each class's constructor arguments are read back from the module's attributes: most store
each argument under its own name, and the exceptions (`bias` stored as a parameter or
`None`, a transformer layer's sizes stored in its submodules) say where to look. A reading
is never trusted on its own: `to_config` builds the class again from what was read and
compares the two (see `state.py`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's own spelling

__all__ = ["REFUSED", "REQUIRED", "SPECS", "Argument", "LayerSpec", "spec_for"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Argument:
    """One constructor argument: its name, default, and how to read it back from a module."""

    name: str
    default: Any = REQUIRED
    read: Callable[[Any], Any] | None = None

    def value(self, module: nn.Module) -> Any:
        return getattr(module, self.name) if self.read is None else self.read(module)


@dataclass(frozen=True)
class LayerSpec:
    """How one `torch.nn` class is described.

    `arguments` are the constructor's, in signature order (`names` adds those only other
    readings use). `readings` are other full
    readings to try, in order, when the first does not rebuild the module exactly (a
    `Transformer` built from `custom_encoder`). A `container` takes its children as its
    arguments: a list (`Sequential`, `ModuleList`) or names to modules (`ModuleDict`).
    """

    cls: type[nn.Module]
    arguments: tuple[Argument, ...]
    readings: tuple[tuple[Argument, ...], ...] = ()
    container: Literal["sequence", "mapping"] | None = None
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        # Every name any reading uses is accepted; positions follow the first reading.
        names = [a.name for reading in (self.arguments, *self.readings) for a in reading]
        object.__setattr__(self, "names", tuple(dict.fromkeys(names)))


def _signature_arguments(
    cls: type[nn.Module], skip: tuple[str, ...] = (), **read: Callable[[Any], Any]
) -> tuple[Argument, ...]:
    """The public arguments of `cls.__init__` (not `device`, `dtype`, nor `_private` ones)."""
    arguments = []
    for parameter in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        name = parameter.name
        if name in ("device", "dtype", *skip) or name.startswith("_"):
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = REQUIRED if parameter.default is parameter.empty else parameter.default
        arguments.append(Argument(name, default, read.get(name)))
    return tuple(arguments)


def _has_bias(module: Any) -> bool:
    return module.bias is not None


def _norm_bias(module: Any) -> bool:
    affine = getattr(module, "affine", None)
    if affine is None:
        affine = module.elementwise_affine
    return module.bias is not None if affine else True


def _activation(layer: Any) -> Any:
    activation = layer.activation
    if activation is F.relu:
        return "relu"
    if activation is F.gelu:
        return "gelu"
    return activation


def _first(module: Any, stack: str) -> Any:
    return getattr(module, stack).layers[0]


def _transformer_layer(attention: str) -> tuple[Argument, ...]:
    def attn(layer: Any) -> Any:
        return getattr(layer, attention)

    return (
        Argument("d_model", REQUIRED, lambda m: attn(m).embed_dim),
        Argument("nhead", REQUIRED, lambda m: attn(m).num_heads),
        Argument("dim_feedforward", 2048, lambda m: m.linear1.out_features),
        Argument("dropout", 0.1, lambda m: m.dropout.p),
        Argument("activation", "relu", _activation),
        Argument("layer_norm_eps", 1e-5, lambda m: m.norm1.eps),
        Argument("batch_first", False, lambda m: attn(m).batch_first),
        Argument("norm_first", False),
        Argument("bias", True, lambda m: m.linear1.bias is not None),
    )


def _transformer_readings() -> tuple[tuple[Argument, ...], ...]:
    def layer(m: Any) -> Any:
        return _first(m, "encoder")

    plain = (
        Argument("d_model", 512),
        Argument("nhead", 8),
        Argument("num_encoder_layers", 6, lambda m: len(m.encoder.layers)),
        Argument("num_decoder_layers", 6, lambda m: len(m.decoder.layers)),
        Argument("dim_feedforward", 2048, lambda m: layer(m).linear1.out_features),
        Argument("dropout", 0.1, lambda m: layer(m).dropout.p),
        Argument("activation", "relu", lambda m: _activation(layer(m))),
        Argument("layer_norm_eps", 1e-5, lambda m: layer(m).norm1.eps),
        Argument("batch_first", False),
        Argument("norm_first", False, lambda m: layer(m).norm_first),
        Argument("bias", True, lambda m: layer(m).linear1.bias is not None),
    )
    custom = (
        Argument("d_model", 512),
        Argument("nhead", 8),
        Argument("custom_encoder", None, lambda m: m.encoder),
        Argument("custom_decoder", None, lambda m: m.decoder),
        Argument("batch_first", False),
    )
    return plain, custom


def _stack(layer_argument: str) -> tuple[Argument, ...]:
    return (
        Argument(layer_argument, REQUIRED, lambda m: m.layers[0]),
        Argument("num_layers", REQUIRED, lambda m: len(m.layers)),
        Argument("norm", None),
    )


def _recurrent(*extra: Argument) -> tuple[Argument, ...]:
    return (
        Argument("input_size"),
        Argument("hidden_size"),
        Argument("num_layers", 1),
        *extra,
        Argument("bias", True),
        Argument("batch_first", False),
        Argument("dropout", 0.0),
        Argument("bidirectional", False),
    )


def _same_dim_or_none(name: str) -> Callable[[Any], Any]:
    def read(module: Any) -> Any:
        value = getattr(module, name)
        return None if value == module.embed_dim else value

    return read


def _words(text: str) -> list[str]:
    return text.split()


# Classes described by their signature alone, attribute for attribute.
_PLAIN = _words(
    # activations
    "CELU ELU GELU GLU Hardshrink Hardsigmoid Hardswish LeakyReLU LogSigmoid LogSoftmax Mish "
    "PReLU ReLU ReLU6 RReLU SELU SiLU Sigmoid Softmax Softmax2d Softmin Softplus Softshrink "
    "Softsign Tanh Tanhshrink Threshold "
    # pooling
    "AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d AdaptiveMaxPool1d AdaptiveMaxPool2d "
    "AdaptiveMaxPool3d AvgPool1d AvgPool2d AvgPool3d FractionalMaxPool2d FractionalMaxPool3d "
    "LPPool1d LPPool2d LPPool3d MaxPool1d MaxPool2d MaxPool3d MaxUnpool1d MaxUnpool2d "
    "MaxUnpool3d "
    # padding
    "CircularPad1d CircularPad2d CircularPad3d ConstantPad1d ConstantPad2d ConstantPad3d "
    "ReflectionPad1d ReflectionPad2d ReflectionPad3d ReplicationPad1d ReplicationPad2d "
    "ReplicationPad3d ZeroPad1d ZeroPad2d ZeroPad3d "
    # dropout, shapes, vision, distances, norms without affine parameters
    "AlphaDropout Dropout Dropout1d Dropout2d Dropout3d FeatureAlphaDropout "
    "Flatten Unflatten Fold Unfold Identity "
    "ChannelShuffle PixelShuffle PixelUnshuffle Upsample UpsamplingBilinear2d "
    "UpsamplingNearest2d CosineSimilarity "
    "CrossMapLRN2d LocalResponseNorm RMSNorm "
    # cells and embeddings
    "RNNCell LSTMCell GRUCell Embedding EmbeddingBag"
)
_WITH_BIAS = _words(
    "Linear Bilinear Conv1d Conv2d Conv3d ConvTranspose1d ConvTranspose2d ConvTranspose3d"
)
_NORMS = _words(
    "BatchNorm1d BatchNorm2d BatchNorm3d SyncBatchNorm InstanceNorm1d InstanceNorm2d "
    "InstanceNorm3d GroupNorm LayerNorm"
)


def _specs() -> dict[type, LayerSpec]:
    specs = [
        LayerSpec(getattr(nn, name), _signature_arguments(getattr(nn, name))) for name in _PLAIN
    ]
    # Hardtanh's min_value and max_value are deprecated spellings of min_val and max_val.
    specs.append(
        LayerSpec(nn.Hardtanh, _signature_arguments(nn.Hardtanh, ("min_value", "max_value")))
    )
    specs += [
        LayerSpec(getattr(nn, name), _signature_arguments(getattr(nn, name), bias=_has_bias))
        for name in _WITH_BIAS
    ]
    specs += [
        LayerSpec(getattr(nn, name), _signature_arguments(getattr(nn, name), bias=_norm_bias))
        for name in _NORMS
    ]
    attention = _signature_arguments(
        nn.MultiheadAttention,
        bias=lambda m: m.in_proj_bias is not None,
        add_bias_kv=lambda m: m.bias_k is not None,
        kdim=_same_dim_or_none("kdim"),
        vdim=_same_dim_or_none("vdim"),
    )
    plain, custom = _transformer_readings()
    specs += [
        LayerSpec(nn.MultiheadAttention, attention),
        LayerSpec(
            nn.PairwiseDistance, _signature_arguments(nn.PairwiseDistance, p=lambda m: m.norm)
        ),
        LayerSpec(nn.RNN, _recurrent(Argument("nonlinearity", "tanh"))),
        LayerSpec(nn.LSTM, (*_recurrent(), Argument("proj_size", 0))),
        LayerSpec(nn.GRU, _recurrent()),
        LayerSpec(nn.TransformerEncoderLayer, _transformer_layer("self_attn")),
        LayerSpec(nn.TransformerDecoderLayer, _transformer_layer("self_attn")),
        LayerSpec(
            nn.TransformerEncoder,
            (
                *_stack("encoder_layer"),
                Argument("enable_nested_tensor", True),
                Argument("mask_check", True),
            ),
        ),
        LayerSpec(nn.TransformerDecoder, _stack("decoder_layer")),
        LayerSpec(nn.Transformer, plain, readings=(custom,)),
        LayerSpec(nn.Sequential, (), container="sequence"),
        LayerSpec(nn.ModuleList, (), container="sequence"),
        LayerSpec(nn.ModuleDict, (), container="mapping"),
    ]
    return {spec.cls: spec for spec in specs}


SPECS = _specs()
SPECS_BY_NAME = {spec.cls.__name__: spec for spec in SPECS.values()}

# torch.nn classes a config does not describe, and why (`to_config` says so, with the fix).
REFUSED = {
    "ParameterList": "it holds parameters rather than building them from arguments; keep "
    "them in a registered module class whose constructor creates them",
    "ParameterDict": "it holds parameters rather than building them from arguments; keep "
    "them in a registered module class whose constructor creates them",
    "DataParallel": "it wraps a model for training, it is not a layer; describe the module "
    "inside it (model.module)",
    "AdaptiveLogSoftmaxWithLoss": "it is a loss that returns a named tuple, not a layer",
    "Module": "a bare nn.Module has no constructor arguments to describe",
    "Container": "it is deprecated; use nn.Sequential",
}


def spec_for(cls: type) -> LayerSpec | None:
    """The description of exactly `cls` (not of its subclasses), if `torch.nn` has one."""
    return SPECS.get(cls)


def refusal(cls: type) -> str | None:
    """Why a `torch.nn` class is not described, if it is one that is refused."""
    if cls.__module__.startswith("torch.nn") and cls.__name__.startswith("Lazy"):
        return (
            "its parameters are not initialised yet; run one forward pass first (a lazy "
            "module then becomes its ordinary class, which is described)"
        )
    if cls.__name__.endswith("Loss") and cls.__module__.startswith("torch.nn"):
        return "it is a loss function, not a layer of the model"
    return REFUSED.get(cls.__name__) if getattr(nn, cls.__name__, None) is cls else None
