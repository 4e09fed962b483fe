"""A script that uses hpc_ft's contract (hpc_ft.script_api): progress, a metric, preemption and requeue.

--lr sets the learning rate (swept by the tests); --stop-after K: after step K, act as if preempted (checkpoint,
exit for requeue) unless the run resumed past K.
"""

import argparse
import gc
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from hpc_ft import script_api

BATCH = 8  # samples per rank and step
TOKENS_PER_SAMPLE = 16


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--stop-after", type=int, default=0)
    args = ap.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = DDP(torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    ckpt = script_api.run_dir() / "contract_ckpt.pt"
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt)
        model.module.load_state_dict(state["model"])
        start = state["step"]
    for step in range(start + 1, args.steps + 1):
        g = torch.Generator().manual_seed(step * world + rank)
        x = torch.randn(BATCH, 8, generator=g)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        samples = step * BATCH * world
        script_api.report(step, samples=samples, tokens=samples * TOKENS_PER_SAMPLE, flops_per_sample=6 * 18,
                          loss=float(loss), eval_accuracy=0.5 + step / 100)
        if script_api.preempted() or (step == args.stop_after and start < args.stop_after):
            if rank == 0:
                torch.save({"model": model.module.state_dict(), "step": step}, ckpt)
            dist.barrier()
            script_api.exit_for_requeue(step)
    # Every rank done before any tears gloo down: a rank still destroying its process group when its peer's
    # connections close can die in std::terminate (SIGABRT at exit, seen once in CI). DDP's reducer holds the
    # group and its last gloo work inside reference cycles: release them while the interpreter is whole, not at
    # its finalization (seen once more, locally, in the resumed run of the requeue test).
    dist.barrier()
    del model, opt
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
