"""The examples: --smoke runs prove equivalence and write their files; bad input fails cleanly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

from torch_circuit import copy_weights

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(
    script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def assert_checked_and_saved(
    result: subprocess.CompletedProcess[str], out: Path, outputs: list[str]
) -> None:
    assert result.returncode == 0, result.stderr
    checks = [line for line in result.stdout.splitlines() if line.startswith("[check]")]
    assert any("after building" in c or "after copying" in c for c in checks), result.stdout
    assert any("after training" in c for c in checks), result.stdout
    assert "all equivalence checks passed" in result.stdout
    for name in outputs:
        assert (out / name).stat().st_size > 0, name


def test_resnet_smoke_trains_both_models_in_step(tmp_path: Path) -> None:
    result = run_example("resnet_mnist.py", "--smoke", "--out", str(tmp_path))
    assert_checked_and_saved(result, tmp_path, ["resnet.pdf", "resnet.png", "training.png"])
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert len(epochs) == 2
    for line in epochs:
        # "epoch  1 | circuit: loss 1.9824  accuracy  16.00%   0.1s | plain: loss ... "
        figures = re.findall(r"(\w+): loss (\S+)\s+accuracy\s+(\S+)", line)
        assert [name for name, *_ in figures] == ["circuit", "plain"]
        assert figures[0][1:] == figures[1][1:]
    assert "[check] epoch 2: circuit and plain agree" in result.stdout


@pytest.mark.parametrize(
    ("script", "outputs"),
    [
        ("unet_segmentation.py", ["unet.pdf", "unet.png", "training.png", "predictions.png"]),
        ("transformer_encoder.py", ["transformer.pdf", "transformer.png", "training.png"]),
    ],
)
def test_smoke_run_checks_equivalence_and_writes_its_files(
    script: str, outputs: list[str], tmp_path: Path
) -> None:
    result = run_example(script, "--smoke", "--out", str(tmp_path))
    assert_checked_and_saved(result, tmp_path, outputs)
    if script == "transformer_encoder.py":
        assert "[check] the mask: changing the padding moves real outputs by at most 0" in (
            result.stdout
        )


def test_diffusion_smoke_trains_both_models_and_scores_their_samples(tmp_path: Path) -> None:
    result = run_example("diffusion_digits.py", "--smoke", "--out", str(tmp_path))
    outputs = ["samples.png", "diffusion.pdf", "diffusion.png", "training.png"]
    assert_checked_and_saved(result, tmp_path, outputs)
    assert "[check] epoch 1: circuit and plain agree" in result.stdout
    assert "the two sets are identical" in result.stdout
    # "  circuit    0.649    7/10    57.09": one row per set of images, the two models alike.
    table = re.findall(r"^  (\S.*?)\s+(\d\.\d{3})\s+(\d+)/10\s+(\d+\.\d\d)$", result.stdout, re.M)
    rows = {name: figures for name, *figures in table}
    assert list(rows) == ["circuit", "hand-written twin", "real held-out digits", "noise"]
    assert rows["circuit"] == rows["hand-written twin"]


def test_mnist_without_torchvision_says_how_to_get_it(tmp_path: Path) -> None:
    if _has_torchvision():
        pytest.skip("torchvision is installed here; the missing-files case is tested below")
    result = run_example("resnet_mnist.py", "--dataset", "mnist", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "pip install torchvision" in result.stderr
    assert "--dataset" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], r"MNIST files are not in .*data/MNIST .*Add --download"),
        (["--download"], r"downloading MNIST into .*data failed \(Error downloading"),
    ],
)
def test_mnist_files_missing_or_download_failing(
    extra: list[str], message: str, tmp_path: Path
) -> None:
    # A stand-in torchvision whose MNIST fails as the real one does: "Dataset not found" when
    # the files are absent, "Error downloading" when no mirror answers.
    fake = tmp_path / "fake" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "datasets.py").write_text(
        "class MNIST:\n"
        "    def __init__(self, root, train=True, download=False):\n"
        "        if download:\n"
        "            raise RuntimeError('Error downloading train-images-idx3-ubyte.gz')\n"
        "        raise RuntimeError('Dataset not found. You can use download=True')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    data = str(tmp_path / "data")
    result = run_example(
        "resnet_mnist.py", "--dataset", "mnist", "--data-dir", data, *extra, env=env
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert "leave out --dataset" in result.stderr


def test_mnist_path_trains_on_28x28_images(tmp_path: Path) -> None:
    # A stand-in torchvision whose MNIST holds a few random 28x28 digits, shaped like the real
    # one's (uint8 images, int64 targets): the --dataset mnist path runs end to end.
    fake = tmp_path / "fake" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "datasets.py").write_text(
        "import torch\n"
        "class MNIST:\n"
        "    def __init__(self, root, train=True, download=False):\n"
        "        count = 256 if train else 64\n"
        "        self.data = torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8)\n"
        "        self.targets = torch.randint(0, 10, (count,))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    out = tmp_path / "out"
    result = run_example(
        "resnet_mnist.py", "--dataset", "mnist", "--smoke", "--out", str(out), env=env
    )
    assert_checked_and_saved(result, out, ["resnet.pdf", "resnet.png", "training.png"])
    assert "mnist: 256 training and 64 test images of shape (1, 28, 28)" in result.stdout


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


# The helpers the examples rely on must be able to fail.


@pytest.fixture
def common(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import _common

    return _common


def test_check_equivalence_catches_a_changed_weight(common: ModuleType) -> None:
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    b = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    copy_weights(a, b, x)
    loss = nn.CrossEntropyLoss()
    assert common.check_equivalence(a, b, x, y, loss, "copied") == (0.0, 0.0)
    with torch.no_grad():
        b[2].bias[0] += 1e-2
    with pytest.raises(common.EquivalenceError, match="differ beyond"):
        common.check_equivalence(a, b, x, y, loss, "changed")


def test_circuits_match_their_hand_written_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import _common
    import diffusion_digits
    import resnet_mnist
    import transformer_encoder
    import unet_segmentation

    torch.manual_seed(0)
    tokens, mask, targets = transformer_encoder.make_sorting(4, 0)
    assert mask.any(), "the batch should hold padding"
    # Each case: the models, the arguments of one call (model(*args)), the targets, the loss.
    cases = [
        (
            resnet_mnist.build_circuit(),
            resnet_mnist.PlainResNet(),
            (torch.randn(4, 1, 8, 8),),
            torch.randint(0, 10, (4,)),
            nn.CrossEntropyLoss(),
        ),
        (
            unet_segmentation.build_circuit(),
            unet_segmentation.PlainUNet(),
            (torch.randn(2, 1, 16, 16),),
            torch.randint(0, 3, (2, 16, 16)),
            nn.CrossEntropyLoss(),
        ),
        (
            transformer_encoder.build_circuit(num_layers=2),
            transformer_encoder.PlainEncoder(num_layers=2),
            (tokens, mask),
            targets,
            transformer_encoder.sequence_loss,
        ),
        (
            diffusion_digits.build_circuit(),
            diffusion_digits.PlainUNet(),
            (torch.randn(4, 1, 8, 8), torch.tensor([0, 5, 50, 199])),
            torch.randn(4, 1, 8, 8),
            nn.MSELoss(),
        ),
        (  # other widths and embedding size: every layer is built from the arguments
            diffusion_digits.build_circuit(widths=(8, 16), embed=32),
            diffusion_digits.PlainUNet(widths=(8, 16), embed=32),
            (torch.randn(2, 1, 8, 8), torch.tensor([3, 150])),
            torch.randn(2, 1, 8, 8),
            nn.MSELoss(),
        ),
    ]
    for circuit, plain, args, y, loss in cases:
        copy_weights(circuit, plain, args)
        out_diff, grad_diff = _common.check_equivalence(circuit, plain, args, y, loss, "twin")
        assert out_diff <= 1e-5 and grad_diff <= 1e-5


def test_the_twins_differ_where_the_models_do(monkeypatch: pytest.MonkeyPatch) -> None:
    # The checks can fail: a twin that ignores the mask, or the timestep, is caught.
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import _common
    import diffusion_digits
    import transformer_encoder as te

    torch.manual_seed(0)
    tokens, mask, targets = te.make_sorting(8, 3)
    circuit, plain = te.build_circuit(num_layers=1), te.PlainEncoder(num_layers=1)
    copy_weights(circuit, plain, (tokens, mask))

    class MaskBlind(nn.Module):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.model(tokens)  # type: ignore[no-any-return]

    with pytest.raises(_common.EquivalenceError, match="differ beyond"):
        _common.check_equivalence(
            circuit,
            MaskBlind(plain),
            (tokens, mask),
            targets,
            te.sequence_loss,
            "a twin that ignores the mask",
        )
    te.check_mask_masks(circuit, tokens, mask)  # the real mask masks
    with pytest.raises(_common.EquivalenceError, match="the padding mask leaks"):
        te.check_mask_masks(MaskBlind(plain), tokens, mask)

    unet, twin = diffusion_digits.build_circuit(), diffusion_digits.PlainUNet()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 150])
    copy_weights(unet, twin, (x, t))
    torch.testing.assert_close(unet(x, t), twin(x, t), rtol=0, atol=0)
    assert not torch.allclose(unet(x, t), unet(x, t.flip(0)))  # the timestep is read


def test_generated_data_is_what_it_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import transformer_encoder as te
    import unet_segmentation

    images, masks = unet_segmentation.make_shapes(20, size=32, seed=3)
    assert images.shape == (20, 1, 32, 32) and masks.shape == (20, 32, 32)
    assert set(masks.unique().tolist()) == {0, 1, 2}
    # Shapes are brighter than the background, noise aside.
    assert images[:, 0][masks > 0].mean() > images[:, 0][masks == 0].mean() + 0.4
    tokens, mask, targets = te.make_sorting(500, seed=1)
    lengths = (~mask).sum(dim=1)
    assert set(lengths.tolist()) == set(range(1, te.SEQ_LEN + 1))
    assert torch.equal(mask, tokens == te.PAD)  # padding comes last, after the digits
    assert torch.equal(mask, targets == te.IGNORE)
    assert torch.equal(mask, mask.cummax(dim=1).values)
    for row in range(50):
        real = tokens[row][~mask[row]]
        assert torch.equal(targets[row][~mask[row]], real.sort().values)


def test_the_diffusion_scores_tell_digits_from_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import diffusion_digits as dd

    train, labels, test, test_labels = dd.load_digits_split(seed=0)
    assert train.shape == (1437, 1, 8, 8) and test.shape == (360, 1, 8, 8)
    assert train.min() == -1 and train.max() == 1
    judge = dd.Judge(train, labels)
    assert judge.accuracy(test, test_labels) > 0.9
    real, noise = judge.scores(test), judge.scores(dd.noise_like(train, 360, seed=0))
    assert real.confidence > noise.confidence + 0.2
    assert real.distance < noise.distance - 5
    assert real.digits == 10
    assert judge.scores(train[:50]).distance == 0  # a training digit is its own neighbour
    # The schedule: nearly clean at t = 0, nearly pure noise at the last step.
    schedule = dd.Schedule(200)
    assert schedule.abar[0] > 0.999 and schedule.abar[-1] < 1e-3
    assert bool((schedule.abar[1:] < schedule.abar[:-1]).all())


def test_side_by_side_training_stops_when_the_models_drift_apart(common: ModuleType) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))

    def batches(epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(x[:16], y[:16]), (x[16:], y[16:])]

    def accuracy(model: nn.Module) -> float:
        return float((model(x).argmax(1) == y).float().mean())

    same = nn.Linear(4, 3)
    twin = nn.Linear(4, 3)
    copy_weights(same, twin, x)
    history = common.train_side_by_side(
        {"a": same, "b": twin},
        batches,
        nn.functional.cross_entropy,
        accuracy,
        epochs=2,
        lr=1e-2,
        metric_name="accuracy",
    )
    assert len(history.epochs) == 2
    last = history.epochs[-1]
    assert (last["a"].loss, last["a"].metric) == (last["b"].loss, last["b"].metric)
    assert last["a"].loss < history.epochs[0]["a"].loss
    # A model with a dropout layer trains on different noise: caught after the first epoch.
    noisy = nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 3))
    copy_weights(same, noisy, x)
    with pytest.raises(common.EquivalenceError, match="epoch 1: a and b differ"):
        common.train_side_by_side(
            {"a": same, "b": noisy},
            batches,
            nn.functional.cross_entropy,
            accuracy,
            epochs=2,
            lr=1e-2,
            metric_name="accuracy",
        )


def test_the_dataflow_page_runs_as_shown() -> None:
    # docs/dataflow.md's Python blocks, in order, in one namespace: each asserts what it shows.
    page = (ROOT / "docs" / "dataflow.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", page, re.M | re.S)
    assert len(blocks) >= 7
    namespace: dict[str, Any] = {}
    for index, block in enumerate(blocks):
        exec(compile(block, f"docs/dataflow.md block {index}", "exec"), namespace)
    assert namespace["logits"].shape == (2, 5, 10)
    assert namespace["noise"].shape == (4, 1, 8, 8)
    assert namespace["out"].shape == (2, 3, 32)
