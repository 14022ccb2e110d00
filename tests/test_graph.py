"""What a diagram shows before any position is chosen: nodes, frames, skips, the shapes on the
edges, and a skip's transform as its layers."""

from __future__ import annotations

import itertools

import pytest
import torch
from _diagrams import models
from torch import nn

from torch_circuit import Circuit, EndBlock, GetInput, LambdaLayer, SaveInput, StartBlock
from torch_circuit.diagram.geometry import GAP
from torch_circuit.diagram.graph import circuit_graph
from torch_circuit.diagram.labels import transform_layers
from torch_circuit.diagram.layout import layout_circuit
from torch_circuit.shapes import ShapeError


def test_edge_shapes_match_a_real_forward() -> None:
    model = models.quickstart()
    seen: dict[str, tuple[int, ...]] = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: seen.__setitem__(name, tuple(out.shape))
        )
        for name, module in model.named_modules()
        if name and not list(module.children())
    ]
    x = torch.randn(2, 3, 16, 16)
    expected_output = tuple(model(x).shape)
    for hook in hooks:
        hook.remove()
    layout = layout_circuit(model, show_repeats=False, input_shape=(2, 3, 16, 16))
    graph = layout.graph
    for previous, node in itertools.pairwise(graph.nodes):
        if previous.kind == "layer":
            assert node.in_shape == seen[previous.key], previous.key
    assert graph.nodes[-1].in_shape == expected_output
    shape_labels = [label.text for e in layout.edges for label in e.labels if label.kind == "shape"]
    assert len(shape_labels) == len(graph.nodes) - 1  # every edge
    into_output = next(e for e in layout.edges if e.targets == ("output",))
    assert into_output.labels[0].text == "(2, 10)"
    assert into_output.labels[0].y == pytest.approx(layout.box("output").y - GAP / 2)


def test_folded_edge_leaving_a_block_carries_the_last_repeat_output() -> None:
    model = Circuit(
        StartBlock("grow", num_repeats=3),
        SaveInput("x"),
        nn.Linear(4, 4),
        GetInput("x", op="cat"),  # doubles the features each repeat
        EndBlock("grow"),
        nn.Flatten(),
    )
    with pytest.raises(ShapeError):  # the second repeat's Linear expects 4, gets 8
        layout_circuit(model, input_shape=(1, 4))
    model = Circuit(
        StartBlock("grow", num_repeats=3),
        SaveInput("x"),
        nn.ReLU(),
        GetInput("x", op="cat"),
        EndBlock("grow"),
        nn.Flatten(),
    )
    graph = layout_circuit(model, input_shape=(1, 4)).graph
    assert graph.node("5").in_shape == (1, 32)  # 4 → 8 → 16 → 32
    assert graph.node("grow.0.2").in_shape == (1, 4)  # inside the frame: the first repeat


def test_edges_after_a_value_that_is_not_a_tensor_carry_no_shape() -> None:
    model = Circuit(
        nn.Linear(4, 4),
        StartBlock("pair", num_repeats=2),
        LambdaLayer(lambda x: (x, x)),  # a tuple: the edges after it have no tensor shape
        LambdaLayer(lambda pair: pair[0] + pair[1]),
        EndBlock("pair"),
        LambdaLayer(lambda x: (x,)),
        LambdaLayer(lambda t: t[0]),
    )
    for expanded in (False, True):
        graph = circuit_graph(model, input_shape=(2, 4), expanded=expanded)
        shapes = {node.id: (node.in_shape, node.out_shape) for node in graph.nodes}
        assert shapes["pair.0.2"] == ((2, 4), None)
        assert shapes["pair.0.3"] == (None, (2, 4))  # the right shape again, not a stale one
        assert shapes["5"] == ((2, 4), None)
        assert shapes["6"] == (None, (2, 4))
        assert graph.nodes[-1].in_shape == (2, 4)
    layout = layout_circuit(model, input_shape=(2, 4))
    into = {edge.targets[0]: edge for edge in layout.edges if edge.kind == "flow"}
    assert into["pair.0.3"].labels == () and into["6"].labels == ()
    assert into["pair.0.2"].labels[0].text == "(2, 4)"


def test_a_transform_is_described_layer_by_layer() -> None:
    projection = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
    assert transform_layers(SaveInput("r", transform=projection)) == (
        "Conv2d 8→16, k1, s2 · 128 params",
        "BatchNorm2d 16 · 32 params",
    )
    assert transform_layers(GetInput("r", transform=nn.ReLU())) == ("ReLU",)
    long = nn.Sequential(*(nn.Linear(2, 2) for _ in range(4)))
    assert transform_layers(GetInput("r", transform=long)) == ("Sequential: 4 layers · 24 params",)
    assert transform_layers(SaveInput("r")) == ()
    graph = circuit_graph(Circuit(SaveInput("r"), nn.ReLU(), GetInput("r", transform=projection)))
    (skip,) = graph.skips
    assert skip.reads[0].transform == "Sequential" and len(skip.reads[0].transform_layers) == 2


def test_frames_name_their_declaration() -> None:
    graph = circuit_graph(models.quickstart(), expanded=True)
    assert {(f.block, f.position, f.num_repeats) for f in graph.frames} == {("resnet", 3, 3)}
    assert [f.repeat for f in graph.frames] == [0, 1, 2]
    assert graph.order("input") == 0 and graph.order("output") == len(graph.nodes) - 1
