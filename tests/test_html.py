"""The interactive page as text: self-contained, every layer keyed and every frame named, a
layout per view from the same layout code as the static diagram, and all text escaped.
`test_html_browser.py` opens it in a real browser."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import torch
from _diagrams import models
from torch import nn

from torch_circuit import Circuit, EndBlock, GetInput, LambdaLayer, SaveInput, StartBlock
from torch_circuit.diagram.html import MAX_VIEWS, circuit_html, page_views
from torch_circuit.diagram.layout import layout_circuit
from torch_circuit.diagram.svg import PX


class Page(HTMLParser):
    """The page's templates (one per view), their elements' attributes, and its data."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.views: dict[str, list[tuple[str, dict[str, str]]]] = {}
        self.sizes: dict[str, tuple[float, float]] = {}
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.current: str | None = None
        self.in_data = False
        self.data_text = ""
        self.feed(text)
        self.data: dict[str, Any] = json.loads(self.data_text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        self.tags.append((tag, attributes))
        if tag == "template":
            self.current = attributes["data-view"]
            self.views[self.current] = []
            width, height = float(attributes["data-width"]), float(attributes["data-height"])
            self.sizes[self.current] = (width, height)
        elif self.current is not None:
            self.views[self.current].append((tag, attributes))
        self.in_data = attributes.get("id") == "circuit-data"

    def handle_endtag(self, tag: str) -> None:
        if tag == "template":
            self.current = None
        self.in_data = False

    def handle_data(self, data: str) -> None:
        if self.in_data:
            self.data_text += data

    def elements(self, view: str, css_class: str) -> list[dict[str, str]]:
        return [a for _, a in self.views[view] if css_class in a.get("class", "").split()]


def page_of(model: Circuit, **options: Any) -> Page:
    return Page(circuit_html(model, **options))


def test_the_page_is_self_contained() -> None:
    text = circuit_html(models.quickstart(), input_shape=(1, 3, 32, 32))
    assert text.startswith("<!DOCTYPE html>")
    assert "default-src 'none'" in text  # the browser itself refuses any request
    assert not re.search(r"\b(src|href)\s*=", text)
    assert {ref for ref in re.findall(r"url\(([^)]*)\)", text)} == {"#arrow-flow", "#arrow-skip"}
    assert set(re.findall(r"https?://[^\s\"')]+", text)) == {"http://www.w3.org/2000/svg"}
    assert "@import" not in text and "@font-face" not in text


def test_every_layer_has_its_key_and_every_frame_its_block() -> None:
    page = page_of(models.quickstart())
    assert sorted(page.views) == ["", "3"]  # folded, and the Quick Start's block expanded
    for view in page.views:
        nodes = page.elements(view, "node")
        assert nodes and all("data-key" in n and "data-id" in n for n in nodes)
        frames = page.elements(view, "frame")
        assert frames and all(f["data-block"] == "resnet" for f in frames)
    folded = {n["data-key"] for n in page.elements("", "layer")}
    expanded = {n["data-key"] for n in page.elements("3", "layer")}
    assert "resnet.0.5" in folded and "resnet.1.5" not in folded  # repeat 0's keys
    assert {"resnet.0.5", "resnet.1.5", "resnet.2.10"} <= expanded
    assert [f["data-repeat"] for f in page.elements("3", "frame")] == ["0", "1", "2"]


def test_each_view_is_the_static_layout() -> None:
    model = models.quickstart()
    page = page_of(model)
    for view, expanded in (("", False), ("3", True)):
        layout = layout_circuit(model, expanded=expanded)
        assert page.sizes[view] == (round(layout.width * PX), round(layout.height * PX))
        xs = [round(b.x * PX, 1) for b in layout.boxes if b.kind == "layer"]
        drawn = [
            float(a["x"])
            for tag, a in page.views[view]
            if tag == "rect" and "x" in a and "rx" in a and a["rx"] == "5.8"
        ]
        assert sorted(drawn) == pytest.approx(sorted(xs + [round(x * PX, 1) for x in io(layout)]))


def io(layout: Any) -> list[float]:
    return [b.x for b in layout.boxes if b.kind in ("input", "output")]


def nested() -> Circuit:
    return Circuit(
        nn.Linear(4, 4),
        StartBlock("stage", num_repeats=2),
        SaveInput("s"),
        StartBlock("unit", num_repeats=3),
        nn.Linear(4, 4),
        EndBlock("unit"),
        StartBlock("once", num_repeats=1),
        nn.ReLU(),
        EndBlock("once"),
        GetInput("s"),
        EndBlock("stage"),
    )


def test_every_combination_of_repeated_blocks_is_a_view() -> None:
    views = page_views(nested())
    assert views.mode == "any" and views.toggles == (1, 3)  # a block of 1 repeat stays put
    assert sorted(views.views, key=sorted) == [set(), {1}, {1, 3}, {3}]
    page = page_of(nested())
    assert sorted(page.views) == ["", "1", "1,3", "3"]
    inner = [f["data-frame"] for f in page.elements("1,3", "frame") if f["data-block"] == "unit"]
    assert inner == [f"stage.{s}.unit.{u}" for s in range(2) for u in range(3)]


def test_past_six_repeated_blocks_one_is_expanded_at_a_time() -> None:
    items: list[Any] = []
    for index in range(7):
        items += [StartBlock(f"b{index}", num_repeats=2), nn.ReLU(), EndBlock(f"b{index}")]
    model = Circuit(*items)
    views = page_views(model)
    assert MAX_VIEWS < 2**7 and views.mode == "one"
    assert len(views.views) == 8 and all(len(v) <= 1 for v in views.views)
    assert page_of(model).data["mode"] == "one"


def test_a_block_too_large_to_expand_is_left_folded_and_said_so() -> None:
    model = Circuit(
        StartBlock("small", num_repeats=2),
        nn.ReLU(),
        EndBlock("small"),
        StartBlock("huge", num_repeats=10_000, share_weights=True),
        nn.ReLU(),
        EndBlock("huge"),
    )
    views = page_views(model)
    assert views.missing == (3,) and sorted(views.views, key=sorted) == [set(), {0}]
    assert page_of(model).data["missing"] == [3]


def test_hover_details_name_repr_key_parameters_and_shape() -> None:
    page = page_of(models.quickstart(), input_shape=(1, 3, 32, 32))
    details = page.data["details"]
    conv = details["resnet.1.5"]
    assert conv["key"] == "resnet.1.5" and conv["params"] == 36_928
    assert conv["repr"] == repr(nn.Conv2d(64, 64, 3, padding=1))
    assert conv["shape"] == "(1, 64, 32, 32)"
    assert details["14"]["shape"] == "(1, 64)" and details["output"]["shape"] == "(1, 10)"
    assert page.data["shapes"] is True
    assert page_of(models.quickstart()).data["details"]["resnet.0.5"]["shape"] is None


def test_a_value_that_is_not_a_tensor_has_no_shape() -> None:
    model = Circuit(
        nn.Linear(4, 4),
        LambdaLayer(lambda x: (x, x * 2)),  # a tuple: no tensor shape
        LambdaLayer(lambda pair: pair[1]),
        nn.ReLU(),
    )
    details = page_of(model, input_shape=(2, 4)).data["details"]
    assert [details[key]["shape"] for key in ("0", "1", "2", "3")] == [
        "(2, 4)",
        None,
        "(2, 4)",
        "(2, 4)",
    ]


def test_markup_is_escaped_everywhere() -> None:
    hostile = "</script><script>alert(1)</script>"

    class Hostile(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def extra_repr(self) -> str:
            return hostile

    text = circuit_html(Circuit(SaveInput(hostile), Hostile(), GetInput(hostile)), title="<b>t</b>")
    assert text.count("<script") == 2 and text.count("</script>") == 2  # the page's own
    assert "&lt;/script&gt;&lt;script&gt;" in text  # the skip's name, as SVG text
    assert "\\u003c/script>" in text  # the repr, inside the JSON data
    assert "<b>t</b>" not in text and "&lt;b&gt;t&lt;/b&gt;" in text


def test_the_page_opens_in_the_view_asked_for(tmp_path: Path) -> None:
    assert page_of(models.quickstart()).data["initial"] == ""
    model = models.quickstart()
    model.visualize(tmp_path / "e.html", expanded=True)
    assert Page((tmp_path / "e.html").read_text(encoding="utf-8")).data["initial"] == "3"


def test_colours_reach_the_page() -> None:
    text = circuit_html(models.quickstart(), colors={"conv": "tab:blue", "skip": "black"})
    assert 'fill="#1f77b4"' in text and "--skip:#000000" in text


def test_the_command_line_writes_the_page(tmp_path: Path, capsys: Any) -> None:
    from torch_circuit.cli import main

    path = tmp_path / "arch.html"
    spec = f"{Path(__file__).resolve().parent.parent / 'examples' / 'quickstart.py'}:build_model"
    assert main(["draw", spec, "-o", str(path), "--input-shape", "1,3,32,32"]) == 0
    page = Page(path.read_text(encoding="utf-8"))
    assert sorted(page.views) == ["", "3"] and page.data["shapes"] is True
    assert main(["draw", spec, "-o", str(tmp_path / "e.html"), "--expanded"]) == 0
    assert Page((tmp_path / "e.html").read_text(encoding="utf-8")).data["initial"] == "3"


def test_the_command_line_refuses_a_diagram_too_large_in_one_line(
    tmp_path: Path, capsys: Any
) -> None:
    from torch_circuit.cli import main

    models_file = tmp_path / "big.py"
    models_file.write_text(
        "from torch import nn\n"
        "from torch_circuit import Circuit, StartBlock, EndBlock\n"
        "def big():\n"
        "    return Circuit(StartBlock('b', num_repeats=100_000, share_weights=True),\n"
        "                   nn.ReLU(), EndBlock('b'))\n",
        encoding="utf-8",
    )
    path = tmp_path / "big.html"
    assert main(["draw", f"{models_file}:big", "-o", str(path), "--expanded"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "100,000 layers" in error
    assert error.endswith("(leave out --expanded)") and not path.exists()
    assert main(["draw", f"{models_file}:big", "-o", str(path)]) == 0  # folded: 1 layer
