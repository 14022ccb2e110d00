"""``summary``: rows grouped by block and repeat, shapes, and totals that count shares once."""

from __future__ import annotations

import re

import pytest
import torch
from _diagrams import ROOT, check_golden, models
from torch import nn

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock
from torch_circuit.shapes import ShapeError
from torch_circuit.summary import format_bytes, summary


def total_line(text: str, label: str) -> int:
    match = re.search(rf"^{label}: ([\d,]+)", text, re.MULTILINE)
    assert match is not None, label
    return int(match.group(1).replace(",", ""))


def test_quickstart_summary_golden() -> None:
    check_golden("quickstart_summary.txt", summary(models.quickstart(), (1, 3, 32, 32)) + "\n")


def test_quickstart_summary_without_shapes_golden() -> None:
    text = summary(models.quickstart())
    check_golden("quickstart_summary_no_shapes.txt", text + "\n")
    assert "Output shape" not in text
    assert "Activation memory: pass input_shape to estimate it" in text


def test_rows_are_grouped_by_block_and_repeat() -> None:
    lines = summary(models.quickstart(), (1, 3, 32, 32)).splitlines()
    block = next(i for i, line in enumerate(lines) if line.startswith("resnet ×3"))
    assert lines[block + 1].strip() == "repeat 1/3"
    rows = lines[block + 2 : block + 10]
    assert all(row.startswith("    ") for row in rows)
    assert rows[0].split()[:2] == ["SaveInput", "'residual'"]
    assert "resnet.0.5" in rows[1] and "(1, 64, 32, 32)" in rows[1] and "36,928" in rows[1]
    assert "GetInput 'residual' · add" in rows[7]
    assert sum(line.strip().startswith("repeat ") for line in lines) == 3
    assert lines[-8].split()[:3] == ["Linear", "64→10", "15"]


def test_totals_match_the_module_and_count_shared_parameters_once() -> None:
    for model in (models.quickstart(), models.unet(), models.transformer(layers=2)):
        text = summary(model)
        assert total_line(text, "Total params") == sum(p.numel() for p in model.parameters())
    shared = Circuit(
        nn.Linear(8, 8),
        StartBlock("tied", num_repeats=4, share_weights=True),
        nn.Linear(8, 8),
        nn.ReLU(),
        EndBlock("tied"),
    )
    text = summary(shared)
    assert total_line(text, "Total params") == 72 + 72
    assert text.count("72 shared") == 3  # repeats 2-4 reuse repeat 1's weights
    twice = nn.Linear(4, 4)
    reused = Circuit(twice, nn.ReLU(), twice)
    text = summary(reused)
    assert total_line(text, "Total params") == 20
    assert "20 shared" in text


def test_trainable_and_non_trainable() -> None:
    model = models.quickstart()
    for parameter in model.get_submodule("0").parameters():
        parameter.requires_grad_(False)
    text = summary(model)
    assert total_line(text, "Non-trainable params") == 1792
    assert total_line(text, "Trainable params") == 224_906 - 1792


def test_memory_estimates() -> None:
    model = Circuit(nn.Linear(4, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 2))
    text = summary(model, (3, 4))
    params = (4 * 8 + 8) + (2 * 8) + (8 * 2 + 2)
    buffers = 8 + 8 + 1  # running mean, running var, batches tracked (int64)
    assert total_line(text, "Buffers") == buffers
    expected = format_bytes(params * 4 + 16 * 4 + 8)
    assert f"Parameter memory: {expected} (parameters and buffers)" in text
    activations = (3 * 4 + 3 * 8 + 3 * 8 + 3 * 8 + 3 * 2) * 4  # input and each row's output
    assert f"Activation memory: {format_bytes(activations)} (forward" in text


def test_skip_rows_show_name_op_and_transform() -> None:
    model = Circuit(
        nn.Conv2d(3, 8, 3, padding=1),
        SaveInput("x", transform=nn.Conv2d(8, 4, 1)),
        nn.Conv2d(8, 4, 3, padding=1),
        GetInput("x", op="cat"),
    )
    text = summary(model, (1, 3, 8, 8))
    assert "SaveInput 'x' via Conv2d 8→4, k1" in text
    assert re.search(r"GetInput 'x' · cat\s+3\s+\(1, 8, 8, 8\)\s+0", text)
    # A save's transform makes a new tensor: it counts towards the activations.
    activations = (3 + 8 + 4 + 4 + 8) * 64 * 4
    assert f"Activation memory: {format_bytes(activations)}" in text


def test_example_tensor_as_input() -> None:
    text = summary(models.transformer(layers=1), torch.zeros(2, 5, dtype=torch.long))
    assert "input (2, 5)" in text.splitlines()[0]
    assert "(2, 5, 1000)" in text


def test_bad_input_shape_names_the_layer() -> None:
    model = Circuit(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    assert summary(model, (1, 3, 8, 8))
    with pytest.raises(ShapeError, match=r"position 2 \(Linear\) at the top level .* \(1, 1568\)"):
        summary(model, (1, 3, 16, 16))


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.50 KiB"
    assert format_bytes(3 * 2**30) == "3.00 GiB"


@pytest.mark.parametrize("doc", ["README.md", "docs/visualization.md"])
def test_docs_show_the_current_quick_start_summary(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert summary(models.quickstart(), (1, 3, 32, 32)) + "\n" in text
