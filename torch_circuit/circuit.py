"""`Circuit`: a flat layer list with named skips and repeated blocks, as one `nn.Module`."""

from __future__ import annotations

from typing import Any

from torch import nn

from .block import Block, Repeat, Scope
from .diagram.render import notebook_svg, visualize
from .diagram.text import to_dot, to_mermaid
from .plan import plan_circuit
from .program import run
from .regions import compile_in_place
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

    Example:

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
