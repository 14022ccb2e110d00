"""Diagrams of the dataflow beyond one tensor: named inputs as entries with lanes to their
readers, outputs as taps, reads of several names joining one merge, push/pop stacks paired
level by level, named layers and layers built per repeat; in the graph, the layout (both
directions), the static and the interactive renderers, and DOT/Mermaid."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
from _rules import check_rules
from test_render import assert_legible
from torch import Tensor, nn

from torch_circuit import Circuit, EndBlock, GetInput, Output, PerRepeat, SaveInput, StartBlock
from torch_circuit.diagram.geometry import MERGE_R
from torch_circuit.diagram.graph import circuit_graph
from torch_circuit.diagram.html import circuit_html
from torch_circuit.diagram.layout import layout_circuit
from torch_circuit.diagram.render import draw_layout
from torch_circuit.diagram.svg import layout_svg
from torch_circuit.diagram.text import to_dot, to_mermaid


def attend(x: Tensor, memory: Tensor, mask: Tensor) -> Tensor:
    return x + memory * mask


def decoder() -> Circuit:
    """Two named inputs, a read of both, a read of one, outputs per repeat and at the end, and
    a named layer."""
    return Circuit(
        ("embed", nn.Linear(4, 4)),
        StartBlock("layer", num_repeats=3),
        SaveInput("x"),
        GetInput(("memory", "mask"), op=attend),
        nn.ReLU(),
        GetInput("mask", op=torch.mul),
        GetInput("x"),
        Output("hidden"),
        EndBlock("layer"),
        ("head", nn.Linear(4, 2)),
        Output("logits"),
        inputs=("memory", "mask"),
    )


SHAPES: dict[str, Any] = {"memory": (1, 4), "mask": (1, 4)}


def unet(levels: int = 3) -> Circuit:
    """An encoder pushing per level, a decoder popping, widths per level from `PerRepeat`
    (StartBlock positions: `down` 0, `up` 4)."""
    return Circuit(
        StartBlock("down", num_repeats=levels),
        SaveInput("skip", push=True),
        PerRepeat(lambda i, n: nn.Linear(4, 4)),
        EndBlock("down"),
        StartBlock("up", num_repeats=levels),
        GetInput("skip", pop=True),
        PerRepeat(lambda i, n: nn.Linear(4 * 2**i, 4 * 2 ** (i + 1))),
        EndBlock("up"),
    )


def skips_by_name(graph: Any) -> dict[str, list[tuple[str, list[str]]]]:
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for skip in graph.skips:
        found.setdefault(skip.name, []).append((skip.save, [read.node for read in skip.reads]))
    return found


# --- Named inputs ---


def test_named_inputs_are_entries_before_the_input_with_a_lane_to_each_reader() -> None:
    graph = circuit_graph(decoder(), input_shape=(1, 4), input_shapes=SHAPES)
    assert [(n.id, n.kind) for n in graph.nodes[:3]] == [
        ("input:memory", "entry"),
        ("input:mask", "entry"),
        ("input", "input"),
    ]
    assert graph.node("input:mask").lines == ("mask", "(1, 4)")
    assert graph.node("input:mask").in_shape is None  # not on the flow
    skips = skips_by_name(graph)
    assert skips["memory"] == [("input:memory", ["layer.0.3"])]
    assert skips["mask"] == [("input:mask", ["layer.0.3", "layer.0.5"])]
    assert [n.id for n in graph.flow][:2] == ["input", "embed"]


@pytest.mark.parametrize("direction", ["down", "right"])
def test_an_entry_is_off_the_flow_and_its_lane_leaves_from_its_side(direction: str) -> None:
    layout = layout_circuit(decoder(), input_shape=(1, 4), input_shapes=SHAPES, direction=direction)
    check_rules(layout)
    flows = [e for e in layout.edges if e.kind == "flow"]
    assert not any(e.source.startswith("input:") for e in flows)
    assert flows[0].source == "input"
    entry = layout.box("input:mask")
    (lane,) = [e for e in layout.edges if e.id == "skip:input:mask"]
    start = lane.paths[0][0]
    if direction == "down":
        assert start == pytest.approx((entry.x + entry.w, entry.cy))
        assert entry.y < layout.box("input").y  # above the input, in the first column
    else:
        assert start == pytest.approx((entry.cx, entry.y + entry.h))
        assert entry.x < layout.box("input").x
    # The entry names itself; of its reads, the one of two names is labelled at its first.
    assert [label.text for label in lane.labels] == ["mask · mul"]


def test_input_shapes_need_the_input_shape_and_every_required_input(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match=r"input_shapes gives the named inputs' shapes, but"):
        circuit_graph(decoder(), input_shapes=SHAPES)
    path = tmp_path / "d.png"
    with pytest.raises(ValueError, match=r"no shape for the input 'memory'"):
        decoder().visualize(path, input_shape=(1, 4), input_shapes={"mask": (1, 4)})
    assert not path.exists()


def test_hovering_an_entry_says_what_forward_takes() -> None:
    model = Circuit(
        GetInput("mask", op=torch.mul), GetInput("t", op=torch.add), inputs={"mask": None, "t": 3}
    )
    page = circuit_html(model)
    assert "named input 'mask' of forward (default None); read at positions 0" in page
    assert "named input 't' of forward (default 3); read at positions 1" in page


def test_every_way_in_takes_input_shapes(tmp_path: Any) -> None:
    model = decoder()
    mask = torch.ones(1, 4, dtype=torch.bool)
    shapes = {"memory": (1, 4), "mask": mask}
    dot = to_dot(model, input_shape=(1, 4), input_shapes=shapes)
    assert 'label="mask\\n(1, 4)", style=rounded, shape=box' in dot
    assert "(1, 4)" in to_mermaid(model, input_shape=(1, 4), input_shapes=shapes)
    page = circuit_html(model, input_shape=(1, 4), input_shapes=shapes)
    assert '"input:mask": {"repr": "named input \'mask\' of forward (required); read at ' in page
    figure = model.visualize(tmp_path / "d.svg", input_shape=(1, 4), input_shapes=shapes)
    layout = layout_circuit(model, input_shape=(1, 4), input_shapes=shapes)
    assert tuple(figure.get_size_inches()) == pytest.approx((layout.width, layout.height))


# --- Outputs ---


@pytest.mark.parametrize(
    ("expanded", "labels"),
    [(False, ["hidden ×3", "logits"]), (True, ["hidden[0]", "hidden[1]", "hidden[2]", "logits"])],
)
def test_outputs_are_taps_named_once_per_run_and_replace_the_result(
    expanded: bool, labels: list[str]
) -> None:
    graph = circuit_graph(decoder(), expanded=expanded)
    taps = [node for node in graph.nodes if node.kind == "tap"]
    assert [tap.lines[0] for tap in taps] == labels
    assert taps[0].key == "layer.0.7"  # the Output marker's own key
    assert graph.nodes[-1].kind == "tap"  # no 'output' node: the circuit returns its outputs
    layout = layout_circuit(decoder(), expanded=expanded)
    check_rules(layout)
    (tap_edge,) = [e for e in layout.edges if e.id == "tap:layer.0.7"]
    (mark,) = tap_edge.marks
    tap = layout.box("layer.0.7")
    assert tap_edge.paths[0][0][0] > tap.cx and mark.x > tap.cx  # off the flow, to the right
    assert mark.lines == (labels[0],)


def test_a_tap_in_nested_blocks_counts_the_runs_it_stands_for() -> None:
    model = Circuit(
        StartBlock("outer", num_repeats=2),
        StartBlock("inner", num_repeats=3),
        nn.ReLU(),
        Output("h"),
        EndBlock("inner"),
        EndBlock("outer"),
    )
    labels = {
        view: [n.lines[0] for n in circuit_graph(model, view=view).nodes if n.kind == "tap"]
        for view in (False, True, frozenset({0}), frozenset({1}))
    }
    assert labels[False] == ["h ×6"]
    assert labels[True] == [f"h[{i}]" for i in range(6)]
    assert labels[frozenset({0})] == ["h ×3", "h ×3"]  # outer expanded, inner folded
    assert labels[frozenset({1})] == ["h ×2", "h ×2", "h ×2"]
    circuit_without_outputs = Circuit(nn.ReLU())
    assert circuit_graph(circuit_without_outputs).nodes[-1].kind == "output"


# --- Reads of several names ---


@pytest.mark.parametrize("direction", ["down", "right"])
def test_each_name_of_a_read_joins_the_merge_at_its_own_place(direction: str) -> None:
    layout = layout_circuit(decoder(), direction=direction)
    check_rules(layout)
    merge = layout.box("layer.0.3")

    def arrival(skip_id: str) -> tuple[float, float]:
        (edge,) = [e for e in layout.edges if e.id == skip_id]
        (end,) = [p[-1] for p in edge.paths if math.dist(p[-1], (merge.cx, merge.cy)) < 0.2]
        return end

    memory, mask = arrival("skip:input:memory"), arrival("skip:input:mask")
    assert memory != mask
    for end in (memory, mask):  # both on the merge's outline
        assert math.dist(end, (merge.cx, merge.cy)) == pytest.approx(MERGE_R)
    labels = [label.text for e in layout.edges for label in e.labels]
    assert labels.count("memory, mask · attend") == 1  # labelled once
    dot, mermaid = to_dot(decoder()), to_mermaid(decoder())
    assert 'label="memory · attend"' in dot and 'label="mask · attend"' in dot
    assert '-.->|"memory · attend"|' in mermaid and '-.->|"mask · attend"|' in mermaid


def test_a_name_read_twice_by_one_read_arrives_twice() -> None:
    model = Circuit(SaveInput("k"), nn.ReLU(), GetInput(("k", "k"), op=lambda x, a, b: x + a * b))
    layout = layout_circuit(model)
    check_rules(layout)
    (skip,) = [e for e in layout.edges if e.kind == "skip"]
    assert len(skip.paths) == 2 and skip.paths[0][-1] != skip.paths[1][-1]


# --- Push and pop ---


def test_the_folded_encoder_push_joins_the_folded_decoder_pop() -> None:
    graph = circuit_graph(unet())
    assert skips_by_name(graph) == {"skip": [("down.0.1", ["up.0.5"])]}
    assert graph.skip_of("down.0.1").label == "skip · push"
    assert graph.read_of("up.0.5").label == "skip · add · pop"
    check_rules(layout_circuit(unet()))


def test_expanded_pushes_and_pops_pair_level_by_level_and_nest() -> None:
    graph = circuit_graph(unet(), expanded=True)
    assert skips_by_name(graph)["skip"] == [
        ("down.0.1", ["up.2.5"]),
        ("down.1.1", ["up.1.5"]),
        ("down.2.1", ["up.0.5"]),
    ]
    layout = layout_circuit(unet(), expanded=True, max_column_height=100.0)
    check_rules(layout)
    lanes = {e.source: e.lane for e in layout.edges if e.kind == "skip"}
    assert lanes["down.0.1"] > lanes["down.1.1"] > lanes["down.2.1"]  # the outer level outside


def test_a_partly_folded_view_pairs_as_the_stacks_do() -> None:
    # Encoder expanded, decoder folded: the one folded pop takes all three pushes.
    graph = circuit_graph(unet(), view=frozenset({0}))
    assert skips_by_name(graph)["skip"] == [
        ("down.0.1", ["up.0.5"]),
        ("down.1.1", ["up.0.5"]),
        ("down.2.1", ["up.0.5"]),
    ]
    assert [r.slot for s in graph.skips for r in s.reads] == [2, 1, 0]
    check_rules(layout_circuit(unet(), view=frozenset({0})))
    # Encoder folded, decoder expanded: each pop takes from the one folded push.
    graph = circuit_graph(unet(), view=frozenset({4}))
    assert skips_by_name(graph)["skip"] == [("down.0.1", ["up.0.5", "up.1.5", "up.2.5"])]
    check_rules(layout_circuit(unet(), view=frozenset({4})))


# --- Named layers and layers built per repeat ---


def test_a_named_layer_shows_its_name_and_carries_it_as_its_key() -> None:
    graph = circuit_graph(decoder())
    assert graph.node("embed").lines[0] == "embed: Linear 4→4"
    assert graph.node("head").lines[0] == "head: Linear 4→2"
    assert graph.node("layer.0.4").lines[0] == "ReLU"  # keyed by position: no name
    page = circuit_html(decoder())
    assert 'data-key="embed"' in page and '"embed": {"repr": "Linear(' in page
    assert '"key": "embed"' in page


def test_a_folded_layer_built_per_repeat_says_how_its_repeats_differ() -> None:
    folded = circuit_graph(unet())
    assert folded.node("down.0.2").lines == ("Linear 4→4", "built per repeat", "20 params")
    assert folded.node("up.0.6").lines == (
        "Linear 4→8",
        "per repeat: 4→8 · 8→16 · 16→32",
        "40 … 544 params",
    )
    expanded = circuit_graph(unet(), expanded=True)
    assert expanded.node("up.2.6").lines == ("Linear 16→32", "544 params")
    many = Circuit(
        StartBlock("b", num_repeats=5),
        PerRepeat(lambda i, n: nn.Linear(i + 1, i + 2)),
        EndBlock("b"),
    )
    assert circuit_graph(many).node("b.0.1").lines[1] == "per repeat: 1→2 … 5→6"


def test_a_layer_built_per_repeat_in_nested_blocks_finds_every_repeat() -> None:
    model = Circuit(
        StartBlock("outer", num_repeats=2),
        StartBlock("inner", num_repeats=2),
        PerRepeat(lambda i, n: nn.Linear(1, i + 1)),
        EndBlock("inner"),
        EndBlock("outer"),
    )
    assert circuit_graph(model).node("outer.0.inner.0.2").lines[1] == "per repeat: 1→1 … 1→4"
    outer_expanded = circuit_graph(model, view=frozenset({0}))
    assert outer_expanded.node("outer.0.inner.0.2").lines[1] == "per repeat: 1→1 · 1→2"
    assert outer_expanded.node("outer.1.inner.0.2").lines[1] == "per repeat: 1→3 · 1→4"


def test_a_read_whose_op_is_built_per_repeat_says_so() -> None:
    model = Circuit(
        SaveInput("t"),
        StartBlock("b", num_repeats=2),
        GetInput("t", op=PerRepeat(lambda i, n: nn.Bilinear(4, 4, 4))),
        EndBlock("b"),
    )
    assert circuit_graph(model).read_of("b.0.2").label == "t · Bilinear · per repeat"
    assert circuit_graph(model, expanded=True).read_of("b.1.2").label == "t · Bilinear"


# --- The renderers ---


def test_the_page_draws_entries_and_taps_with_their_keys_and_details() -> None:
    layout = layout_circuit(decoder())
    svg = layout_svg(layout)
    assert '<g class="node entry io" data-id="input:mask" data-key="" data-kind="entry">' in svg
    assert re.search(r'<g class="node tap io" data-id="layer.0.7" data-key="layer.0.7"', svg)
    assert '<g class="edge tap" data-source="layer.0.7">' in svg
    assert "<polygon points=" in svg
    page = circuit_html(decoder())
    assert '"layer.0.7": {"repr": "Output(\'hidden\')", "key": "layer.0.7"' in page


def test_the_static_diagram_draws_taps_as_diamonds(tmp_path: Any) -> None:
    from matplotlib.patches import RegularPolygon

    figure = decoder().visualize(tmp_path / "d.png")
    diamonds = [p for p in figure.axes[0].patches if isinstance(p, RegularPolygon)]
    assert len(diamonds) == 2  # hidden, logits (folded)
    texts = {text.get_text() for text in figure.axes[0].texts}
    assert {"hidden ×3", "logits", "memory", "mask", "memory, mask · attend"} <= texts


def test_dot_and_mermaid_draw_entries_beside_the_input_and_taps_off_the_flow() -> None:
    dot = to_dot(decoder())
    assert "{rank=source; n0; n1; n2;}" in dot
    assert re.search(r"n\d+ \[shape=diamond, style=filled", dot)
    (tap,) = re.findall(r"(n\d+) -> (o\d+);", dot)[:1]
    assert tap[1] == "o" + tap[0][1:]
    assert f'{tap[1]} [label="hidden ×3", style=rounded' in dot
    assert "-> n" in dot and "output" not in dot
    flow = re.findall(r"^  (n\d+) -> (n\d+)(?: \[label=\"[^\"]*\"\])?;$", dot, re.MULTILINE)
    assert flow[0] == ("n2", "n3")  # the flow starts at the input, not at an entry
    mermaid = to_mermaid(decoder())
    assert 'n0[/"memory"/]' in mermaid and 'n1[/"mask"/]' in mermaid
    assert re.search(r'o\d+\[/"logits"/\]', mermaid)
    assert '-.->|"mask · mul"|' in mermaid


@pytest.mark.parametrize("direction", ["down", "right"])
@pytest.mark.parametrize("expanded", [False, True])
def test_entries_taps_and_merges_of_several_names_are_legible(
    expanded: bool, direction: Any
) -> None:
    layout = layout_circuit(
        decoder(), expanded=expanded, direction=direction, input_shape=(1, 4), input_shapes=SHAPES
    )
    assert_legible(draw_layout(layout))
