"""The diagram layout as plain data: boxes, frames, lanes and edges obey the drawing rules."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _diagrams import circuits, input_shapes, models, nested
from _rules import check_rules, lanes_by_column
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from torch_circuit import Circuit, EndBlock, GetInput, LambdaLayer, SaveInput, StartBlock
from torch_circuit.diagram.layout import layout_circuit
from torch_circuit.diagram.view import block_declarations, drawn_size
from torch_circuit.shapes import ShapeError, trace_shapes

# --- The committed diagrams ---


@pytest.mark.parametrize("folded", [True, False])
def test_quickstart_follows_the_rules(folded: bool) -> None:
    layout = layout_circuit(models.quickstart(), show_repeats=folded, input_shape=(1, 3, 32, 32))
    check_rules(layout)
    labels = [frame.label for frame in layout.frames]
    if folded:
        assert labels == ["resnet ×3"]
        assert len([b for b in layout.boxes if b.kind == "layer"]) == 6 + 6
    else:
        assert labels == ["resnet [1/3]", "resnet [2/3]", "resnet [3/3]"]
        assert len([b for b in layout.boxes if b.kind == "layer"]) == 6 + 3 * 6


def test_quickstart_folded_wraps_rather_than_tower_and_labels_the_skip() -> None:
    layout = layout_circuit(models.quickstart())
    check_rules(layout)
    assert layout.columns == 2  # one column would be 3.4 times taller than wide
    assert layout.height <= 3 * layout.width
    (skip,) = [edge for edge in layout.edges if edge.kind == "skip"]
    texts = [label.text for label in skip.labels]
    assert texts == ["residual", "residual · add"]
    assert skip.source == "resnet.0.4" and skip.targets == ("resnet.0.11",)


def test_unet_nested_cat_skips_get_nested_lanes() -> None:
    layout = layout_circuit(models.unet(), input_shape=(1, 3, 64, 64))
    check_rules(layout)
    skips = {edge.labels[0].text.split()[0]: edge for edge in layout.edges if edge.kind == "skip"}
    assert sorted(skips) == ["enc1", "enc2", "enc3", "enc4"]
    assert layout.columns > 1 and layout.height <= 3 * layout.width  # wraps, skips live
    # enc4 is innermost; in every column, every outer skip runs in a lane further out.
    lanes = {name: lanes_by_column(edge, layout) for name, edge in skips.items()}
    for column in range(layout.columns):
        xs = [
            lanes[name][column]
            for name in ("enc4", "enc3", "enc2", "enc1")
            if column in lanes[name]
        ]
        assert xs == sorted(xs), (column, xs)
    enc1 = skips["enc1"]
    last_read = layout.box(enc1.targets[-1]).column
    assert sorted(lanes["enc1"]) == list(range(last_read + 1)) and last_read > 0
    assert all(label.text.endswith("· cat") for e in skips.values() for label in e.labels[1:])


def test_transformer_expanded_wraps_into_columns() -> None:
    tokens = torch.zeros(1, 16, dtype=torch.long)
    layout = layout_circuit(models.transformer(), show_repeats=False, input_shape=tokens)
    check_rules(layout)
    assert len(layout.frames) == 12
    assert layout.columns > 1
    # A skip name reused by both residuals of a layer is two skips, each with one reader.
    skips = [edge for edge in layout.edges if edge.kind == "skip"]
    assert len(skips) == 24 and all(len(edge.targets) == 1 for edge in skips)


def test_200_layer_model_grows_into_columns_with_full_size_text() -> None:
    model = models.deep_mlp()
    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.BatchNorm1d | nn.ReLU)]
    assert len(layers) == 200
    layout = layout_circuit(model, show_repeats=False, input_shape=(8, 32))
    check_rules(layout)
    assert len([b for b in layout.boxes if b.kind == "layer"]) == 200
    assert layout.columns >= 4
    assert 0.5 < layout.width / layout.height < 2.0  # wrapped, not one endless column


ZOO = {name: (build, shapes) for name, build, shapes in models.zoo()}


@pytest.mark.parametrize("expanded", [False, True])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_no_diagram_of_the_zoo_is_taller_than_three_times_its_width(
    name: str, expanded: bool
) -> None:
    build, shapes = ZOO[name]
    layout = layout_circuit(build(), expanded=expanded, **shapes)
    assert layout.height <= 3 * layout.width, (layout.width, layout.height)


@pytest.mark.parametrize("expanded", [False, True])
def test_the_conditioned_unet_follows_the_rules(expanded: bool) -> None:
    build, shapes = ZOO["conditioned_unet"]
    check_rules(layout_circuit(build(), expanded=expanded, **shapes))


def test_the_examples_unet_wraps_with_its_skips_live_across_columns() -> None:
    build, shapes = ZOO["examples/unet_segmentation"]
    layout = layout_circuit(build(), **shapes)
    check_rules(layout)
    wrapped = [e for e in layout.edges if e.kind == "skip" and len(lanes_by_column(e, layout)) > 1]
    assert layout.columns >= 2 and wrapped  # before: one column 1634 x 3203 px
    assert layout.height <= 2 * layout.width


def test_a_50_block_stage_wraps_and_its_long_skip_crosses_every_column() -> None:
    build, shapes = ZOO["resnet_stage_50"]
    layout = layout_circuit(build(), expanded=True, **shapes)
    check_rules(layout)
    assert len(layout.frames) == 50 and layout.columns >= 5  # before: one column 48,520 px tall
    assert 0.5 < layout.width / layout.height < 2.0
    (stem,) = [e for e in layout.edges if e.kind == "skip" and e.source == "1"]
    read = layout.box(stem.targets[0])
    assert sorted(lanes_by_column(stem, layout)) == list(range(read.column + 1))
    assert read.column == layout.columns - 1  # read after the stage, in the last column


def test_user_column_height_is_respected_where_the_flow_allows() -> None:
    layout = layout_circuit(models.deep_mlp(repeats=10), show_repeats=False, max_column_height=8)
    check_rules(layout)
    assert all(box.y + box.h <= 8 + 1.0 for box in layout.boxes)  # plus top and bottom room


# --- Folding, nesting and labels ---


@pytest.mark.parametrize("folded", [True, False])
def test_nested_blocks_draw_nested_frames(folded: bool) -> None:
    layout = layout_circuit(nested(), show_repeats=folded)
    check_rules(layout)
    frames = {frame.id: frame for frame in layout.frames}
    if folded:
        assert [f.label for f in layout.frames] == ["stage ×2", "unit ×3 · shared"]
        assert frames["stage.0.unit"].parent == "stage"
    else:
        assert len(layout.frames) == 2 + 2 * 3
        assert frames["stage.1.unit.2"].label == "unit [3/3] · shared"
        assert frames["stage.1.unit.2"].parent == "stage.1"


def test_outer_skip_read_in_every_repeat_branches_from_one_lane() -> None:
    layout = layout_circuit(nested(), show_repeats=False)
    (outer,) = [e for e in layout.edges if e.kind == "skip" and e.source == "1"]
    assert len(outer.targets) == 6  # 2 stage repeats × 3 unit repeats
    assert len(outer.paths) == 6
    lanes = lanes_by_column(outer, layout)
    for target, path in zip(outer.targets[:-1], outer.paths[1:], strict=True):
        assert path[0][0] == lanes[layout.box(target).column]  # off its column's lane
    assert [label.text for label in outer.labels[1:]] == ["outer · mul"] * 6
    # It passes outside every frame it runs beside.
    assert all(lanes[f.column] > f.x + f.w for f in layout.frames if f.column in lanes)


def gate(current: torch.Tensor, saved: torch.Tensor) -> torch.Tensor:
    return current * torch.sigmoid(saved)


def test_skip_labels_name_the_op_and_draw_transforms_on_the_edge() -> None:
    model = Circuit(
        nn.Conv2d(3, 8, 3, padding=1),
        SaveInput("a", transform=nn.Conv2d(8, 16, 1)),
        SaveInput("b"),
        SaveInput("c"),
        nn.Conv2d(8, 16, 3, padding=1),
        GetInput("a"),
        GetInput("b", op=gate, transform=nn.Conv2d(8, 16, 1)),
        GetInput("c", op=lambda x, y: x + y.mean()),
    )
    layout = layout_circuit(model, input_shape=(1, 3, 8, 8))
    check_rules(layout)
    edges = {e.source: e for e in layout.edges if e.kind == "skip"}
    assert edges["1"].labels[1].text == "a · add"
    assert edges["2"].labels[1].text == "b · gate"
    assert edges["3"].labels[1].text == "c · lambda"
    assert edges["1"].labels[0].text == "a (1, 16, 8, 8)"  # the saved value, transformed
    for source, holder in (("1", "1"), ("2", "6")):
        (mark,) = edges[source].marks
        assert mark.lines == ("Conv2d 8→16, k1 · 144 params",)
        line_y = layout.box(holder).cy
        assert mark.y < line_y < mark.y + mark.h  # centred on the edge's horizontal line
        line = next(s for s in edges[source].segments() if s[0][1] == s[1][1] == line_y)
        assert min(line[0][0], line[1][0]) <= mark.x and mark.x + mark.w <= max(
            line[0][0], line[1][0]
        )


def test_a_projection_shortcut_shows_its_layers_and_a_long_one_folds() -> None:
    projection = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
    long = nn.Sequential(*(nn.Linear(4, 4) for _ in range(5)))
    model = Circuit(
        nn.Conv2d(3, 8, 3, padding=1),
        SaveInput("r"),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        GetInput("r", transform=projection),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 4),
        SaveInput("h", transform=long),
        nn.ReLU(),
        GetInput("h"),
    )
    layout = layout_circuit(model, input_shape=(1, 3, 8, 8))
    check_rules(layout)
    edges = {e.source: e for e in layout.edges if e.kind == "skip"}
    (mark,) = edges["1"].marks
    # Too wide for one line even in the widest box: the count goes on a line of its own.
    assert mark.lines == ("Conv2d 8→16, k1, s2", "128 params", "BatchNorm2d 16 · 32 params")
    (mark,) = edges["6"].marks
    assert mark.lines == ("Sequential: 5 layers", "100 params")  # one box for a long one
    read = layout.box("3")
    assert edges["1"].marks[0].h < read.h  # the row makes room for the mark
    label = edges["1"].labels[1]
    assert label.y < edges["1"].marks[0].y  # the skip's label sits above its mark


@pytest.mark.parametrize("direction", ["down", "right"])
def test_a_transform_mark_sits_clear_of_the_lanes_inside_it(direction: str) -> None:
    # The read of 'outer' (a lane outside the frame) is inside the span of 's' (lane 0): its
    # transform's mark must stay left of lane 0, where no other lane runs.
    model = Circuit(
        SaveInput("outer"),
        nn.ReLU(),
        StartBlock("b", num_repeats=2),
        SaveInput("s"),
        nn.ReLU(),
        GetInput("outer", transform=nn.Linear(3, 3)),
        nn.ReLU(),
        GetInput("s"),
        EndBlock("b"),
    )
    layout = layout_circuit(model, direction=direction, max_column_height=100.0)
    check_rules(layout)
    assert layout.columns == 1
    (outer,) = [e for e in layout.edges if e.id == "skip:0"]
    (inner,) = [e for e in layout.edges if e.id == "skip:b.0.3"]
    assert outer.lane is not None and inner.lane is not None and outer.lane > inner.lane


def test_crossing_skips_get_distinct_lanes() -> None:
    model = Circuit(
        SaveInput("a"),
        nn.ReLU(),
        SaveInput("b"),
        nn.ReLU(),
        GetInput("a"),
        nn.ReLU(),
        GetInput("b"),
    )
    layout = layout_circuit(model)
    check_rules(layout)
    lanes = sorted(e.lane for e in layout.edges if e.kind == "skip" and e.lane is not None)
    assert lanes == [0, 1]


# --- Shapes, traced for the edges ---


def test_trace_shapes_copies_no_data_and_leaves_the_model_alone() -> None:
    model = models.quickstart()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace = trace_shapes(model, (1, 3, 32, 32))
    assert trace.output == (1, 10)
    assert all(p.device.type == "cpu" for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert model.training


def test_trace_falls_back_to_a_real_pass_for_data_dependent_layers() -> None:
    model = Circuit(nn.Linear(4, 4), LambdaLayer(lambda x: x[:, : 2 + int((x * 0).sum().item())]))
    model.train()
    trace = trace_shapes(model, (3, 4))
    assert trace.output == (3, 2)
    assert model.training and all(m.training for m in model.modules())


def test_an_input_the_model_cannot_take_names_the_layer() -> None:
    with pytest.raises(
        ShapeError,
        match=r"position 0 \(Conv2d\) at the top level receives a "
        r"tensor of shape \(1, 1, 32, 32\)",
    ):
        trace_shapes(models.quickstart(), (1, 1, 32, 32))
    model = Circuit(
        nn.Linear(4, 4),
        StartBlock("stack", num_repeats=3),
        nn.Linear(4, 8),
        nn.Linear(8, 4),
        EndBlock("stack"),
        nn.Linear(8, 1),
    )
    with pytest.raises(ShapeError, match=r"position 5 \(Linear\) at the top level .*\(2, 4\)"):
        trace_shapes(model, (2, 4))
    model = Circuit(
        StartBlock("grow", num_repeats=3), nn.Linear(4, 4), nn.Linear(4, 8), EndBlock("grow")
    )
    with pytest.raises(
        ShapeError,
        match=r"position 1 \(Linear\) in repeat 1 of 3 of block "
        r"'grow' \(StartBlock at position 0\) receives a tensor of shape \(2, 8\)",
    ):
        trace_shapes(model, (2, 4))


@pytest.mark.parametrize(
    ("shape", "error", "message"),
    [
        ("1x3", TypeError, "sequence of ints"),
        ((1, 0, 3), ValueError, "positive ints"),
        ((), ValueError, "non-empty"),
        ((1, 2.5), ValueError, "positive ints"),
    ],
)
def test_malformed_input_shapes_are_rejected(shape: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        trace_shapes(models.quickstart(), shape)


# --- Random circuits keep the rules ---


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=circuits(), folded=st.booleans(), height=st.sampled_from([None, 3.0]))
def test_random_circuits_follow_the_rules(model: Circuit, folded: bool, height: float) -> None:
    layout = layout_circuit(
        model,
        show_repeats=folded,
        input_shape=(2, 3),
        input_shapes=input_shapes(model),
        max_column_height=height,
    )
    check_rules(layout)
    reads = {b.id: layout.graph.read_of(b.id).slots for b in layout.boxes if b.kind == "merge"}
    targets = [t for e in layout.edges if e.kind == "skip" for t in e.targets]
    # Every read is reached by its skips, one for each value it takes.
    assert sorted(targets) == sorted(node for node, slots in reads.items() for _ in range(slots))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=circuits(), data=st.data())
def test_random_views_of_random_circuits_follow_the_rules(model: Circuit, data: Any) -> None:
    """Every view an HTML page can show (any set of expanded blocks) keeps the rules, and
    draws what `drawn_size` says, before any walk."""
    blocks = [block.position for block in block_declarations(model.nodes)]
    view = (
        frozenset(data.draw(st.lists(st.sampled_from(blocks), unique=True)))
        if blocks
        else frozenset()
    )
    layout = layout_circuit(model, view=view, input_shape=(2, 3), input_shapes=input_shapes(model))
    check_rules(layout)
    ends = 1 + len(model.input_nodes) + (layout.graph.nodes[-1].kind == "output")
    assert len(layout.boxes) == drawn_size(model.nodes, view) + ends
    for frame in layout.graph.frames:
        assert (frame.repeat is not None) == (frame.position in view)


def test_the_rule_checker_catches_violations() -> None:
    import dataclasses

    layout = layout_circuit(models.unet(), max_column_height=100.0)  # one column
    first, second = layout.boxes[1], layout.boxes[2]
    moved = dataclasses.replace(second, y=first.y + first.h / 2)
    boxes = tuple(moved if box is second else box for box in layout.boxes)
    with pytest.raises(AssertionError, match="overlap"):
        check_rules(dataclasses.replace(layout, boxes=boxes))
    skips = [edge for edge in layout.edges if edge.kind == "skip"]
    same_lane = dataclasses.replace(skips[0], lane=skips[1].lane)
    edges = tuple(same_lane if edge is skips[0] else edge for edge in layout.edges)
    with pytest.raises(AssertionError, match="overlap in one lane"):
        check_rules(dataclasses.replace(layout, edges=edges))
    flow = next(edge for edge in layout.edges if edge.kind == "flow")
    doubled = tuple([*layout.edges, dataclasses.replace(flow, id="copy")])
    with pytest.raises(AssertionError, match="share a segment"):
        check_rules(dataclasses.replace(layout, edges=doubled))
    far = dataclasses.replace(
        flow, id="far", source="x", targets=("y",), paths=(((0.0, 0.0), (layout.width, 5.0)),)
    )
    with pytest.raises(AssertionError):
        check_rules(dataclasses.replace(layout, edges=(*layout.edges, far)))


def test_overlong_text_is_cut_to_fit_the_widest_box() -> None:
    def a_function_with_a_very_long_descriptive_name_that_goes_on_and_on(x: Any) -> Any:
        return x

    long_block = "a_block_whose_name_is_far_too_long_to_fit_in_any_reasonable_frame_label"
    model = Circuit(
        LambdaLayer(a_function_with_a_very_long_descriptive_name_that_goes_on_and_on),
        StartBlock(long_block, num_repeats=2),
        SaveInput("a_skip_name_that_is_also_much_longer_than_anyone_would_like_to_read"),
        nn.ReLU(),
        GetInput("a_skip_name_that_is_also_much_longer_than_anyone_would_like_to_read"),
        EndBlock(long_block),
    )
    layout = layout_circuit(model)
    check_rules(layout)
    (box,) = [b for b in layout.boxes if b.kind == "layer" and b.id == "0"]
    assert box.w == pytest.approx(3.6)
    assert box.lines[0].startswith("LambdaLayer a_function") and box.lines[0].endswith("…")
    texts = [label.text for e in layout.edges for label in e.labels] + [
        label.text for label in layout.labels
    ]
    skip_name = "a_skip_name_that_is_also_much_longer_than_anyone_would_like_to_read"
    save_text, read_text = [text for text in texts if text.startswith("a_skip")]
    frame_text = next(text for text in texts if text.startswith("a_block"))
    # The name is cut; what follows it (the op, the repeat count) is kept.
    for text, tail in ((save_text, ""), (read_text, " · add"), (frame_text, " ×2")):
        head = text.removesuffix("…" + tail)
        assert head != text and len(head) > 10
        assert (skip_name if text is not frame_text else long_block).startswith(head)
