"""`Circuit`: a flat layer list with named skips and repeated blocks, as one `nn.Module`."""

from __future__ import annotations

from typing import Any

from torch import nn

from .block import Block
from .build import build_entries, build_per_repeat
from .config.build import build_circuit
from .config.describe import describe_circuit
from .diagram.draw import visualize
from .diagram.text import to_dot, to_mermaid
from .nodes import InputNode
from .program import run
from .regions import compile_in_place
from .resolve import plan_circuit
from .scope import Repeat, Scope
from .summary import summary

__all__ = ["Circuit"]


class Circuit(Scope):
    """A sequential container whose layer list may hold skip and block markers.

    Layers run in order, like `nn.Sequential`. `SaveInput(name)` remembers the current
    tensor and `GetInput(name, op)` combines it back in; `StartBlock(name, num_repeats)` ...
    `EndBlock(name)` runs the layers between them `num_repeats` times, each repeat with
    its own freshly initialised parameters unless `share_weights=True`. The list is checked
    and compiled once, here; `forward` only runs the result and keeps no state on the module.

    Beyond the main tensor, `inputs=` declares named inputs of `forward` (a mask, a
    timestep embedding), read with `GetInput` like skips saved before the first layer; with
    any `Output(name)` in the list, `forward` returns a dict of the outputs.

    Args:
        *layers: `nn.Module`s, markers, plain callables of one tensor (wrapped in
            `LambdaLayer`), or `(name, layer)` pairs registering a layer under `name`
            instead of its position.
        inputs: the named inputs of `forward` after the main tensor: a sequence of names
            (each required, in positional order) or a mapping from name to default.

    Examples:
        >>> model = Circuit(
        ...     nn.Conv2d(3, 64, 3, padding=1),
        ...     StartBlock("stage", num_repeats=3),
        ...     SaveInput("residual"),
        ...     nn.Conv2d(64, 64, 3, padding=1),
        ...     nn.ReLU(),
        ...     GetInput("residual", op=torch.add),
        ...     EndBlock("stage"),
        ... )
        >>> model(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 64, 32, 32])
    """

    def __init__(self, *layers: Any, inputs: Any = None) -> None:
        """Check `layers` and build the circuit; see the class docstring for what they may be.

        Raises `TypeError` or `ValueError` naming the offending item, its position and the
        fix; warns with `UnusedSaveWarning` for a save that nothing reads.
        """
        _check_moved_blocks(layers)
        plan = plan_circuit(
            layers, reserved=_reserved_names(type(self)), opaque=(Scope, Block), inputs=inputs
        )
        super().__init__()
        self._register(build_entries(plan.scope))
        self._set_plan(plan.scope)
        self._inputs = plan.inputs
        self._read_inputs = plan.read_inputs
        self._outputs = tuple(
            (name, slot, in_block)
            for (name, in_block), slot in zip(plan.outputs, plan.scope.output_slots, strict=True)
        )
        build_per_repeat(self)

    @property
    def input_nodes(self) -> tuple[InputNode, ...]:
        """The named inputs `forward` takes after the main tensor, in positional order."""
        return self._inputs

    def forward(self, x: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Run the layers on `x` and return the result; nothing is stored on the module.

        Named inputs follow `x`, by position or keyword, like a function's parameters. With
        outputs declared, the result is a dict of them in declaration order.
        """
        if self._inputs:
            handed = self._bind(args, kwargs)
        else:
            handed = []
            # Under torch.fx `args` is a proxy, which no check may look into.
            if (type(args) is tuple and args) or (type(kwargs) is dict and kwargs):
                self._bind(args, kwargs)  # raises: there are no named inputs to bind
        frame = self.open_frame(handed)
        x = run(self._steps, self._modules, x, frame)
        if not self._outputs:
            return x
        return {
            name: tuple(frame[slot]) if in_block else frame[slot][0]
            for name, slot, in_block in self._outputs
        }

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        """The values of the named inputs that are read, bound like a function's parameters."""
        inputs = self._inputs
        if type(args) is not tuple or type(kwargs) is not dict:  # torch.fx's proxies
            raise TypeError(
                "torch.fx.symbolic_trace cannot trace a Circuit with named inputs: forward "
                "binds them from *args and **kwargs, which fx passes as opaque proxies. Use "
                "torch.export.export(model, (x,), {'mask': mask}), which traces them."
            )
        if len(args) > len(inputs):
            raise TypeError(
                f"{self._signature()} takes {len(inputs)} named input"
                f"{'s' if len(inputs) != 1 else ''} after x, but {len(args)} "
                f"{'were' if len(args) != 1 else 'was'} given by position"
                + ("; declare them with Circuit(..., inputs=('mask',))." if not inputs else ".")
            )
        values = {node.name: value for node, value in zip(inputs, args, strict=False)}
        for name, value in kwargs.items():
            if name in values:
                raise TypeError(
                    f"{self._signature()} got the input {name!r} twice, by position and by "
                    "keyword; pass it once."
                )
            if not any(node.name == name for node in inputs):
                hint = (
                    f"the named inputs are {[node.name for node in inputs]}"
                    if inputs
                    else f"declare it with Circuit(..., inputs=({name!r},))"
                )
                raise TypeError(f"{self._signature()} got an unknown input {name!r}; {hint}.")
            values[name] = value
        missing = [node.name for node in inputs if node.required and node.name not in values]
        if missing:
            raise TypeError(
                f"{self._signature()} is missing the input{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(repr, missing))}; pass "
                f"{'them' if len(missing) > 1 else 'it'} after x, by position or keyword."
            )
        return [
            values.get(inputs[index].name, inputs[index].default) for index in self._read_inputs
        ]

    def _signature(self) -> str:
        parts = ["x"] + [
            node.name if node.required else f"{node.name}={node.default!r}" for node in self._inputs
        ]
        return f"Circuit.forward({', '.join(parts)})"

    def compile(self, **kwargs: Any) -> None:
        """Compile in place as one graph, each repeated block's body traced and compiled once.

        Like `torch.compile(model, **kwargs)`, but every block runs as one nested compile
        region in training too, so cold compile time stays nearly flat as `num_repeats` grows
        while the step runs as fast as the unrolled compile. With Inductor this compile turns
        off Inductor's buffer reuse (`allow_buffer_reuse=False`), which the regions need for
        correct gradients; `torch_circuit.regions.explain(model)` says how each block runs.
        """
        compile_in_place(self, **kwargs)  # issue 13: see torch_circuit.regions

    # Drawing and summaries live in their own modules (matplotlib is imported only when a
    # figure is drawn); each is documented once, there, and used here as a method.
    # In a notebook a bare `model` shows its text repr, as every module does; the diagram is
    # `model.visualize()`, whose figure displays as the interactive page.
    visualize = visualize
    summary = summary
    to_dot = to_dot
    to_mermaid = to_mermaid

    def to_config(self) -> dict[str, Any]:
        """The architecture as plain data (dicts, lists, strings, numbers) that `json.dumps`
        accepts and `Circuit.from_config` builds again; see docs/config.md.

        Raises `ValueError` naming the place (`layers[7].op`), the reason and the fix for
        anything it cannot describe exactly: a lambda, an unregistered class, a module
        changed after construction, a hook.

        Examples:
            >>> config = model.to_config()
            >>> config["layers"][0]
            {'Conv2d': {'in_channels': 3, 'out_channels': 64, 'kernel_size': 3, 'padding': 1}}
        """
        return describe_circuit(self, Circuit)

    @classmethod
    def from_config(cls, config: Any) -> Circuit:
        """Build the circuit a config describes, freshly initialised (see `to_config`).

        Nothing named in `config` is imported or evaluated: types are `torch.nn`'s layers and
        what this program registered with `torch_circuit.register`.

        Raises `TypeError`/`ValueError` that begin with the place in the document
        (`layers[14]`, `layers[3].Conv2d.padding`) and say what is wrong and the fix.

        Examples:
            >>> twin = Circuit.from_config(model.to_config())
        """
        model = build_circuit(config, cls)
        if not isinstance(model, Circuit):  # pragma: no cover - build_circuit calls cls(...)
            raise TypeError(f"{cls.__name__} is not a Circuit")
        return model


def _check_moved_blocks(layers: tuple[Any, ...]) -> None:
    """A block or repeat taken from another circuit cannot run without the skips it reads."""
    for position, item in enumerate(layers):
        layer = item[1] if isinstance(item, tuple) and len(item) == 2 else item
        if isinstance(layer, Block | Repeat):
            layer.check_runs_alone(f"position {position}")


def _reserved_names(circuit_class: type[Circuit]) -> frozenset[str]:
    """Names a block cannot take: attributes of the modules that hold blocks (`summary`)."""
    return frozenset(dir(circuit_class)) | frozenset(dir(Repeat)) | frozenset(vars(nn.Module()))
