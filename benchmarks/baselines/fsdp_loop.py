"""The raw baseline for hpc_ft's FSDP2 step: a hand-written torchrun loop with ``fully_shard``.

What someone writes without hpc_ft: init the process group, load the Hugging Face causal LM, ``fully_shard`` each
decoder layer and the root (the mixed-precision policy of ``--precision``), AdamW (fused with ``--fused``) with
linear warmup, one micro-batch of ``--seq-len`` tokens per worker per step, clip the gradient norm over the shards,
step. Rank 0 writes every step's end time to ``--out`` so the benchmark reads both sides the same way.

    torchrun --standalone --nproc-per-node=2 benchmarks/baselines/fsdp_loop.py --model-dir DIR \
        --precision fp32 --steps 20 --batch-size 8 --seq-len 128 --out /tmp/steps.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.distributed as dist

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--precision", default="fp32", choices=list(DTYPES))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8, help="global batch (samples per step, all workers)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--fused", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.tensor import DTensor
    from transformers import AutoModelForCausalLM

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir)
    model.config.use_cache = False
    mesh = init_device_mesh("cpu", (world,))
    dtype = DTYPES[args.precision]
    mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype else MixedPrecisionPolicy()
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, fused=args.fused or None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, args.warmup_steps)))
    micro = args.batch_size // world
    gen = torch.Generator().manual_seed(rank)
    vocab = model.config.vocab_size
    model.train()
    t0 = time.perf_counter()
    ends = []
    for _ in range(args.steps):
        ids = torch.randint(0, vocab, (micro, args.seq_len), generator=gen)
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
        loss.backward()
        params = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        norm = norm.full_tensor() if isinstance(norm, DTensor) else norm
        torch.nn.utils.clip_grads_with_norm_(params, args.grad_clip, norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        ends.append(time.perf_counter())
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump({"t0": t0, "step_ends": ends, "loss": float(loss)}, f)
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


if __name__ == "__main__":
    main()
