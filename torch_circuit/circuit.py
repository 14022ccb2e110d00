"""`Circuit`: a flat layer list with named skips and repeated blocks, as one `nn.Module`."""

from __future__ import annotations

from typing import Any

from torch import nn

from .block import Block, Repeat, Scope
from .diagram.render import notebook_svg, visualize
from .diagram.text import to_dot, to_mermaid
from .plan import plan_circuit
from .program import run
from .summary import summary

__all__ = ["Circuit"]


class Circuit(Scope):
    """A sequential container whose layer list may hold skip and block markers.

    Layers run in order, like `nn.Sequential`. `SaveInput(name)` remembers the current
    tensor and `GetInput(name, op)` combines it back in; `StartBlock(name, num_repeats)` ...
    `EndBlock(name)` runs the layers between them `num_repeats` times, each repeat with
    its own freshly initialised parameters unless `share_weights=True`. The list is checked
    and compiled once, here; `forward` only runs the result and keeps no state on the module.

    Args:
        *layers: `nn.Module`s, markers, or plain callables of one tensor (wrapped in
            `LambdaLayer`).

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

    def __init__(self, *layers: Any) -> None:
        """Check `layers` and build the circuit; see the class docstring for what they may be.

        Raises `TypeError` or `ValueError` naming the offending item, its position and the
        fix; warns with `UnusedSaveWarning` for a save that nothing reads.
        """
        plan = plan_circuit(layers, reserved=_reserved_names(type(self)), opaque=(Scope, Block))
        super().__init__()
        self._build(plan)

    def forward(self, x: Any) -> Any:
        """Run the layers on `x` and return the result; nothing is stored on the module."""
        return run(self._steps, self._modules, x, [None] * self._num_locals)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Compile in place, one repeated block body at a time (regional compilation).

        If the circuit has top-level blocks with `num_repeats > 1`, each of their repeats
        is compiled with `torch.compile(*args, **kwargs)`; repeats of one block share their
        compiled code, so compile time stays flat as `num_repeats` grows. Other top-level
        layers then run eagerly, and a nested `Circuit` among them compiles itself by the
        same rule. A circuit without repeated top-level blocks is compiled whole, like any
        module.

        Use `torch.compile(model)` instead to compile the whole model as one graph.
        """
        repeated = [
            module
            for module in self._modules.values()
            if isinstance(module, Block) and module.num_repeats > 1
        ]
        if not repeated:
            super().compile(*args, **kwargs)
            return
        for block in repeated:
            for repeat in dict.fromkeys(block):  # a shared repeat is compiled once
                repeat.compile(*args, **kwargs)
        for module in self._modules.values():
            if isinstance(module, Circuit):
                module.compile(*args, **kwargs)

    # Drawing and summaries live in their own modules (matplotlib is imported only when a
    # figure is drawn); each is documented once, there, and used here as a method.
    visualize = visualize
    summary = summary
    to_dot = to_dot
    to_mermaid = to_mermaid

    def _repr_svg_(self) -> str:
        """The folded diagram, so that a Circuit displays itself inline in Jupyter."""
        return notebook_svg(self)


def _reserved_names(circuit_class: type[Circuit]) -> frozenset[str]:
    """Names a block cannot take: attributes of the modules that hold blocks (`summary`)."""
    return frozenset(dir(circuit_class)) | frozenset(dir(Repeat)) | frozenset(vars(nn.Module()))
