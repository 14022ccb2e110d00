"""``Circuit``: a flat layer list with named skips and repeated blocks, as one ``nn.Module``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from .block import Block, Repeat, Scope
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
        plan = plan_circuit(layers, reserved=_reserved_names(type(self)))
        super().__init__()
        self._build(plan)

    def forward(self, x: Any) -> Any:
        return run(self._steps, self._modules, x, [None] * self._num_locals)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Compile in place, one repeated block body at a time (regional compilation).

        If the circuit has top-level blocks with ``num_repeats > 1``, each of their repeats
        is compiled with ``torch.compile(*args, **kwargs)``; repeats of one block share their
        compiled code, so compile time stays flat as ``num_repeats`` grows. Other top-level
        layers then run eagerly, and a nested ``Circuit`` among them compiles itself by the
        same rule. A circuit without repeated top-level blocks is compiled whole, like any
        module.

        Use ``torch.compile(model)`` instead to compile the whole model as one graph.
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

    # Drawing and summaries live in their own modules; matplotlib is imported only there.

    def visualize(
        self,
        save_path: str | None = None,
        *,
        show_repeats: bool = True,
        figsize: tuple[float, float] | None = None,
        color_map: Mapping[str, str] | None = None,
        input_shape: Sequence[int] | Tensor | None = None,
        max_column_height: float | None = None,
        dpi: float = 150,
    ) -> Figure:
        """Draw the circuit as a diagram and return the matplotlib ``Figure``.

        Args:
            save_path: where to write the diagram; the extension picks PDF, PNG or SVG.
            show_repeats: ``True`` draws each block once in a frame labelled ``name ×N``;
                ``False`` draws every repeat.
            figsize: the figure size in inches; by default it follows the content.
            color_map: colours by layer family, overriding the defaults.
            input_shape: an input shape (or an example input tensor), to label every edge
                with its tensor shape; computed on the meta device, without copying weights.
            max_column_height: the tallest a column may grow, in inches, before the diagram
                wraps into another column.
            dpi: resolution of raster output (PNG) and of the inline notebook image.

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
            max_column_height=max_column_height,
            dpi=dpi,
        )

    def summary(self, input_shape: Sequence[int] | Tensor | None = None) -> str:
        """A text table: a row per layer grouped by block and repeat, shapes and parameters."""
        from .summary import summary

        return summary(self, input_shape=input_shape)

    def to_dot(
        self, show_repeats: bool = True, *, input_shape: Sequence[int] | Tensor | None = None
    ) -> str:
        """The diagram as Graphviz DOT source (needs no Graphviz to produce)."""
        from .text_diagrams import to_dot

        return to_dot(self, show_repeats=show_repeats, input_shape=input_shape)

    def to_mermaid(
        self, show_repeats: bool = True, *, input_shape: Sequence[int] | Tensor | None = None
    ) -> str:
        """The diagram as a Mermaid flowchart, for Markdown pages that render Mermaid."""
        from .text_diagrams import to_mermaid

        return to_mermaid(self, show_repeats=show_repeats, input_shape=input_shape)

    def _repr_svg_(self) -> str:
        """The folded diagram, so that a Circuit displays itself inline in Jupyter."""
        from .render import notebook_svg

        return notebook_svg(self)


def _reserved_names(circuit_class: type[Circuit]) -> frozenset[str]:
    """Names a block cannot take: attributes of the modules that hold blocks (``summary``)."""
    return frozenset(dir(circuit_class)) | frozenset(dir(Repeat)) | frozenset(vars(nn.Module()))
