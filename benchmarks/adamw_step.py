"""Why hpc_ft's default optimizer is fused AdamW: one AdamW step on MiniLM-sized fp32 parameters (22.3M, with
gradients), torch's default implementation against ``fused=True``, on one CPU thread.

Each side: 3 warm-up steps, then the median of 20 timed steps, measured in the same run.

    python benchmarks/adamw_step.py
"""

from __future__ import annotations

import statistics
import time

import torch

# MiniLM-L6's parameter tensors, roughly: 6 layers of 4 attention (384x384) and 2 MLP (384x1536) matrices, and
# the word embeddings (30522x384).
SIZES = [384 * 384] * 4 * 6 + [384 * 1536] * 2 * 6 + [30522 * 384]


def step_ms(**kwargs) -> float:
    """Median wall time of one AdamW step, in milliseconds."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n)) for n in SIZES]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **kwargs)
    for _ in range(3):
        opt.step()
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    torch.set_num_threads(1)
    default, fused = step_ms(), step_ms(fused=True)
    print(f"AdamW step, {sum(SIZES) / 1e6:.1f}M params, 1 thread: default {default:.1f} ms, fused {fused:.1f} ms "
          f"(median of 20), fused/default = {fused / default:.2f}x")


if __name__ == "__main__":
    main()
