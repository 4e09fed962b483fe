"""A plain DDP training script as a user brings it: it imports nothing from hpc_ft.

It reads torchrun's variables, keeps its own checkpoint in --ckpt-dir (default: $HPC_FT_RUN_DIR, which hpc_ft
sets, else the working directory) and resumes from it. --hold-at K: after the checkpoint of step K, announce
it (hold_at_K in the checkpoint dir) and wait, bounded, for a signal to end the process (a preemption signal's
default action does), so a test can preempt it at a known step. The run's outcome is written to final.json.
"""

import argparse
import json
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--ckpt-every", type=int, default=2)
    ap.add_argument("--hold-at", type=int, default=0)
    ap.add_argument("--ckpt-dir", default=os.environ.get("HPC_FT_RUN_DIR", "."))
    args = ap.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = DDP(torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = os.path.join(args.ckpt_dir, "plain_ckpt.pt")
    start = 0
    if os.path.exists(ckpt):
        state = torch.load(ckpt)
        model.module.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
        print(f"rank {rank}: resumed from step {start}", flush=True)
    for step in range(start + 1, args.steps + 1):
        g = torch.Generator().manual_seed(step * world + rank)
        x = torch.randn(4, 8, generator=g)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.ckpt_every == 0:
            if rank == 0:
                tmp = ckpt + ".tmp"
                torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "step": step}, tmp)
                os.replace(tmp, ckpt)
            dist.barrier()
        if step == args.hold_at and start < args.hold_at:
            if rank == 0:
                open(os.path.join(args.ckpt_dir, f"hold_at_{step}"), "w").close()
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:  # ended by the test's signal; the deadline keeps it bounded
                time.sleep(0.1)
            raise SystemExit("held too long: no signal came")
    if rank == 0:
        with open(os.path.join(args.ckpt_dir, "final.json"), "w") as f:
            json.dump({"step": args.steps, "world_size": world, "resumed_from": start}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
