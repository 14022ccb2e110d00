"""`shapes.trace_shapes` against the shapes a real forward produces, and its errors.

Every expected shape here is measured, not written down: forward hooks record what each layer
really returns when the model runs on a real tensor, and the trace must agree with them
occurrence by occurrence.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from torch_circuit import Circuit, EndBlock, GetInput, SaveInput, StartBlock
from torch_circuit.nodes import LayerNode, ReadNode, SaveNode, Visit, walk
from torch_circuit.shapes import ShapeError, ShapeTrace, as_example_input, trace_shapes


def resnet_unet() -> Circuit:
    """Strides, pooling, a projection shortcut, `cat` skips, shared weights, nested blocks."""
    return Circuit(
        nn.Conv2d(3, 8, 3, padding=1),  # 0
        nn.ReLU(),
        SaveInput("enc"),  # 2: read after the block, by a cat
        StartBlock("down", num_repeats=2),  # 3
        SaveInput("residual", transform=nn.Conv2d(8, 8, 1, stride=2)),  # 4: projection
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        GetInput("residual"),  # 7
        nn.ReLU(),
        EndBlock("down"),  # 9
        nn.Upsample(scale_factor=4),  # (B, 8, H, W) again
        GetInput("enc", op="cat"),  # 11: (B, 16, H, W)
        nn.Conv2d(16, 4, 1),
        StartBlock("outer", num_repeats=2),  # 13
        SaveInput("x"),
        StartBlock("inner", num_repeats=3, share_weights=True),  # 15
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Tanh(),
        EndBlock("inner"),
        GetInput("x", op=torch.mul),  # 19
        nn.MaxPool2d(2),
        EndBlock("outer"),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 5),
    )


class Recorder:
    """Forward hooks on every layer a circuit calls, recording real shapes in call order."""

    def __init__(self, model: Circuit) -> None:
        self.outputs: list[tuple[str, tuple[int, ...]]] = []
        self.inputs: list[tuple[str, tuple[int, ...]]] = []
        self.devices: set[torch.device] = set()
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        for name, module in model.named_modules():
            if _is_called_layer(model, name) or name.endswith(".transform"):
                self.handles.append(module.register_forward_pre_hook(self.pre(name)))
                self.handles.append(module.register_forward_hook(self.post(name)))

    def pre(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            self.inputs.append((name, tuple(args[0].shape)))

        return hook

    def post(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            self.outputs.append((name, tuple(output.shape)))
            self.devices.add(output.device)

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _is_called_layer(model: Circuit, name: str) -> bool:
    """A module the run loop calls: a layer of the layer list, not a marker or a block."""
    return any(
        isinstance(v, Visit) and isinstance(v.node, LayerNode) and v.key == name
        for v in walk(model)
    )


def real_run(model: Circuit, x: Tensor) -> tuple[Recorder, Tensor]:
    recorder = Recorder(model)
    try:
        with torch.no_grad():
            output = model(x)
    finally:
        recorder.remove()
    return recorder, output


def test_every_layer_occurrence_has_the_shape_a_real_forward_gives() -> None:
    torch.manual_seed(0)
    model = resnet_unet()
    x = torch.randn(2, 3, 8, 8)
    recorder, output = real_run(model.eval(), x)
    trace = trace_shapes(model, x.shape)
    layers = [v for v in walk(model) if isinstance(v, Visit) and isinstance(v.node, LayerNode)]
    real_layers = [entry for entry in recorder.outputs if not entry[0].endswith(".transform")]
    # One traced occurrence per real call, in forward order: paths differ per repeat even
    # where the shared block runs one module (key "outer.0.inner.0.16") three times.
    assert [(v.key, trace.outputs[v.path]) for v in layers] == real_layers
    assert len({v.path for v in layers}) == len(layers) == 26
    assert trace.input == (2, 3, 8, 8)
    assert trace.output == tuple(output.shape) == (2, 5)
    assert trace.outputs["output"] == (2, 5)


def test_saves_reads_and_blocks_have_their_real_shapes() -> None:
    torch.manual_seed(0)
    model = resnet_unet().eval()
    x = torch.randn(1, 3, 8, 8)
    recorder, _ = real_run(model, x)
    trace = trace_shapes(model, tuple(x.shape))
    real_inputs = dict(recorder.inputs)  # each layer's input in its last call
    real_transforms = [shape for name, shape in recorder.outputs if name.endswith(".transform")]
    saves = [v for v in walk(model) if isinstance(v, Visit) and isinstance(v.node, SaveNode)]
    # A save stores what its transform returns (the strided projection halves H and W).
    assert trace.saved["down.0.4"] == real_transforms[0] == (1, 8, 4, 4)
    assert trace.saved["down.1.4"] == real_transforms[1] == (1, 8, 2, 2)
    assert trace.saved["2"] == trace.outputs["1"] == (1, 8, 8, 8)
    assert {v.path for v in saves} == set(trace.saved)
    # A read's output is what the next layer receives: the cat doubles the channels.
    assert trace.outputs["11"] == real_inputs["12"] == (1, 16, 8, 8)
    assert trace.outputs["down.1.7"] == real_inputs["down.1.8"] == (1, 8, 2, 2)
    assert trace.outputs["outer.1.19"] == real_inputs["outer.1.20"] == (1, 4, 4, 4)
    # A block's own path holds its last repeat's output, which the next layer receives.
    assert trace.outputs["down"] == real_inputs["10"] == (1, 8, 2, 2)
    assert trace.outputs["outer"] == real_inputs["22"] == (1, 4, 2, 2)
    assert trace.outputs["outer.1.inner"] == (1, 4, 4, 4)
    reads = [v.path for v in walk(model) if isinstance(v, Visit) and isinstance(v.node, ReadNode)]
    assert all(path in trace.outputs for path in reads)


def test_an_example_tensor_keeps_its_dtype() -> None:
    model = Circuit(
        nn.Embedding(50, 6),
        SaveInput("x"),
        nn.Linear(6, 6),
        GetInput("x"),
        nn.Linear(6, 3),
    )
    tokens = torch.randint(0, 50, (2, 7))
    trace = trace_shapes(model, tokens)
    assert trace.input == (2, 7)
    assert trace.output == tuple(model(tokens).shape) == (2, 7, 3)
    assert trace.itemsize["0"] == torch.empty((), dtype=torch.float32).element_size()
    half = trace_shapes(model.half(), tokens)
    assert half.itemsize["0"] == 2


def test_as_example_input_makes_a_meta_tensor() -> None:
    example = as_example_input((2, 3, 4))
    assert example.device.type == "meta"
    assert example.shape == (2, 3, 4) and example.dtype == torch.float32
    assert as_example_input([5]).shape == (5,)
    tokens = as_example_input(torch.zeros(3, 9, dtype=torch.long))
    assert (tokens.device.type, tokens.shape, tokens.dtype) == ("meta", (3, 9), torch.long)
    assert as_example_input(torch.Size([1, 2])).shape == (1, 2)


NOT_A_SEQUENCE = r"must be a sequence of ints such as \(1, 3, 32, 32\) or an example tensor"
NOT_POSITIVE = r"must be a non-empty sequence of positive ints .* including the batch dimension"


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ("1,3,32,32", TypeError, NOT_A_SEQUENCE + r", got '1,3,32,32' \(str\)"),
        (32, TypeError, NOT_A_SEQUENCE + r", got 32 \(int\)"),
        ((), ValueError, NOT_POSITIVE + r"; got \(\)"),
        ((1, 0, 4), ValueError, NOT_POSITIVE + r"; got \(1, 0, 4\)"),
        ((1, -3), ValueError, NOT_POSITIVE + r"; got \(1, -3\)"),
        ((1, 2.5), ValueError, NOT_POSITIVE + r"; got \(1, 2.5\)"),
        ((True, 3), ValueError, NOT_POSITIVE + r"; got \(True, 3\)"),
    ],
)
def test_bad_input_shapes_say_what_is_expected(bad: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        as_example_input(bad)
    with pytest.raises(error, match=message):
        trace_shapes(Circuit(nn.ReLU()), bad)


def test_a_mismatch_at_the_top_level_names_the_layer_and_what_it_received() -> None:
    model = Circuit(nn.Flatten(), nn.Linear(10, 5))
    with pytest.raises(ShapeError) as caught:
        trace_shapes(model, (1, 12))
    assert str(caught.value) == (
        "input_shape (1, 12) does not fit the circuit: the layer at position 1 (Linear) at "
        "the top level receives a tensor of shape (1, 12) and fails with RuntimeError: mat1 "
        "and mat2 shapes cannot be multiplied (1x12 and 10x5). Shapes fit up to that layer; "
        "check input_shape, or the settings of that layer and the one before."
    )
    assert isinstance(caught.value, ValueError)  # callers catching ValueError still do
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_a_mismatch_in_a_later_repeat_names_the_repeat_and_the_block() -> None:
    # Repeat 0 maps 4 channels to 8; repeat 1 then receives 8 where its conv takes 4.
    model = Circuit(
        nn.Conv2d(3, 4, 1),
        StartBlock("stage", num_repeats=2),
        nn.Conv2d(4, 8, 1),
        EndBlock("stage"),
    )
    with pytest.raises(
        ShapeError,
        match=r"^input_shape \(1, 3, 5, 5\) does not fit the circuit: the layer at position 2 "
        r"\(Conv2d\) in repeat 1 of 2 of block 'stage' \(StartBlock at position 1\) receives "
        r"a tensor of shape \(1, 8, 5, 5\) and fails with RuntimeError: .*4 channels",
    ):
        trace_shapes(model, (1, 3, 5, 5))


def test_a_failing_read_in_nested_blocks_names_the_marker_and_every_enclosing_repeat() -> None:
    model = Circuit(
        StartBlock("outer", num_repeats=2),
        SaveInput("r"),
        StartBlock("inner", num_repeats=2),
        nn.Linear(4, 4),
        EndBlock("inner"),
        nn.Linear(4, 2),
        GetInput("r"),  # (B, 2) + (B, 4)
        EndBlock("outer"),
    )
    with pytest.raises(ShapeError) as caught:
        trace_shapes(model, (3, 4))
    message = str(caught.value)
    assert message.startswith(
        "input_shape (3, 4) does not fit the circuit: GetInput('r', op=add) at position 6 in "
        "repeat 0 of 2 of block 'outer' (StartBlock at position 0) receives a tensor of shape "
        "(3, 2) and fails with RuntimeError: The size of tensor a (2) must match"
    ), message
    innermost_first = (
        r"position 3 \(Linear\) in repeat 0 of 2 of block 'inner' \(StartBlock at position 2\) "
        r"in repeat 0 of 2 of block 'outer' \(StartBlock at position 0\) receives a tensor of "
        r"shape \(3, 5\)"
    )
    with pytest.raises(ShapeError, match=innermost_first):
        trace_shapes(model, (3, 5))


def test_the_trace_runs_on_meta_and_leaves_the_weights_untouched() -> None:
    torch.manual_seed(0)
    model = resnet_unet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    parameters = {name: p for name, p in model.named_parameters()}
    recorder = Recorder(model)
    try:
        trace = trace_shapes(model, (2, 3, 8, 8))
    finally:
        recorder.remove()
    # Every layer and transform ran, and only on meta tensors: the real modules never did.
    assert len(recorder.outputs) == 26 + 2
    assert recorder.devices == {torch.device("meta")}
    assert trace.output == (2, 5)
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key].device.type == "cpu", key
        assert torch.equal(after[key], value), key  # running stats included, in train mode
    for name, parameter in model.named_parameters():
        assert parameter is parameters[name] and parameter.grad is None
    assert all(module.training for module in model.modules())


class DataDependent(nn.Module):
    """Scales by the input's largest value: `.item()` cannot run on the meta device."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bool, bool]] = []  # (training, grad enabled) per real call

    def forward(self, x: Tensor) -> Tensor:
        scale = x.abs().amax().item()
        if x.device.type != "meta":
            self.calls.append((self.training, torch.is_grad_enabled()))
        return x / (scale + 1.0)


def fallback_layers() -> list[Any]:
    return [
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.Dropout(0.5),
        DataDependent(),
        StartBlock("block", num_repeats=2),
        SaveInput("r"),
        nn.Conv2d(4, 4, 1),
        GetInput("r"),
        EndBlock("block"),
        nn.Flatten(),
    ]


def test_a_module_meta_cannot_run_is_traced_for_real_in_eval_mode_without_grad() -> None:
    torch.manual_seed(0)
    model = Circuit(*fallback_layers()).train()
    model.get_submodule("1").eval()  # a mixed state, which the fallback must restore exactly
    flags = [(name, module.training) for name, module in model.named_modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 1, 6, 6)
    trace = trace_shapes(model, x.shape)
    # One real call, in eval mode, under no_grad:
    assert model.get_submodule("3").calls == [(False, False)]
    assert [(name, module.training) for name, module in model.named_modules()] == flags
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    with torch.no_grad():
        real = model.eval()(x)
    assert trace.output == tuple(real.shape) == (2, 4 * 4 * 4)
    assert trace.outputs["block.1.7"] == trace.outputs["3"] == (2, 4, 4, 4)


def test_the_fallback_restores_training_flags_when_it_fails_too() -> None:
    model = Circuit(*fallback_layers(), nn.Linear(10, 2)).train()
    with pytest.raises(
        ShapeError,
        match=r"the layer at position 10 \(Linear\) at the top level receives a tensor of "
        r"shape \(2, 64\) and fails with RuntimeError: mat1 and mat2",
    ):
        trace_shapes(model, (2, 1, 6, 6))
    assert all(module.training for module in model.modules())


def test_when_meta_and_real_runs_both_fail_the_real_error_is_reported() -> None:
    # The meta run's error only says meta cannot run the layer; the real one says why it fails.
    class Fails(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            if x.device.type == "meta":
                raise NotImplementedError("no meta kernel")
            raise RuntimeError("a real failure")

    real_error = (
        r"position 1 \(Fails\) at the top level receives a tensor of shape \(1, 3\) and fails "
        r"with RuntimeError: a real failure"
    )
    with pytest.raises(ShapeError, match=real_error):
        trace_shapes(Circuit(nn.Identity(), Fails()), (1, 3))


def test_a_trace_is_plain_data() -> None:
    trace = trace_shapes(Circuit(nn.Linear(3, 4)), (2, 3))
    assert trace == ShapeTrace(
        input=(2, 3), outputs={"0": (2, 4), "output": (2, 4)}, saved={}, itemsize=trace.itemsize
    )
    assert set(trace.itemsize) == {"0", "output"}
    assert ShapeTrace(input=(1, 2)).output == (1, 2)  # nothing ran: the input passes through
