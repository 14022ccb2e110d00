"""``Circuit``: a flat layer list with named skips and repeated blocks, as one ``nn.Module``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .block import Scope
from .plan import plan_circuit
from .program import run

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Circuit"]


class Circuit(Scope):
    """A sequential container whose layer list may hold skip and block markers.

    Layers run in order, like ``nn.Sequential``. ``SaveInput(name)`` remembers the current
    tensor and ``GetInput(name, op)`` combines it back in; ``StartBlock(name, num_repeats)`` ...
    ``EndBlock(name)`` runs the layers between them ``num_repeats`` times, each repeat with
    its own freshly initialised parameters unless ``share_weights=True``. The list is checked
    and compiled once, here; ``forward`` only runs the result and keeps no state on the module.

    Args:
        *layers: ``nn.Module``s, markers, or plain callables of one tensor (wrapped in
            ``LambdaLayer``).

    Example::

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
        plan = plan_circuit(layers)
        super().__init__()
        self._build(plan)

    def forward(self, x: Any) -> Any:
        return run(self._steps, self._modules, x, [None] * self._num_locals)

    # Drawing and summaries live in their own modules; matplotlib is imported only there.

    def visualize(
        self,
        save_path: str | None = None,
        *,
        show_repeats: bool = True,
        figsize: tuple[float, float] | None = None,
        color_map: Mapping[str, str] | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> Figure:
        """Draw the circuit as a diagram and return the matplotlib ``Figure``.

        Args:
            save_path: where to write the diagram; the extension picks PDF, PNG or SVG.
            show_repeats: ``True`` draws each block once in a frame labelled ``name ×N``;
                ``False`` draws every repeat.
            figsize: the figure size in inches; by default it follows the content.
            color_map: colours by layer family, overriding the defaults.
            input_shape: an input shape, to label every edge with its tensor shape.

        Example::

            >>> fig = model.visualize("architecture.pdf")
        """
        from .render import visualize

        return visualize(
            self,
            save_path,
            show_repeats=show_repeats,
            figsize=figsize,
            color_map=color_map,
            input_shape=input_shape,
        )

    def summary(self, input_shape: Sequence[int] | None = None) -> str:
        """A text table: a row per layer grouped by block and repeat, shapes and parameters."""
        from .summary import summary

        return summary(self, input_shape=input_shape)

    def to_dot(self, show_repeats: bool = True) -> str:
        """The diagram as Graphviz DOT source."""
        from .text_diagrams import to_dot

        return to_dot(self, show_repeats=show_repeats)

    def to_mermaid(self, show_repeats: bool = True) -> str:
        """The diagram as a Mermaid flowchart."""
        from .text_diagrams import to_mermaid

        return to_mermaid(self, show_repeats=show_repeats)
