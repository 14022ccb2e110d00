"""The diagram laid out left to right (`direction="right"`): the same rules as the top-down
layout, rows that wrap with their skips live across the wrap, legible text, and every way in
(`visualize`, the HTML page, the command line)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from _diagrams import circuits, input_shapes, models, nested
from _rules import check_rules, lanes_by_column
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_render import assert_legible
from torch import nn

from torch_circuit import Circuit, GetInput, SaveInput
from torch_circuit.diagram.html import circuit_html
from torch_circuit.diagram.layout import layout_circuit
from torch_circuit.diagram.render import draw_layout

ZOO = {name: (build, shapes) for name, build, shapes in models.zoo()}


@pytest.mark.parametrize("expanded", [False, True])
@pytest.mark.parametrize(
    "name",
    [
        "quickstart",
        "unet",
        "conditioned_unet",
        "examples/resnet_mnist",
        "examples/unet_segmentation",
    ],
)
def test_rows_follow_the_rules(name: str, expanded: bool) -> None:
    build, shapes = ZOO[name]
    layout = layout_circuit(build(), expanded=expanded, direction="right", **shapes)
    check_rules(layout)
    assert layout.direction == "right"
    for box in layout.boxes:  # every node of a row sits on the row's axis
        same_row = [b for b in layout.boxes if b.column == box.column]
        assert box.cy == pytest.approx(same_row[0].cy)
    for a, b in zip(layout.boxes, layout.boxes[1:], strict=False):
        assert a.column < b.column or a.x + a.w < b.x  # the flow runs left to right


def test_a_long_model_wraps_into_rows_with_its_skips_live_across() -> None:
    layout = layout_circuit(models.unet(), input_shape=(1, 3, 64, 64), direction="right")
    assert layout.columns > 1 and 0.5 < layout.width / layout.height < 3
    enc1 = next(e for e in layout.edges if e.kind == "skip" and e.labels[0].text.startswith("enc1"))
    rows = lanes_by_column(enc1, layout)
    assert sorted(rows) == list(range(layout.box(enc1.targets[0]).column + 1))
    assert all(rows[r] > max(b.y + b.h for b in layout.boxes if b.column == r) for r in rows)


def test_a_transform_sits_on_the_skip_below_its_label() -> None:
    projection = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
    model = Circuit(
        nn.Conv2d(3, 8, 3, padding=1),
        SaveInput("r"),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        GetInput("r", transform=projection),
    )
    layout = layout_circuit(model, input_shape=(1, 3, 8, 8), direction="right")
    check_rules(layout)
    (skip,) = [e for e in layout.edges if e.kind == "skip"]
    (mark,) = skip.marks
    read = layout.box("3")
    assert mark.x < read.cx < mark.x + mark.w  # centred on the rise into the read
    assert skip.labels[1].y < mark.y  # the label above it
    assert mark.lines[0].startswith("Conv2d 8→16, k1, s2")


@pytest.mark.parametrize("name", ["quickstart", "unet", "transformer"])
def test_rows_are_legible(name: str) -> None:
    build, shapes = ZOO[name]
    layout = layout_circuit(build(), expanded=True, direction="right", **shapes)
    assert_legible(draw_layout(layout))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(folded=st.booleans(), width=st.sampled_from([None, 4.0]), data=st.data())
def test_random_circuits_in_rows_follow_the_rules(
    folded: bool, width: float | None, data: Any
) -> None:
    model = data.draw(circuits())
    layout = layout_circuit(
        model,
        expanded=not folded,
        input_shape=(2, 3),
        input_shapes=input_shapes(model),
        max_column_height=width,
        direction="right",
    )
    check_rules(layout)
    reads = {b.id: layout.graph.read_of(b.id).slots for b in layout.boxes if b.kind == "merge"}
    targets = [t for e in layout.edges if e.kind == "skip" for t in e.targets]
    assert sorted(targets) == sorted(node for node, slots in reads.items() for _ in range(slots))


def test_every_way_in_takes_the_direction(tmp_path: Path) -> None:
    from torch_circuit.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        figure = nested().visualize(tmp_path / "n.png", direction="right")
    layout = layout_circuit(nested(), direction="right")
    assert tuple(figure.get_size_inches()) == pytest.approx((layout.width, layout.height))
    assert "data-view" in circuit_html(nested(), direction="right")
    spec = f"{Path(__file__).resolve().parent.parent / 'examples' / 'quickstart.py'}:build_model"
    assert main(["draw", spec, "-o", str(tmp_path / "q.html"), "--direction", "right"]) == 0
    with pytest.raises(ValueError, match=r"direction must be 'down' .* or 'right' .*'up'"):
        nested().visualize(tmp_path / "x.pdf", direction="up")  # type: ignore[arg-type]
    assert not (tmp_path / "x.pdf").exists()
