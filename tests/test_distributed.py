"""torch.distributed: DDP, FSDP2 and pipeline stages against single-process training.

Two real processes (gloo) run every scenario of ``_dist_workers.SCENARIOS`` once, in one
spawn, bounded in time; each test compares one scenario with the single-process reference
trained here. The splitting itself is also tested in-process, stage by stage.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _dist_workers as workers
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock
from torch_circuit.distributed import pipeline_stage, shard, split, split_points

WORLD_SIZE = 2
TIME_LIMIT_S = 150  # all scenarios together; a hung collective fails the tests here
LOSS_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
WEIGHT_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}

ROOT = Path(__file__).resolve().parents[1]


def spawn_and_wait(out_dir: Path, names: list[str], limit_s: float) -> None:
    """Run ``names`` on ``WORLD_SIZE`` spawned ranks; kill them and fail past ``limit_s``."""
    context = mp.start_processes(
        workers.worker,
        args=(WORLD_SIZE, str(out_dir / "rendezvous"), str(out_dir), names),
        nprocs=WORLD_SIZE,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + limit_s
    while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            pytest.fail(f"the distributed workers did not finish within {limit_s} s")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    """Every scenario's result on every rank, from one spawn of the worker processes."""
    out_dir = tmp_path_factory.mktemp("dist")
    names = workers.scenario_names()
    started = time.monotonic()
    spawn_and_wait(out_dir, names, TIME_LIMIT_S)
    print(f"\ndistributed scenarios: {time.monotonic() - started:.1f} s wall")
    found: dict[str, list[Any]] = {}
    for name in names:
        per_rank = [torch.load(out_dir / f"{name}.rank{r}.pt") for r in range(WORLD_SIZE)]
        for result in per_rank:
            if isinstance(result, dict) and "error" in result:
                pytest.fail(f"scenario {name} failed on a rank:\n{result['error']}")
        found[name] = per_rank
    return found


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[key].double() - b[key].double()).abs().max().item() for key in b)


def assert_parity(
    name: str,
    losses: list[float],
    state: dict[str, torch.Tensor],
    reference: tuple[list[float], dict[str, torch.Tensor]],
    initial: Any = workers.skip_circuit,
) -> None:
    ref_losses, ref_state = reference
    assert len(losses) == workers.STEPS
    assert sorted(state) == sorted(ref_state)
    loss_gap = max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True))
    weight_gap = largest_difference(state, ref_state)
    print(f"\n{name}: largest loss difference {loss_gap:.3g}, weight difference {weight_gap:.3g}")
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), **LOSS_TOLERANCE)
    for key, value in ref_state.items():
        torch.testing.assert_close(state[key], value, **WEIGHT_TOLERANCE, msg=key)
    # training moved the weights, so agreeing with the reference is not agreeing with the start
    start = initial().state_dict()
    assert largest_difference(state, {k: v for k, v in start.items() if k in state}) > 1e-2


@functools.cache
def reference(share_weights: bool = False, checkpoint: bool = False) -> Any:
    return workers.train_single(workers.skip_circuit(share_weights, checkpoint))


# --- DDP and FSDP2 ---


@pytest.mark.parametrize("share_weights", [False, True], ids=["independent", "shared"])
@pytest.mark.parametrize("checkpoint", [False, True], ids=["", "checkpoint"])
@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_data_parallel_trains_like_one_process(
    results: dict[str, list[Any]], kind: str, share_weights: bool, checkpoint: bool
) -> None:
    name = kind + ("_shared" if share_weights else "") + ("_checkpoint" if checkpoint else "")
    per_rank = results[name]
    (losses, state), (other_losses, other_state) = per_rank
    assert losses == other_losses  # every rank saw the same global loss
    assert largest_difference(state, other_state) == 0.0  # and holds the same weights
    assert_parity(name, losses, state, reference(share_weights, checkpoint))


def test_scenario_models_really_share_and_checkpoint() -> None:
    # the shared and checkpoint scenarios would prove nothing if these flags were lost
    shared = workers.skip_circuit(share_weights=True, checkpoint=True)
    assert list(shared.body._modules) == ["0"]
    assert shared.body.node.checkpoint
    assert len(list(workers.skip_circuit().body.children())) == 3


# --- Pipeline stages ---


@pytest.mark.parametrize(
    ("name", "stage_inputs"),
    [
        ("gpipe_repeat_boundary", ("x0", "stem")),
        ("1f1b_block_boundary", ("x0", "stem")),
        ("1f1b_inside_repeat", ("x0", "stem", "r")),
        ("gpipe_balanced", ("x0", "stem")),
        ("1f1b_checkpointed_repeats", ("x0", "stem")),
    ],
)
def test_two_stage_pipeline_trains_like_one_process(
    results: dict[str, list[Any]], name: str, stage_inputs: tuple[str, ...]
) -> None:
    (losses, first), (other_losses, second) = results[name]
    assert losses == other_losses
    assert first["inputs"] == () and second["outputs"] == ()
    assert first["outputs"] == second["inputs"] == stage_inputs  # the skips crossed over
    assert not set(first["state"]) & set(second["state"])  # each rank holds its own part
    assert_parity(name, losses, {**first["state"], **second["state"]}, reference())


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_named_inputs_and_outputs_train_like_one_process(
    results: dict[str, list[Any]], kind: str
) -> None:
    (losses, state), (other_losses, other_state) = results[f"{kind}_dataflow"]
    assert losses == other_losses
    assert largest_difference(state, other_state) == 0.0
    reference_run = workers.train_single_dataflow(workers.dataflow_circuit())
    assert_parity(f"{kind}_dataflow", losses, state, reference_run, workers.dataflow_circuit)


def test_a_named_input_travels_to_the_stage_that_reads_it(
    results: dict[str, list[Any]],
) -> None:
    (losses, first), (other_losses, second) = results["gpipe_named_input"]
    assert losses == other_losses
    assert first["inputs"] == ("scale",)  # the first stage takes the named input
    assert first["outputs"] == second["inputs"] == ("scale",)  # and hands it on
    reference_run = workers.train_single_dataflow(workers.dataflow_circuit(outputs=False))
    state = {**first["state"], **second["state"]}
    assert_parity(
        "gpipe_named_input",
        losses,
        state,
        reference_run,
        lambda: workers.dataflow_circuit(outputs=False),
    )


def test_bad_inputs_raise_on_every_rank_before_hanging(results: dict[str, list[Any]]) -> None:
    for messages in results["bad_inputs"]:
        assert "cannot split into 2 stages" in messages["too_many_stages"]
        assert "has 0 boundaries" in messages["too_many_stages"]
        assert "inside repeat 1 of block 'body'" in messages["inside_checkpointed_repeat"]
        assert "checkpoint=True" in messages["inside_checkpointed_repeat"]
        assert "make 3 stages, but the process group has 2 ranks" in messages["stages_for_ranks"]


def test_a_hanging_worker_fails_within_its_bound(tmp_path: Path) -> None:
    # one rank waits in a barrier the other never reaches: the bound must end the test
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="did not finish within 15 s"):
        spawn_and_wait(tmp_path, ["hang"], limit_s=15)
    assert time.monotonic() - started < 40
    assert (tmp_path / "waiting").exists()  # it was the hang that ran out the clock


# --- No process group ---


def test_shard_without_process_group_says_how_to_start_one() -> None:
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match=r"shard needs an initialised default process group"):
        shard(workers.skip_circuit())


def test_pipeline_stage_without_process_group_says_how_to_start_one() -> None:
    with pytest.raises(RuntimeError, match=r"init_process_group\('gloo' or 'nccl'\) first"):
        pipeline_stage(workers.skip_circuit())


# --- Splitting, in one process ---


def run_stages(stages: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Chain stages as a pipeline does: each boundary tensor arrives detached."""
    values: tuple[torch.Tensor, ...] = (x,)
    for stage in stages:
        received = [v.detach().requires_grad_(v.requires_grad) for v in values]
        out = stage(*received)
        values = out if isinstance(out, tuple) else (out,)
    return values[0]


@pytest.mark.parametrize(
    "at",
    [
        ["body"],
        ["body.1"],
        ["body.2"],
        ["12"],
        ["body.1.7"],
        ["body.0.9", "body.2.5"],
        ["body.1", "body.1.8", "13"],
        ["1", "body.1", "body.2.10", "14", "15"],
    ],
)
def test_stages_compute_the_model(at: list[str]) -> None:
    model = workers.skip_circuit()
    x = torch.randn(5, 6)
    stages = split(model, at=at)
    assert len(stages) == len(at) + 1
    values: tuple[torch.Tensor, ...] = (x,)
    for stage in stages:
        out = stage(*values)
        values = out if isinstance(out, tuple) else (out,)
    torch.testing.assert_close(values[0], model(x), rtol=0, atol=0)


def test_stage_state_dicts_partition_the_model() -> None:
    model = workers.skip_circuit()
    stages = split(model, at=["body.1.7", "13"])
    keys = [key for stage in stages for key in stage.state_dict()]
    assert sorted(keys) == sorted(model.state_dict())
    assert len(keys) == len(set(keys))
    assert "body.1.5.weight" in stages[0].state_dict()
    assert "body.1.7.weight" in stages[1].state_dict()
    # the model's own modules, not copies
    assert stages[1].get_submodule("body.1.7") is model.get_submodule("body.1.7")
    assert stages[0].get_submodule("body.0") is model.get_submodule("body.0")


def test_a_whole_model_checkpoint_loads_into_the_stages() -> None:
    trained, fresh = workers.skip_circuit(), workers.skip_circuit()
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(1.0)
    full = trained.state_dict()
    stages = split(fresh, at=["body.1.7"])
    for stage in stages:
        stage.load_state_dict({key: full[key] for key in stage.state_dict()})
    x = torch.randn(3, 6)
    torch.testing.assert_close(run_stages(stages, x), trained(x), rtol=0, atol=0)


def test_gradients_cross_stage_boundaries() -> None:
    # a skip carried over a boundary must bring its gradient back: compare with the model
    model = workers.skip_circuit()
    x = torch.randn(5, 6)
    model(x).square().sum().backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}  # type: ignore[union-attr]
    model.zero_grad()
    # as a pipeline does: detach at every boundary, then backpropagate stage by stage
    received: list[tuple[torch.Tensor, ...]] = []
    produced: list[tuple[torch.Tensor, ...]] = []
    values: tuple[torch.Tensor, ...] = (x,)
    for stage in split(model, at=["body.1.8", "13"]):
        received.append(tuple(v.detach().requires_grad_(v.requires_grad) for v in values))
        out = stage(*received[-1])
        values = out if isinstance(out, tuple) else (out,)
        produced.append(values)
    produced[-1][0].square().sum().backward()
    for outputs, inputs in zip(produced[-2::-1], received[:0:-1], strict=True):
        pairs = [(o, i.grad) for o, i in zip(outputs, inputs, strict=True) if i.grad is not None]
        assert len(pairs) >= 2  # x and at least one skip carry gradients back
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name], msg=name)


def test_split_points_are_block_and_repeat_boundaries() -> None:
    assert split_points(workers.skip_circuit()) == ["body", "body.1", "body.2", "12"]
    # tied weights cannot be cut, only split around
    assert split_points(workers.skip_circuit(share_weights=True)) == ["body", "12"]


def test_num_stages_balances_parameters() -> None:
    stages = split(workers.skip_circuit(), num_stages=2)
    counts = [sum(p.numel() for p in stage.parameters()) for stage in stages]
    # the stem (112) and three repeats (576 each) then the head (364): body.2 is the best cut
    assert counts == [112 + 2 * 576, 576 + 364]
    assert [len(split(workers.skip_circuit(), num_stages=n)) for n in (1, 3, 5)] == [1, 3, 5]


def test_more_stages_than_boundaries_is_refused() -> None:
    with pytest.raises(ValueError, match=r"cannot split into 6 stages: the circuit has 4 "):
        split(workers.skip_circuit(), num_stages=6)
    with pytest.raises(ValueError, match=r"has 0 boundaries at blocks and repeats \(\[\]\)"):
        split(Circuit(nn.Linear(2, 2), nn.ReLU()), num_stages=2)


def test_split_inside_a_checkpointed_repeat_is_refused() -> None:
    model = workers.skip_circuit(checkpoint=True)
    with pytest.raises(
        ValueError,
        match=r"'body.1.6' is inside repeat 1 of block 'body'.*"
        r"checkpoint=True.*Split between repeats instead, e.g. 'body.1'",
    ):
        split(model, at=["body.1.6"])
    assert len(split(model, at=["body.1"])) == 2  # between repeats is fine


def test_split_through_shared_weights_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'body.1' cuts block 'body'.*share weights"):
        split(workers.skip_circuit(share_weights=True), at=["body.1"])


@pytest.mark.parametrize(
    ("at", "error", "message"),
    [
        (["nope"], ValueError, r"'nope' names no layer or block at the top level; valid here"),
        (["body.3"], ValueError, r"'3' is not a repeat of block 'body'.*repeats 0 to 2"),
        (["1.0"], ValueError, r"'1' is not a block, so nothing can follow it"),
        (["body.1", "body"], ValueError, r"'body' comes at or before the previous one"),
        (["15.0"], ValueError, r"'15' is not a block"),
        (["0"], ValueError, r"'0' is at the start of the circuit"),
        ("body", TypeError, r"at='body' is one string; pass a list"),
        ([3], TypeError, r"split point 3 \(int\) is not a string"),
    ],
)
def test_bad_split_points_say_what_is_valid(at: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        split(workers.skip_circuit(), at=at)


def test_one_point_has_one_spelling() -> None:
    # before repeat 0 is before the block; after the last repeat is the next layer
    model = workers.skip_circuit()
    assert str(split(model, at=["body.0"])[0]) == str(split(model, at=["body"])[0])
    assert (
        split(model, at=["body.1.4"])[0]
        .extra_repr()
        .startswith("stage 0 of 2: from the start to body.1,")
    )


def test_split_needs_a_circuit_and_a_count() -> None:
    with pytest.raises(TypeError, match=r"split splits a Circuit, got Linear"):
        split(nn.Linear(2, 2), num_stages=2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"needs num_stages=N or at="):
        split(workers.skip_circuit())
    with pytest.raises(TypeError, match=r"num_stages must be a positive int, got '2' \(str\)"):
        split(workers.skip_circuit(), num_stages="2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"num_stages must be a positive int, got 0"):
        split(workers.skip_circuit(), num_stages=0)
    with pytest.raises(ValueError, match=r"num_stages=3 disagrees with at="):
        split(workers.skip_circuit(), num_stages=3, at=["body"])


def test_stage_called_with_the_wrong_inputs_says_what_it_takes() -> None:
    _, second = split(workers.skip_circuit(), at=["body.1"])
    with pytest.raises(TypeError, match=r"stage 1 takes x and 2 skips \['x0', 'stem'\], got 0"):
        second(torch.randn(2, 16))


def test_nested_blocks_split_at_any_depth() -> None:
    torch.manual_seed(0)
    model = Circuit(
        nn.Linear(4, 8),
        SaveInput("outer"),
        StartBlock("a", num_repeats=2),
        SaveInput("r"),
        StartBlock("b", num_repeats=3),
        nn.Linear(8, 8),
        GetInput("r"),
        GetInput("outer", op=torch.mul),
        EndBlock("b"),
        EndBlock("a"),
        nn.Linear(8, 2),
    )
    x = torch.randn(3, 4)
    stages = split(model, at=["a.0.b.2", "a.1.b.1.6"])
    # each skip crosses once: a block's captures are refilled from the enclosing scope
    assert stages[0].outputs == ("outer", "r")
    assert stages[1].outputs == ("outer", "r")
    torch.testing.assert_close(run_stages(stages, x), model(x), rtol=0, atol=0)


# --- The example, under torchrun and as a plain script ---

EXAMPLE = str(ROOT / "examples" / "train_distributed.py")


def run_example(command: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run the example's `command` to its end within 120 s; return its output."""
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        pytest.fail(f"{' '.join(command[1:])} did not finish within 120 s")
    assert process.returncode == 0, output
    return output


def test_example_trains_under_torchrun(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--standalone", EXAMPLE, "--steps", "3", "--mode", "all",
    ]  # fmt: skip
    output = run_example(command, env, tmp_path)
    for mode in ("ddp", "fsdp", "pipeline"):
        assert f"[{mode}] step 3" in output, output


def test_example_run_as_a_plain_script_starts_its_processes_and_matches_one(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [sys.executable, EXAMPLE, "--steps", "3", "--mode", "all"]
    output = run_example(command, env, tmp_path)
    assert "starting 2 processes" in output, output
    for mode in ("ddp", "fsdp", "pipeline"):
        assert f"[{mode}] step 3" in output, output
        parity = re.search(
            rf"\[{mode}\] matches one process: largest loss difference (\S+), largest weight "
            r"difference (\S+) over 3 steps",
            output,
        )
        assert parity is not None, output
        assert float(parity[1]) <= 1e-4 and float(parity[2]) <= 1e-4, parity[0]


def test_the_example_fails_when_training_drifts_from_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import train_distributed as example

    reference = ([1.0, 0.5], {"w": torch.ones(3)})
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    try:
        example.check_parity("ddp", ([1.0, 0.5 + 1e-7], {"w": torch.ones(3)}), reference)
        matches = (
            "[ddp] matches one process: largest loss difference 1.0e-07, largest weight "
            "difference 0.0e+00 over 2 steps"
        )
        assert matches in capsys.readouterr().out
        drifted = ([1.0, 0.5], {"w": torch.tensor([1.0, 1.0, 1.01])})
        with pytest.raises(SystemExit):
            example.check_parity("fsdp", drifted, reference)
        assert re.search(
            r"\[fsdp\] differs from one process: largest loss difference 0.00e\+00, largest "
            r"weight difference 1.00e-02",
            capsys.readouterr().err,
        )
    finally:
        dist.destroy_process_group()


def test_a_stage_block_iterates_indexes_and_prints_what_it_holds() -> None:
    model = workers.skip_circuit()
    first, second = split(model, at=["body.2"])
    head, tail = first.get_submodule("body"), second.get_submodule("body")
    assert [list(b.indices) for b in (head, tail)] == [[0, 1], [2]]
    assert list(head) == [model.body[0], model.body[1]]
    assert len(tail) == 1 and tail[2] is model.body[2]
    with pytest.raises(IndexError, match=r"repeat 0 of block 'body' does not run here; this"):
        tail[0]
    assert repr(tail).startswith("Block('body' ×3, this stage: repeat 2)(")
    assert repr(head).startswith("Block('body' ×3, this stage: repeats 0-1)(")


def test_a_stage_block_cut_inside_a_repeat_holds_the_part() -> None:
    model = workers.skip_circuit()
    first, second = split(model, at=["body.1.7"])
    head, tail = first.get_submodule("body"), second.get_submodule("body")
    assert head.indices == (0,) and tail.indices == (2,)  # repeat 1 runs step by step
    assert "(1): _Part(" in repr(head) and "(1): _Part(" in repr(tail)


def test_stages_carry_named_inputs_to_where_they_are_read() -> None:
    model = workers.dataflow_circuit(outputs=False)
    x, scale = torch.randn(5, 6), torch.rand(5, 16)
    for at in (["body.1"], ["body.1.4"], ["8"], ["body", "body.2", "8"]):
        stages = split(model, at=at)
        assert stages[0].inputs == ("scale",)
        values: tuple[torch.Tensor, ...] = (x, scale)
        for stage in stages:
            out = stage(*values)
            values = out if isinstance(out, tuple) else (out,)
        torch.testing.assert_close(values[0], model(x, scale), rtol=0, atol=0)
    assert split(model, at=["8"])[1].inputs == ()  # nothing after the block reads it


def test_a_split_of_a_circuit_with_outputs_or_stacks_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"split cannot cut a circuit with named outputs \(\['hidden', 'out'\]\)"
    ):
        split(workers.dataflow_circuit(), at=["body.1"])
    stacked = Circuit(
        StartBlock("d", num_repeats=2),
        SaveInput("s", push=True),
        EndBlock("d"),
        StartBlock("u", num_repeats=2),
        GetInput("s", pop=True),
        EndBlock("u"),
    )
    with pytest.raises(
        ValueError,
        match=r"split_points cannot cut a circuit with stacks of pushed skips \(\['s'\]\)",
    ):
        split_points(stacked)
