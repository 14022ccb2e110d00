"""DOT and Mermaid text: golden files, and structure checked without Graphviz or Mermaid."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
import torch
from _diagrams import ROOT, check_golden, models
from torch import nn

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock
from torch_circuit.diagram import text as text_module
from torch_circuit.diagram.text import MAX_TEXT_NODES, to_dot, to_mermaid
from torch_circuit.diagram.view import MAX_DRAWN, DiagramTooLargeError

CASES = [
    ("quickstart_folded", "quickstart", True),
    ("quickstart_expanded", "quickstart", False),
    ("unet", "unet", True),
]


@pytest.mark.parametrize(("name", "model", "folded"), CASES)
def test_dot_golden(name: str, model: str, folded: bool) -> None:
    check_golden(f"{name}.dot", to_dot(getattr(models, model)(), show_repeats=folded))


@pytest.mark.parametrize(("name", "model", "folded"), CASES)
def test_mermaid_golden(name: str, model: str, folded: bool) -> None:
    check_golden(f"{name}.mmd", to_mermaid(getattr(models, model)(), show_repeats=folded))


def test_circuit_methods_give_the_same_text() -> None:
    model = models.quickstart()
    assert model.to_dot() == to_dot(model)
    assert model.to_mermaid(show_repeats=False) == to_mermaid(model, show_repeats=False)


# --- Structure ---


def dot_structure(text: str) -> tuple[set[str], list[tuple[str, str, str]], list[str]]:
    """Declared node ids, edges (source, target, attributes) and cluster labels."""
    assert text.startswith("digraph circuit {") and text.rstrip().endswith("}")
    depth = 0
    for line in text.splitlines():
        depth += line.count("{") - line.count("}")
        assert depth >= 0
    assert depth == 0
    nodes = set(re.findall(r"^\s*(n\d+) \[", text, re.MULTILINE))
    edges = re.findall(r"^\s*(n\d+) -> (n\d+)(.*);$", text, re.MULTILINE)
    clusters = re.findall(r"subgraph cluster_\d+ \{\n\s*label=\"([^\"]*)\"", text)
    return nodes, edges, clusters


def test_dot_structure_expanded_nested() -> None:
    model = Circuit(
        nn.Linear(4, 4),
        SaveInput("outer"),
        StartBlock("stage", num_repeats=2),
        StartBlock("unit", num_repeats=3, share_weights=True),
        SaveInput("u"),
        nn.Linear(4, 4),
        GetInput("u"),
        GetInput("outer", op=torch.mul),
        EndBlock("unit"),
        EndBlock("stage"),
    )
    nodes, edges, clusters = dot_structure(to_dot(model, show_repeats=False))
    assert clusters[:4] == [
        "stage [1/2]",
        "unit [1/3] · shared",
        "unit [2/3] · shared",
        "unit [3/3] · shared",
    ]
    assert len(clusters) == 2 + 6
    assert all(source in nodes and target in nodes for source, target, _ in edges)
    skips = [attrs for _, _, attrs in edges if "style=dashed" in attrs]
    assert len(skips) == 6 + 6  # each unit repeat reads 'u' and 'outer'
    assert sum('label="outer · mul"' in attrs for attrs in skips) == 6
    folded_nodes, _folded_edges, folded_clusters = dot_structure(to_dot(model))
    assert folded_clusters == ["stage ×2", "unit ×3 · shared"]
    assert len(folded_nodes) == 2 + 4 + 2  # input, output; Linear, save; four in the unit


def test_dot_labels_carry_shapes_and_escape_quotes() -> None:
    weird = type('My"Layer', (nn.Module,), {"forward": lambda self, x: x})
    model = Circuit(weird(), nn.Linear(3, 2))
    text = to_dot(model, input_shape=(5, 3))
    assert 'label="My\\"Layer"' in text
    assert 'n1 -> n2 [label="(5, 3)"];' in text
    assert 'n2 -> n3 [label="(5, 2)"];' in text
    dot_structure(text)


def mermaid_structure(text: str) -> tuple[set[str], list[str], list[int]]:
    lines = text.splitlines()
    assert lines[0] == "flowchart TB"
    depth = 0
    for line in lines:
        if line.strip().startswith("subgraph "):
            depth += 1
        elif line.strip() == "end":
            depth -= 1
        assert depth >= 0
    assert depth == 0
    nodes = set(re.findall(r"^\s*(n\d+)[\[\(]", text, re.MULTILINE))
    links = [line for line in lines if re.match(r"^\s*n\d+ (-->|-\.->)", line)]
    for link in links:
        ids = re.findall(r"\bn\d+\b", re.sub(r'"[^"]*"', "", link))
        assert len(ids) == 2 and set(ids) <= nodes, link
    styled = re.findall(r"linkStyle ([\d,]+) ", text)
    indices = [int(i) for i in styled[0].split(",")] if styled else []
    return nodes, links, indices


def test_mermaid_structure_and_skip_styles() -> None:
    _nodes, links, indices = mermaid_structure(to_mermaid(models.unet()))
    dashed = [i for i, link in enumerate(links) if "-.->" in link]
    assert indices == dashed and len(dashed) == 4
    assert [links[i].split('"')[1] for i in dashed] == [
        "enc1 · cat",
        "enc2 · cat",
        "enc3 · cat",
        "enc4 · cat",
    ]


def test_mermaid_escapes_quotes_and_shows_transforms() -> None:
    weird = type('Say"Hi', (nn.Module,), {"forward": lambda self, x: x})
    model = Circuit(
        weird(),
        SaveInput("x", transform=nn.Linear(3, 3)),
        nn.Linear(3, 3),
        GetInput("x", transform=nn.Linear(3, 3)),
    )
    text = to_mermaid(model)
    assert '"Say#quot;Hi"' in text
    assert '(["x<br/>via Linear 3→3"])' in text
    assert '-.->|"x · add<br/>via Linear 3→3"|' in text
    mermaid_structure(text)


def test_docs_show_the_current_quick_start_mermaid() -> None:
    doc = (ROOT / "docs" / "visualization.md").read_text(encoding="utf-8")
    assert f"```mermaid\n{to_mermaid(models.quickstart())}```" in doc


# --- Long models: linear time, and a limit of their own ---


def test_text_diagrams_write_models_too_long_to_draw() -> None:
    size = MAX_DRAWN + 1000
    model = Circuit(*[nn.ReLU() for _ in range(size)])
    nodes, edges, _ = dot_structure(to_dot(model))
    assert len(nodes) == size + 2 and len(edges) == size + 1
    assert to_mermaid(model).count(" --> ") == size + 1
    with pytest.raises(DiagramTooLargeError, match=r"6,000 layers"):
        model.visualize()


def test_a_text_diagram_past_its_own_limit_is_refused(monkeypatch: Any) -> None:
    monkeypatch.setattr(text_module, "MAX_TEXT_NODES", 100)
    model = Circuit(nn.ReLU(), StartBlock("b", num_repeats=200), nn.ReLU(), EndBlock("b"))
    for write in (to_dot, to_mermaid):
        with pytest.raises(
            DiagramTooLargeError,
            match=r"would draw 201 layers, saves and reads, more than the 100 .*"
            r"Draw it folded instead \(expanded=False, the default\), which draws 2 nodes",
        ):
            write(model, expanded=True)
        assert write(model).count("ReLU") == 2
    assert MAX_TEXT_NODES == 50_000


def test_the_text_diagram_benchmark_runs_in_its_quick_mode() -> None:
    """`benchmarks/text_diagrams.py --quick` prints each writer's growth for each model (the
    figures themselves are not asserted: a shared machine cannot hold them)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "text_diagrams.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    growth = re.findall(
        r"^(to_dot|to_mermaid|layout)\s+(chain|residual|nested)\s+growth\s+([\d.]+)x  for 8x",
        done.stdout,
        re.MULTILINE,
    )
    assert {(writer, model) for writer, model, _ in growth} == {
        (writer, model)
        for writer in ("to_dot", "to_mermaid", "layout")
        for model in ("chain", "residual", "nested")
    }
    assert all(float(ratio) > 0 for _, _, ratio in growth)
