"""The preemption vote across two real gloo ranks: cast without waiting, the same answer on every rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys

WORKER = r"""
import datetime, json, sys
import torch.distributed as dist
from hpc_ft.train.preempt import PreemptFlag

rank, path = int(sys.argv[1]), sys.argv[2]
store = dist.FileStore(path, 2)
dist.init_process_group("gloo", store=store, rank=rank, world_size=2, timeout=datetime.timedelta(seconds=30))
flag = PreemptFlag()
out = {}
# 1. Casting does not wait for the other rank: rank 1 casts only after rank 0's cast has returned.
if rank == 0:
    flag.cast_vote()
    store.set("cast0", "done")
else:
    store.wait(["cast0"], datetime.timedelta(seconds=20))  # a blocking vote would leave rank 0 stuck: timeout
    flag.cast_vote()
out["quiet"] = flag.vote_result()
out["nothing_pending"] = flag.vote_result()
# 2. One rank's signal stops both.
flag.requested = rank == 1
flag.cast_vote()
out["one_asked"] = flag.vote_result()
print(json.dumps(out), flush=True)
dist.destroy_process_group()
"""


def test_vote_is_cast_in_the_background_and_agreed_by_all_ranks(tmp_path):
    store = tmp_path / "store"
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}  # loopback only, whatever the host name resolves to
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(r), str(store)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for r in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results == [{"quiet": False, "nothing_pending": False, "one_asked": True}] * 2


def test_vote_without_a_process_group_reads_the_local_flag():
    from hpc_ft.train.preempt import PreemptFlag

    flag = PreemptFlag()
    assert flag.vote_result() is False
    flag.requested = True
    flag.cast_vote()
    assert flag.vote_result() is True and flag.vote_result() is False
