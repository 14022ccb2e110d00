"""Drawing and writing diagrams: formats, atomic files, bad input, and legible text."""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from _diagrams import ROOT, models
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from torch import nn

from torch_circuit import Circuit
from torch_circuit.diagram.draw import NoDisplayWarning, visualize
from torch_circuit.diagram.files import FORMATS
from torch_circuit.diagram.layout import layout_circuit
from torch_circuit.diagram.render import draw_layout
from torch_circuit.shapes import ShapeError

MAGIC = {".pdf": b"%PDF", ".png": b"\x89PNG", ".svg": b"<?xml", ".html": b"<!DOCTYPE html>"}

# Figures asked for without a path are shown where there is a display; tests have none.
pytestmark = pytest.mark.filterwarnings("ignore::torch_circuit.diagram.draw.NoDisplayWarning")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- Writing files ---


@pytest.mark.parametrize("extension", sorted(FORMATS))
def test_each_format_is_written_whole(tmp_path: Path, extension: str) -> None:
    path = tmp_path / f"model{extension}"
    figure = visualize(models.quickstart(), path)
    assert isinstance(figure, Figure)
    data = path.read_bytes()
    assert data.startswith(MAGIC[extension]) and len(data) > 1000
    if extension in (".svg", ".html"):
        assert b"<svg" in data
    assert leftovers(tmp_path) == [path.name]  # no temporary file left behind


def test_uppercase_extension_and_pathlike(tmp_path: Path) -> None:
    visualize(models.quickstart(), tmp_path / "MODEL.PNG")
    assert (tmp_path / "MODEL.PNG").read_bytes().startswith(MAGIC[".png"])


def test_seed_quick_start_call_works_verbatim(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    model = models.quickstart()
    model.visualize(save_path="resnet_example.pdf")
    assert (tmp_path / "resnet_example.pdf").read_bytes().startswith(b"%PDF")


def test_no_pyplot_figure_is_created_or_shown(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    figure = models.quickstart().visualize(save_path=str(tmp_path / "a.png"))
    assert plt.get_fignums() == before
    assert figure.canvas is not None


def test_existing_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "model.svg"
    path.write_text("old")
    visualize(models.quickstart(), path)
    assert path.read_text().startswith("<?xml")


# --- Bad input: a clear error and no file ---


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"extension '\.jpg'.*\['\.html', '\.pdf', '\.png', '\.svg'\]"
    ):
        visualize(models.quickstart(), tmp_path / "model.jpg")
    with pytest.raises(ValueError, match=r"extension '\(none\)'"):
        visualize(models.quickstart(), tmp_path / "model")
    assert leftovers(tmp_path) == []


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"the folder '.*nowhere' does not exist"):
        visualize(models.quickstart(), tmp_path / "nowhere" / "model.pdf")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        visualize(models.quickstart(), blocker / "model.pdf")
    assert leftovers(tmp_path) == ["file.txt"]


def test_path_that_is_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "plots.pdf"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        visualize(models.quickstart(), folder)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_unwritable_folder(tmp_path: Path, monkeypatch: Any) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root ignores permissions: refuse the write instead
            real_access = os.access
            monkeypatch.setattr(
                os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode)
            )
        with pytest.raises(PermissionError, match=r"folder '.*locked' is not writable"):
            visualize(models.quickstart(), folder / "model.pdf")
        assert leftovers(folder) == []
    finally:
        folder.chmod(0o700)


def test_failure_while_writing_leaves_no_file(tmp_path: Path, monkeypatch: Any) -> None:
    path = tmp_path / "model.png"
    path.write_bytes(b"previous diagram")

    def broken_savefig(self: Figure, stream: Any, **kwargs: Any) -> None:
        stream.write(b"half a PNG")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        visualize(models.quickstart(), path)
    assert leftovers(tmp_path) == ["model.png"]
    assert path.read_bytes() == b"previous diagram"  # the old file is untouched


def test_input_shape_the_model_cannot_take(tmp_path: Path) -> None:
    path = tmp_path / "model.pdf"
    with pytest.raises(ShapeError, match=r"position 0 \(Conv2d\) at the top level") as info:
        visualize(models.quickstart(), path, input_shape=(1, 5, 32, 32))
    assert isinstance(info.value, ValueError)
    assert leftovers(tmp_path) == []


def test_unknown_color_map_keys(tmp_path: Path) -> None:
    path = tmp_path / "model.pdf"
    with pytest.raises(ValueError, match=r"unknown keys \['Conv', 'relu'\]; valid keys are"):
        visualize(models.quickstart(), path, color_map={"Conv": "red", "relu": "blue"})
    with pytest.raises(ValueError, match=r"color_map\['conv'\] = 'reddish' is not a"):
        visualize(models.quickstart(), path, color_map={"conv": "reddish"})
    with pytest.raises(TypeError, match="color_map must be a mapping"):
        visualize(models.quickstart(), path, color_map=["red"])  # type: ignore[arg-type]
    assert leftovers(tmp_path) == []


def test_bad_figsize() -> None:
    with pytest.raises(ValueError, match=r"figsize must be \(width, height\)"):
        visualize(models.quickstart(), figsize=(0, 4))


def test_color_map_colours_the_family() -> None:
    figure = visualize(models.quickstart(), color_map={"conv": "#123456"})
    patches = [p for p in figure.axes[0].patches if isinstance(p, FancyBboxPatch)]
    colours = {tuple(round(c, 3) for c in p.get_facecolor()[:3]) for p in patches}
    assert (round(0x12 / 255, 3), round(0x34 / 255, 3), round(0x56 / 255, 3)) in colours


# --- Size and legibility, measured by the real text renderer ---


def test_figure_size_follows_content() -> None:
    small = visualize(Circuit(nn.Linear(2, 2)))
    large = visualize(models.deep_mlp(), show_repeats=False)
    layout = layout_circuit(models.deep_mlp(), show_repeats=False)
    assert tuple(large.get_size_inches()) == pytest.approx((layout.width, layout.height))
    assert large.get_size_inches()[1] > 4 * small.get_size_inches()[1]
    fixed = visualize(models.quickstart(), figsize=(4, 6))
    assert tuple(fixed.get_size_inches()) == pytest.approx((4, 6))


def text_extents(figure: Figure) -> list[tuple[Any, Any]]:
    renderer = FigureCanvasAgg(figure).get_renderer()
    return [(text, text.get_window_extent(renderer)) for text in figure.axes[0].texts]


def assert_legible(figure: Figure, min_points: float = 6.0) -> None:
    extents = text_extents(figure)
    assert extents
    for text, _ in extents:
        assert text.get_fontsize() >= min_points, text.get_text()
    # No two texts overlap: sweep along x.
    items = sorted(extents, key=lambda item: item[1].x0)
    for index, (text, box) in enumerate(items):
        for other, other_box in items[index + 1 :]:
            if other_box.x0 >= box.x1 - 0.5:
                break
            overlap_y = min(box.y1, other_box.y1) - max(box.y0, other_box.y0)
            assert overlap_y <= 0.5, f"{text.get_text()!r} overlaps {other.get_text()!r}"
    # Every layer's text stays inside its box.
    renderer = FigureCanvasAgg(figure).get_renderer()
    boxes = [p for p in figure.axes[0].patches if isinstance(p, FancyBboxPatch)]
    box_extents = [p.get_window_extent(renderer) for p in boxes]
    for text, box in extents:
        holders = [b for b in box_extents if b.contains(*box.get_points().mean(axis=0))]
        for holder in holders:
            assert holder.x0 <= box.x0 + 0.5 and box.x1 <= holder.x1 + 0.5, text.get_text()


@pytest.mark.parametrize(
    ("name", "folded", "shape"),
    [
        ("quickstart", True, (1, 3, 32, 32)),
        ("quickstart", False, (1, 3, 32, 32)),
        ("unet", True, (1, 3, 64, 64)),
        ("deep_mlp", False, (8, 32)),
    ],
)
def test_text_is_legible_and_never_overlaps(name: str, folded: bool, shape: Any) -> None:
    figure = visualize(getattr(models, name)(), show_repeats=folded, input_shape=shape)
    assert_legible(figure)


@pytest.mark.parametrize("direction", ["down", "right"])
@pytest.mark.parametrize("expanded", [False, True])
def test_the_conditioned_unet_is_legible(expanded: bool, direction: Any) -> None:
    """Named input, per-repeat layers, a push/pop stack and outputs, all drawn at once."""
    shapes = {"input_shape": (1, 1, 32, 32), "input_shapes": {"t": (1, 32)}}
    layout = layout_circuit(
        models.conditioned_unet(), expanded=expanded, direction=direction, **shapes
    )
    assert_legible(draw_layout(layout))


def test_transformer_expanded_is_legible() -> None:
    tokens = torch.zeros(1, 16, dtype=torch.long)
    assert_legible(visualize(models.transformer(), show_repeats=False, input_shape=tokens))


def test_draw_layout_scales_text_with_figsize() -> None:
    layout = layout_circuit(models.quickstart())
    natural = draw_layout(layout)
    half = draw_layout(layout, figsize=(layout.width / 2, layout.height / 2))
    size = max(t.get_fontsize() for t in natural.axes[0].texts)
    assert max(t.get_fontsize() for t in half.axes[0].texts) == pytest.approx(size / 2)


# --- Notebooks ---


def test_svg_file_holds_the_frame_label_as_text(tmp_path: Path) -> None:
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text, not paths
        visualize(models.quickstart(), tmp_path / "q.svg")
    svg = (tmp_path / "q.svg").read_text(encoding="utf-8")
    assert "resnet ×3" in svg and "resnet [1/3]" not in svg
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        visualize(models.quickstart(), tmp_path / "e.svg", expanded=True)
    svg = (tmp_path / "e.svg").read_text(encoding="utf-8")
    assert "resnet [1/3]" in svg and "resnet [3/3]" in svg and "resnet ×3" not in svg


def test_a_bare_circuit_shows_its_text_repr_in_a_notebook() -> None:
    model = models.quickstart()
    for method in ("_repr_svg_", "_repr_png_", "_repr_html_"):
        assert not hasattr(model, method), method  # IPython falls back to repr(), as for nn


def test_in_a_notebook_the_figure_displays_the_interactive_page(monkeypatch: Any) -> None:
    import html

    from torch_circuit.diagram import draw

    monkeypatch.setattr(draw, "_in_notebook", lambda: True)
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    with warnings_as_errors():
        figure = models.quickstart().visualize()
    assert plt.get_fignums() == before  # not left to pyplot, which would show it twice
    page = figure._repr_html_()  # type: ignore[attr-defined]
    assert page.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in page
    source = html.unescape(page.split('srcdoc="', 1)[1].split('"', 1)[0])
    assert source.startswith("<!DOCTYPE html>") and "resnet ×3" in source


@contextlib.contextmanager
def warnings_as_errors() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_in_a_script_without_a_display_it_says_how_to_save(monkeypatch: Any) -> None:
    with pytest.warns(NoDisplayWarning, match=r"no display.*visualize\('architecture.png'\)"):
        figure = models.quickstart().visualize()
    assert isinstance(figure, Figure)
    with pytest.warns(NoDisplayWarning, match=r"architecture\.html"):
        models.quickstart().visualize()


def test_in_a_script_with_a_display_it_is_shown_like_any_pyplot_figure(
    monkeypatch: Any, tmp_path: Path
) -> None:
    import matplotlib.pyplot as plt

    from torch_circuit.diagram import draw

    shown: list[list[int]] = []
    monkeypatch.setattr(draw, "_has_display", lambda: True)
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(plt.get_fignums()))
    with warnings_as_errors():
        figure = models.quickstart().visualize()
    try:
        assert len(shown) == 1 and figure.number in shown[0]  # type: ignore[attr-defined]
        assert figure.canvas.manager is not None  # so figure.show() works too
    finally:
        plt.close(figure)
    with warnings_as_errors():
        quiet = models.quickstart().visualize(show=False)
    try:
        assert len(shown) == 1 and quiet.number in plt.get_fignums()  # type: ignore[attr-defined]
    finally:
        plt.close(quiet)
    with warnings_as_errors():
        saved = models.quickstart().visualize(tmp_path / "a.png", show=True)
    assert len(shown) == 1 and saved.canvas.manager is None  # asked to save: nothing shown


def test_import_does_not_load_matplotlib() -> None:
    import subprocess

    code = "import sys, torch_circuit; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "False"


def test_every_box_and_edge_is_drawn() -> None:
    layout = layout_circuit(models.unet())
    figure = draw_layout(layout)
    texts = [t.get_text() for t in figure.axes[0].texts]
    for box in layout.boxes:
        if box.kind == "layer":
            assert box.lines[0] in texts
    for label in itertools.chain.from_iterable(e.labels for e in layout.edges):
        assert label.text in texts
    lines = figure.axes[0].lines
    assert len(lines) == sum(len(e.paths) for e in layout.edges)


def test_legibility_check_catches_overlapping_text() -> None:
    figure = visualize(models.quickstart())
    first = figure.axes[0].texts[0]
    figure.axes[0].text(*first.get_position(), "intruder", fontsize=8, ha="center", va="center")
    with pytest.raises(AssertionError, match="overlaps"):
        assert_legible(figure)


def test_returned_figure_displays_in_a_notebook_and_pickles() -> None:
    import pickle

    figure = visualize(models.quickstart())
    assert figure._repr_png_().startswith(MAGIC[".png"])  # type: ignore[attr-defined]
    clone = pickle.loads(pickle.dumps(figure))
    assert isinstance(clone, Figure)
    assert tuple(clone.get_size_inches()) == pytest.approx(tuple(figure.get_size_inches()))


def test_overlong_names_stay_legible() -> None:
    from torch_circuit import EndBlock, GetInput, LambdaLayer, SaveInput, StartBlock

    def a_function_with_a_very_long_descriptive_name_that_goes_on_and_on(x: Any) -> Any:
        return x

    name = "a_skip_name_that_is_also_much_longer_than_anyone_would_like_to_read"
    model = Circuit(
        LambdaLayer(a_function_with_a_very_long_descriptive_name_that_goes_on_and_on),
        StartBlock("a_block_whose_name_is_far_too_long_to_fit_in_any_frame", num_repeats=2),
        SaveInput(name, transform=nn.Linear(4, 4)),
        nn.ReLU(),
        GetInput(name),
        EndBlock("a_block_whose_name_is_far_too_long_to_fit_in_any_frame"),
    )
    assert_legible(visualize(model, show_repeats=False, input_shape=(2, 4)))
