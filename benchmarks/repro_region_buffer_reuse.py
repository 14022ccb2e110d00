"""torch.compile (Inductor) gets gradients wrong around `nested_compile_region` calls.

Run with any torch: `python benchmarks/repro_region_buffer_reuse.py`. torch 2.13.0 and
2.14.1 print WRONG for Inductor with its default buffer reuse, and ok for aot_eager and for
Inductor with `allow_buffer_reuse=False`.

Why: a region's forward returns its input `x` among the activations saved for backward (the
`Linear` needs it), so the saved tensor is the caller's buffer. Inductor's outer wrapper does
not see that alias, takes the buffer as dead after the call, and reuses it for the next kernel
(`buf10 = buf1; del buf1  # reuse` in `TORCH_LOGS=output_code`): the `Linear` between the two
groups of regions overwrites an activation that backward reads later.
"""

import copy

import torch
from torch import nn


@torch.compiler.nested_compile_region
def region(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(layer(x)) + x


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
        self.middle = nn.Linear(4, 4)
        self.b = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.a:
            x = region(layer, x)
        x = self.middle(x)
        for layer in self.b:
            x = region(layer, x)
        return x


def main() -> None:
    print("torch", torch.__version__)
    x = torch.randn(5, 4, requires_grad=True)
    cases = {
        "aot_eager": {"backend": "aot_eager"},
        "inductor": {},
        "inductor, allow_buffer_reuse=False": {"options": {"allow_buffer_reuse": False}},
    }
    for name, kwargs in cases.items():
        torch.manual_seed(0)
        eager = Model()
        compiled = copy.deepcopy(eager)
        eager(x).square().sum().backward()
        torch._dynamo.reset()
        torch.compile(compiled, fullgraph=True, **kwargs)(x).square().sum().backward()
        worst = max(
            ((p.grad - q.grad).abs().max() / p.grad.abs().max()).item()
            for p, q in zip(eager.parameters(), compiled.parameters(), strict=True)
        )
        verdict = "ok" if worst < 1e-4 else "WRONG"
        print(f"{name}: largest relative gradient error {worst:.3g}: {verdict}")


if __name__ == "__main__":
    main()
