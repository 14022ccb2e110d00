"""What a layer is called in a diagram and how it is coloured."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torch_circuit import Circuit, LambdaLayer
from torch_circuit.diagram.describe import describe_layer, format_shape, layer_family, text_width
from torch_circuit.diagram.graph import circuit_graph


def test_boxes_describe_layer_settings_and_parameters() -> None:
    assert describe_layer(nn.Conv2d(3, 64, 3, stride=2, padding=1)) == "Conv2d 3→64, k3, s2, p1"
    assert describe_layer(nn.Conv2d(3, 6, (3, 1), groups=3)) == "Conv2d 3→6, k3×1, g3"
    assert describe_layer(nn.Linear(64, 10)) == "Linear 64→10"
    assert describe_layer(nn.BatchNorm2d(64)) == "BatchNorm2d 64"
    assert describe_layer(nn.LayerNorm(32)) == "LayerNorm 32"
    assert describe_layer(nn.MaxPool2d(2)) == "MaxPool2d k2"
    assert describe_layer(nn.AdaptiveAvgPool2d((1, 1))) == "AdaptiveAvgPool2d →1"
    assert describe_layer(nn.Dropout(0.1)) == "Dropout p=0.1"
    assert describe_layer(nn.MultiheadAttention(64, 4)) == "MultiheadAttention d64, 4 heads"
    assert describe_layer(nn.Embedding(100, 8)) == "Embedding 100×8"
    assert describe_layer(LambdaLayer(torch.flatten)) == "LambdaLayer flatten"
    assert describe_layer(Circuit(nn.ReLU(), nn.ReLU())) == "Circuit 2 layers"
    graph = circuit_graph(Circuit(nn.Linear(3, 4), nn.ReLU()))
    assert graph.nodes[1].lines == ("Linear 3→4", "16 params")
    assert graph.nodes[2].lines == ("ReLU",)


@pytest.mark.parametrize(
    ("module", "family"),
    [
        (nn.Conv1d(1, 1, 1), "conv"),
        (nn.ConvTranspose2d(1, 1, 1), "conv"),
        (nn.Linear(1, 1), "linear"),
        (nn.BatchNorm1d(1), "norm"),
        (nn.GroupNorm(1, 2), "norm"),
        (nn.GELU(), "activation"),
        (nn.Softmax(dim=1), "activation"),
        (nn.AvgPool2d(2), "pooling"),
        (nn.MultiheadAttention(4, 1), "attention"),
        (nn.TransformerEncoderLayer(8, 2), "attention"),
        (nn.Dropout2d(), "dropout"),
        (nn.Flatten(), "other"),
    ],
)
def test_layer_families(module: nn.Module, family: str) -> None:
    assert layer_family(module) == family


def test_shapes_and_text_widths() -> None:
    assert format_shape((1, 64, 32, 32)) == "(1, 64, 32, 32)"
    assert format_shape(None) == ""
    assert text_width("abcd", 8) == pytest.approx(2 * text_width("ab", 8))
    assert text_width("abcd", 16) == pytest.approx(2 * text_width("abcd", 8))
