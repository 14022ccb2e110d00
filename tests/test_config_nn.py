"""Every torch.nn layer a config describes, built with arguments that are not the defaults,
survives `to_config` -> `from_config` exactly: same document, same repr, same state_dict
keys and shapes, and (with the weights copied) the same outputs."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from torch_circuit import Circuit
from torch_circuit.config.torchnn import SPECS


def _x(*shape: int) -> Callable[[], Tensor]:
    return lambda: torch.randn(*shape)


def _tokens(*shape: int) -> Callable[[], Tensor]:
    return lambda: torch.randint(0, 9, shape)


# (layer with non-default arguments, an input it takes or None)
CASES: list[tuple[nn.Module, Callable[[], Tensor] | None]] = [
    # convolutions
    (nn.Conv1d(2, 4, 3, stride=2, padding=1, dilation=2, bias=False), _x(1, 2, 9)),
    (
        nn.Conv2d(4, 6, (3, 5), stride=(2, 1), padding=(1, 2), groups=2, padding_mode="reflect"),
        _x(1, 4, 8, 8),
    ),
    (nn.Conv2d(3, 4, 3, padding="same", dilation=2), _x(1, 3, 8, 8)),
    (nn.Conv3d(2, 2, 3, padding=1, padding_mode="circular", bias=False), _x(1, 2, 4, 4, 4)),
    (nn.ConvTranspose1d(2, 3, 4, stride=2, padding=1, output_padding=1), _x(1, 2, 5)),
    (nn.ConvTranspose2d(4, 2, 2, stride=2, groups=2, bias=False, dilation=2), _x(1, 4, 3, 3)),
    (nn.ConvTranspose3d(2, 2, 3, stride=2, padding=1), _x(1, 2, 3, 3, 3)),
    # linear, embedding
    (nn.Linear(5, 3, bias=False), _x(2, 5)),
    (nn.Bilinear(3, 4, 2, bias=False), None),
    (nn.Identity(), _x(2, 3)),
    (
        nn.Embedding(10, 4, padding_idx=-1, max_norm=2.0, norm_type=1.0, scale_grad_by_freq=True),
        _tokens(2, 3),
    ),
    (nn.EmbeddingBag(10, 4, mode="sum", padding_idx=0, include_last_offset=False), _tokens(2, 3)),
    # norms
    (nn.BatchNorm1d(4, eps=1e-3, momentum=0.2, affine=False), _x(3, 4)),
    (nn.BatchNorm2d(4, momentum=None, track_running_stats=False), _x(2, 4, 3, 3)),
    (nn.BatchNorm3d(2, eps=1e-4, bias=False), _x(2, 2, 2, 2, 2)),
    (nn.SyncBatchNorm(3, momentum=0.3), None),
    (nn.InstanceNorm1d(3, affine=True, track_running_stats=True), _x(2, 3, 5)),
    (nn.InstanceNorm2d(3, eps=1e-3, affine=True, bias=False), _x(2, 3, 4, 4)),
    (nn.InstanceNorm3d(2, momentum=0.5), _x(1, 2, 3, 3, 3)),
    (nn.LayerNorm((3, 4), eps=1e-6, elementwise_affine=True, bias=False), _x(2, 3, 4)),
    (nn.LayerNorm(4, elementwise_affine=False), _x(2, 4)),
    (nn.GroupNorm(2, 4, eps=1e-3, affine=False), _x(2, 4, 3)),
    (nn.RMSNorm([4], eps=1e-4, elementwise_affine=False), _x(2, 4)),
    (nn.LocalResponseNorm(3, alpha=1e-3, beta=0.5, k=2.0), _x(1, 4, 3, 3)),
    (nn.CrossMapLRN2d(3, alpha=1e-3, beta=0.6, k=2), _x(1, 4, 3, 3)),
    # activations
    (nn.ELU(alpha=0.5), _x(2, 3)),
    (nn.CELU(alpha=2.0), _x(2, 3)),
    (nn.SELU(inplace=True), _x(2, 3)),
    (nn.GELU(approximate="tanh"), _x(2, 3)),
    (nn.GLU(dim=0), _x(4, 3)),
    (nn.Hardshrink(lambd=0.2), _x(2, 3)),
    (nn.Hardsigmoid(inplace=True), _x(2, 3)),
    (nn.Hardswish(inplace=True), _x(2, 3)),
    (nn.Hardtanh(min_val=-2.0, max_val=3.0), _x(2, 3)),
    (nn.LeakyReLU(negative_slope=0.2, inplace=True), _x(2, 3)),
    (nn.LogSigmoid(), _x(2, 3)),
    (nn.LogSoftmax(dim=0), _x(2, 3)),
    (nn.Mish(inplace=True), _x(2, 3)),
    (nn.PReLU(num_parameters=3, init=0.1), _x(2, 3)),
    (nn.ReLU(inplace=True), _x(2, 3)),
    (nn.ReLU6(inplace=True), _x(2, 3)),
    (nn.RReLU(lower=0.1, upper=0.2), _x(2, 3)),
    (nn.SiLU(inplace=True), _x(2, 3)),
    (nn.Sigmoid(), _x(2, 3)),
    (nn.Softmax(dim=-1), _x(2, 3)),
    (nn.Softmax2d(), _x(1, 2, 3, 3)),
    (nn.Softmin(dim=1), _x(2, 3)),
    (nn.Softplus(beta=2.0, threshold=10.0), _x(2, 3)),
    (nn.Softshrink(lambd=0.3), _x(2, 3)),
    (nn.Softsign(), _x(2, 3)),
    (nn.Tanh(), _x(2, 3)),
    (nn.Tanhshrink(), _x(2, 3)),
    (nn.Threshold(0.1, 20.0, inplace=True), _x(2, 3)),
    (
        nn.MultiheadAttention(
            8,
            2,
            dropout=0.1,
            bias=False,
            add_bias_kv=True,
            add_zero_attn=True,
            kdim=4,
            vdim=6,
            batch_first=True,
        ),
        None,
    ),
    (nn.MultiheadAttention(8, 4), None),
    # pooling
    (nn.MaxPool1d(3, stride=1, padding=1, dilation=1, ceil_mode=True), _x(1, 2, 7)),
    (nn.MaxPool2d((2, 3), stride=(1, 2), padding=1, return_indices=False), _x(1, 2, 6, 6)),
    (nn.MaxPool3d(2, ceil_mode=True), _x(1, 1, 5, 5, 5)),
    (nn.MaxUnpool1d(2, stride=2), None),
    (nn.MaxUnpool2d(2, stride=2, padding=0), None),
    (nn.MaxUnpool3d(3, stride=2, padding=1), None),
    (nn.AvgPool1d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), _x(1, 2, 7)),
    (nn.AvgPool2d(3, stride=1, padding=1, divisor_override=2), _x(1, 2, 5, 5)),
    (nn.AvgPool3d(2, stride=1, count_include_pad=False), _x(1, 1, 3, 3, 3)),
    (nn.FractionalMaxPool2d(2, output_size=(3, 3)), _x(1, 1, 6, 6)),
    (nn.FractionalMaxPool3d(2, output_ratio=(0.5, 0.5, 0.5)), _x(1, 1, 6, 6, 6)),
    (nn.LPPool1d(2, 3, stride=1, ceil_mode=True), _x(1, 2, 7)),
    (nn.LPPool2d(1.5, (2, 2), stride=1), _x(1, 2, 5, 5)),
    (nn.LPPool3d(2, 2), _x(1, 1, 4, 4, 4)),
    (nn.AdaptiveMaxPool1d(3), _x(1, 2, 8)),
    (nn.AdaptiveMaxPool2d((2, None)), _x(1, 2, 6, 5)),
    (nn.AdaptiveMaxPool3d(2, return_indices=False), _x(1, 1, 4, 4, 4)),
    (nn.AdaptiveAvgPool1d(2), _x(1, 2, 8)),
    (nn.AdaptiveAvgPool2d((1, 1)), _x(1, 2, 4, 4)),
    (nn.AdaptiveAvgPool2d(3), _x(1, 2, 6, 6)),
    (nn.AdaptiveAvgPool3d((1, 2, 2)), _x(1, 1, 4, 4, 4)),
    # padding
    (nn.ReflectionPad1d((1, 2)), _x(1, 2, 5)),
    (nn.ReflectionPad2d(1), _x(1, 2, 4, 4)),
    (nn.ReflectionPad3d((1, 0, 1, 0, 0, 1)), _x(1, 1, 3, 3, 3)),
    (nn.ReplicationPad1d(2), _x(1, 2, 5)),
    (nn.ReplicationPad2d((0, 1, 2, 3)), _x(1, 2, 4, 4)),
    (nn.ReplicationPad3d(1), _x(1, 1, 3, 3, 3)),
    (nn.ZeroPad1d((1, 0)), _x(1, 2, 5)),
    (nn.ZeroPad2d(2), _x(1, 2, 4, 4)),
    (nn.ZeroPad3d((1, 1, 0, 0, 2, 2)), _x(1, 1, 3, 3, 3)),
    (nn.ConstantPad1d(2, 3.5), _x(1, 2, 5)),
    (nn.ConstantPad2d((1, 0, 0, 1), -1.0), _x(1, 2, 4, 4)),
    (nn.ConstantPad3d(1, 0.5), _x(1, 1, 3, 3, 3)),
    (nn.CircularPad1d(1), _x(1, 2, 5)),
    (nn.CircularPad2d((1, 0, 1, 0)), _x(1, 2, 4, 4)),
    (nn.CircularPad3d(1), _x(1, 1, 3, 3, 3)),
    # dropout
    (nn.Dropout(0.25, inplace=True), _x(2, 3)),
    (nn.Dropout1d(0.1), _x(2, 3, 4)),
    (nn.Dropout2d(p=0.3), _x(2, 3, 4, 4)),
    (nn.Dropout3d(0.4), _x(1, 2, 3, 3, 3)),
    (nn.AlphaDropout(0.2), _x(2, 3)),
    (nn.FeatureAlphaDropout(0.2), _x(2, 3, 4)),
    # shapes, vision, distances
    (nn.Flatten(0, 1), _x(2, 3, 4)),
    (nn.Unflatten(1, (2, 3)), _x(2, 6)),
    (nn.Fold(output_size=(4, 4), kernel_size=2, stride=2), _x(1, 8, 4)),
    (nn.Unfold(kernel_size=(2, 3), dilation=1, padding=1, stride=2), _x(1, 2, 5, 5)),
    (nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), _x(1, 2, 3, 3)),
    (nn.Upsample(size=(5, 7), mode="nearest"), _x(1, 2, 3, 3)),
    (
        nn.Upsample(scale_factor=(2.0, 3.0), mode="bicubic", recompute_scale_factor=True),
        _x(1, 1, 3, 3),
    ),
    (nn.UpsamplingNearest2d(scale_factor=3), _x(1, 2, 2, 2)),
    (nn.UpsamplingBilinear2d(size=(4, 6)), _x(1, 2, 2, 2)),
    (nn.PixelShuffle(2), _x(1, 8, 3, 3)),
    (nn.PixelUnshuffle(2), _x(1, 2, 4, 4)),
    (nn.ChannelShuffle(2), _x(1, 4, 3, 3)),
    (nn.CosineSimilarity(dim=0, eps=1e-6), None),
    (nn.PairwiseDistance(p=1.0, eps=1e-5, keepdim=True), None),
    # recurrent
    (
        nn.RNN(
            4,
            6,
            num_layers=2,
            nonlinearity="relu",
            bias=False,
            batch_first=True,
            dropout=0.1,
            bidirectional=True,
        ),
        None,
    ),
    (nn.LSTM(4, 6, num_layers=2, proj_size=3, batch_first=True), None),
    (nn.GRU(4, 5, bidirectional=True, dropout=0.0), None),
    (nn.RNNCell(3, 4, bias=False, nonlinearity="relu"), _x(2, 3)),
    (nn.LSTMCell(3, 4), None),
    (nn.GRUCell(3, 4, bias=False), _x(2, 3)),
    # transformers
    (
        nn.TransformerEncoderLayer(
            8,
            2,
            dim_feedforward=16,
            dropout=0.0,
            activation="gelu",
            layer_norm_eps=1e-6,
            batch_first=True,
            norm_first=True,
            bias=False,
        ),
        _x(2, 3, 8),
    ),
    (nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, activation=nn.SiLU()), _x(3, 2, 8)),
    (nn.TransformerDecoderLayer(8, 4, dim_feedforward=16, dropout=0.2, batch_first=True), None),
    (
        nn.TransformerEncoder(
            nn.TransformerEncoderLayer(8, 2, 16, batch_first=True),
            3,
            norm=nn.LayerNorm(8),
            enable_nested_tensor=False,
            mask_check=False,
        ),
        _x(2, 3, 8),
    ),
    (nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 16), 2, norm=nn.LayerNorm(8)), None),
    (
        nn.Transformer(
            8,
            2,
            num_encoder_layers=1,
            num_decoder_layers=2,
            dim_feedforward=16,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        ),
        None,
    ),
    (
        nn.Transformer(
            8, 2, custom_encoder=nn.Linear(8, 8), custom_decoder=nn.Identity(), batch_first=True
        ),
        None,
    ),
    # containers
    (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2))), _x(2, 3)),
    (nn.Sequential(OrderedDict(proj=nn.Linear(3, 3), act=nn.Tanh())), _x(2, 3)),
    (nn.ModuleList([nn.Linear(2, 2), nn.Dropout(0.1)]), None),
    (nn.ModuleDict({"a": nn.Linear(2, 3), "b": nn.GELU("tanh")}), None),
]


def _id(case: tuple[nn.Module, object]) -> str:
    return type(case[0]).__name__


@pytest.mark.parametrize("case", CASES, ids=[_id(case) for case in CASES])
def test_layer_round_trips_exactly(case: tuple[nn.Module, Callable[[], Tensor] | None]) -> None:
    layer, make_input = case
    model = Circuit(layer)
    config = model.to_config()
    json.dumps(config, allow_nan=False)  # plain data
    rebuilt = Circuit.from_config(json.loads(json.dumps(config)))
    assert rebuilt.to_config() == config
    assert type(rebuilt.get_submodule("0")) is type(layer)
    assert repr(rebuilt) == repr(model)
    expected = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    assert {key: tuple(t.shape) for key, t in rebuilt.state_dict().items()} == expected
    if make_input is not None:
        rebuilt.load_state_dict(model.state_dict())
        model.eval()
        rebuilt.eval()
        x = make_input()
        with torch.no_grad():
            torch.manual_seed(1)
            want = model(x.clone())
            torch.manual_seed(1)
            got = rebuilt(x.clone())
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def test_every_described_class_is_tested_above() -> None:
    tested = {type(layer) for layer, _ in CASES}
    assert set(SPECS) - tested == set()


def test_defaults_are_left_out_and_sizes_collapse() -> None:
    config = Circuit(nn.Conv2d(3, 8, 3, padding=1), nn.LayerNorm(8), nn.ReLU()).to_config()
    assert config["layers"] == [
        {"Conv2d": {"in_channels": 3, "out_channels": 8, "kernel_size": 3, "padding": 1}},
        {"LayerNorm": {"normalized_shape": 8}},
        "ReLU",
    ]
    # A size the constructor keeps as given is written as given: (1, 1) is not 1 here.
    pool = Circuit(nn.AdaptiveAvgPool2d((1, 1))).to_config()["layers"][0]
    assert pool == {"AdaptiveAvgPool2d": {"output_size": [1, 1]}}
