"""`Scope`: a module that runs a compiled scope, the top level of a `Circuit` or one repeat.

A scope's children are its layers, markers and blocks, registered in forward order under their
keys (argument positions, names of named layers, block names). Its plan (`plan.ScopePlan`)
says which steps to run and how its frame is laid out; `open_frame` and `close_frame` turn
the arguments of a call into a frame and the frame back into the call's result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from .nodes import InputNode, Node, Source
from .plan import Port, ScopePlan
from .program import Step, run, spread

__all__ = ["Repeat", "Scope", "describe_needs"]


def layered_repr(root: nn.Module) -> str:
    """`repr(root)` as `nn.Module` writes it, without recursing through nested circuits.

    Scopes and blocks format themselves from their children's reprs (`repr_with`); the walk
    computes those children first, with a stack of its own, so a repr of blocks nested
    hundreds deep stays within Python's recursion limit.
    """
    done: dict[int, str] = {}
    stack: list[tuple[nn.Module, bool]] = [(root, False)]
    while stack:
        module, ready = stack.pop()
        if id(module) in done:
            continue
        layered = getattr(module, "repr_with", None)
        if layered is None:
            done[id(module)] = repr(module)
            continue
        if not ready:
            stack.append((module, True))
            stack.extend((child, False) for child in module._modules.values() if child is not None)
            continue
        done[id(module)] = layered(
            {key: done[id(child)] for key, child in module._modules.items() if child is not None}
        )
    return done[id(root)]


def describe_needs(captured: Sequence[tuple[str, Source]], pops: Sequence[str]) -> str:
    """`the skip 'r' (SaveInput at position 0)`, and the stacks popped from outside."""
    parts = [
        f"the skip {name!r} (SaveInput at position {source})"
        if isinstance(source, int)
        else f"the input {name!r}"
        for name, source in captured
    ]
    parts += [f"a tensor pushed outside it onto the stack {name!r}" for name in pops]
    return ", ".join(parts)


class Scope(nn.Module):
    """A module that runs a compiled scope: the top level of a `Circuit`, or one repeat.

    Its children are the scope's layers, markers and blocks, registered in forward order
    under their keys.
    """

    _steps: tuple[Step, ...]
    _num_captures: int
    _num_locals: int
    _nodes: tuple[Node, ...]
    _port: Port
    _lists: int  # stacks and outputs: the last slots of the frame
    _fill: tuple[tuple[int, int], ...]  # where the tensors handed in go: stack slot, count
    _returns: tuple[int, ...]  # the slots whose values follow x in the result
    _captured: tuple[tuple[str, Source], ...]

    def _set_plan(self, plan: ScopePlan) -> None:
        lists = len(plan.stack_slots) + len(plan.output_slots)
        self._steps = plan.steps
        self._num_captures = plan.num_captures
        self._num_locals = plan.num_slots - plan.num_captures - lists
        self._nodes = plan.nodes
        self._port = plan.port
        self._lists = lists
        self._captured = plan.captured
        takes = [count for _, count, _ in plan.port.stacks]
        self._fill = tuple((s, n) for s, n in zip(plan.stack_slots, takes, strict=True) if n)
        gives = [count for _, _, count in plan.port.stacks]
        self._returns = (
            tuple(s for s, n in zip(plan.stack_slots, gives, strict=True) if n) + plan.output_slots
        )

    def __repr__(self) -> str:
        return layered_repr(self)

    def repr_with(self, children: Mapping[str, str]) -> str:
        """This scope's repr, given its children's (as `nn.Module.__repr__` lays it out)."""
        lines = [f"({key}): {text}".replace("\n", "\n  ") for key, text in children.items()]
        if not lines:
            return f"{type(self).__name__}()"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"

    def _register(self, entries: Mapping[str, nn.Module]) -> None:
        for key, module in entries.items():
            self.add_module(key, module)

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The declared structure of this scope, as plain data (see `torch_circuit.nodes`)."""
        return self._nodes

    @property
    def input_nodes(self) -> tuple[InputNode, ...]:
        """The named inputs of this scope's `forward` (a `Circuit`'s; none for a repeat)."""
        return ()

    @property
    def steps(self) -> tuple[Step, ...]:
        """The steps `forward` runs, in order (see `torch_circuit.program`)."""
        return self._steps

    @property
    def num_captures(self) -> int:
        """How many outer skips this scope receives: the first slots of its frame."""
        return self._num_captures

    @property
    def num_slots(self) -> int:
        """The size of this scope's frame: captured skips, own saves, stacks, outputs."""
        return self._num_captures + self._num_locals + self._lists

    @property
    def port(self) -> Port:
        """What a run exchanges with the scope around it: stacks and outputs."""
        return self._port

    def run_steps(self, steps: Sequence[Step], x: Any, frame: list[Any]) -> Any:
        """Run `steps` (some of `self.steps`) on `x` with the skips in `frame`."""
        return run(steps, self._modules, x, frame)

    def open_frame(self, args: Sequence[Any]) -> list[Any]:
        """The frame of a call with `args`: the captured skips, then (if the scope pops from
        outside) one list of the tensors it is handed, which this empties."""
        if not self._lists:
            return [*args, *([None] * self._num_locals)]
        count = self._num_captures
        frame = [*args[:count], *([None] * self._num_locals), *([] for _ in range(self._lists))]
        if self._fill:
            spread(frame, self._fill, args[count])
            args[count].clear()  # the frame holds them now: each is released when it is popped
        return frame

    def close_frame(self, x: Any, frame: list[Any]) -> Any:
        """The result of a call: `x`, or `(x, *values)` if the scope pushes or has outputs."""
        if not self._returns:
            return x
        return (x, *(value for slot in self._returns for value in frame[slot]))


class Repeat(Scope):
    """One repeat of a block body; `forward` takes the outer skips the body reads.

    Args:
        plan: the body's plan.
        entries: the modules to register, by key, in forward order.
    """

    def __init__(self, plan: ScopePlan, entries: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self._register(entries)
        self._set_plan(plan)

    def forward(self, x: Any, *args: Any) -> Any:
        """Run the body on `x`; `args` are the outer skips it reads, in plan order, then (if
        it pops from outside the repeat) one list of the tensors it takes."""
        if len(args) != self._num_captures + bool(self._fill):
            raise TypeError(self._needs_message(f"got {len(args)} argument(s) after x"))
        frame = self.open_frame(args)
        return self.close_frame(run(self._steps, self._modules, x, frame), frame)

    def check_runs_alone(self, where: str) -> None:
        """Raise `TypeError` if this repeat reads skips saved outside it (then it runs only
        in the circuit it was built in); `where` says where it was found."""
        if self._captured or self._fill:
            raise TypeError(self._needs_message(f"{where} holds it alone"))

    def _needs_message(self, problem: str) -> str:
        pops = [name for (name, takes, _) in self._port.stacks if takes]
        return (
            f"this repeat reads {describe_needs(self._captured, pops)}, saved outside it in "
            f"the circuit it was built in, but {problem}; it runs only there. Build it anew "
            "from its layers to use it elsewhere."
        )
