"""The raw baseline for hpc_ft's training step: a plain, hand-written torchrun DDP loop.

What someone writes without hpc_ft: init the process group, wrap the model in DDP, sample a batch,
autocast, backward, clip, AdamW (fused or torch's default kernel, ``--fused``) with linear warmup, print the loss every ``--log-every``
steps. Same model and data as hpc_ft's built-in tasks (imported from them: the task is not what is compared,
the loop is).
Rank 0 writes every step's end time to ``--out`` so the benchmark reads both sides the same way.

    torchrun --standalone --nproc-per-node=2 benchmarks/baselines/ddp_loop.py \
        --task minilm --precision bf16 --steps 60 --batch-size 16 --out /tmp/steps.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(task: str):
    if task == "minilm":
        from hpc_ft.train.tasks.text import MiniLMClassifier, chatterbot_intents

        data = chatterbot_intents()
        return MiniLMClassifier(num_labels=data.num_labels), data
    from hpc_ft.train.tasks.synthetic import MLPClassifier, gaussian_clusters

    data = gaussian_clusters()
    return MLPClassifier(num_features=16, num_labels=data.num_labels), data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=["minilm", "synthetic"], default="minilm")
    ap.add_argument("--precision", choices=list(DTYPES), default="bf16")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=16, help="global batch")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup-steps", type=int, default=20)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--grad-clip", type=float, default=1.0, help="max grad norm; 0 disables")
    ap.add_argument("--fused", action="store_true", help="AdamW(fused=True), as hpc_ft's default optimizer")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(0)
    model, data = build(args.task)
    ddp = DDP(model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, fused=args.fused or None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, args.warmup_steps)))
    dtype = DTYPES[args.precision]
    scaler = torch.amp.GradScaler("cpu", enabled=dtype is torch.float16)
    train = data.train
    n, per = train["labels"].shape[0], args.batch_size // world
    gen = torch.Generator().manual_seed(1 + rank)

    ends = []
    t0 = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(0, n, (per,), generator=gen)
        batch = {k: v[idx] for k, v in train.items()}
        labels = batch.pop("labels")
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            logits = ddp(**batch)
            loss = F.cross_entropy(logits.float(), labels)
        scaler.scale(loss).backward()
        if args.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sched.step()
        if (step + 1) % args.log_every == 0:
            value = loss.item()
            if rank == 0:
                print(f"step {step + 1}: loss {value:.4f}", flush=True)
        ends.append(time.perf_counter())
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump({"t0": t0, "step_ends": ends, "batch_size": args.batch_size, "world": world}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # Skip interpreter finalization as hpc_ft's worker does: a plain gloo loop like this one aborts there
    # about once in 20 runs on a loaded machine, which would fail the benchmark.
    from hpc_ft.train.__main__ import exit_now

    exit_now(0)
