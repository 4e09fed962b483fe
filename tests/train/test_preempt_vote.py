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
# 3. Ranks propose different distances to the next vote (their own step times); both take the smallest.
flag.requested = False
flag.steps_to_next_vote = lambda step: 5 if rank == 0 else 3
flag.cast_vote(step=10)
flag.vote_result()
out["due"] = [s for s in range(10, 20) if flag.cast_vote(step=s) and not flag.vote_result()]
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
    assert results == [{"quiet": False, "nothing_pending": False, "one_asked": True, "due": [13, 16, 19]}] * 2


def test_vote_without_a_process_group_reads_the_local_flag():
    from hpc_ft.train.preempt import PreemptFlag

    flag = PreemptFlag()
    assert flag.vote_result() is False
    flag.requested = True
    flag.cast_vote()
    assert flag.vote_result() is True and flag.vote_result() is False


def _count_votes(monkeypatch, step_s: float, steps: int) -> list[int]:
    """The steps a vote is cast after, on one rank whose steps each take ``step_s`` (a fake clock)."""
    from hpc_ft.train import preempt

    now = [0.0]
    monkeypatch.setattr(preempt.time, "monotonic", lambda: now[0])
    flag = preempt.PreemptFlag()
    cast = []
    for step in range(1, steps + 1):
        now[0] += step_s
        flag.vote_result()  # the loop reads the pending vote after each step, then casts when due
        if flag.cast_vote(step=step):
            cast.append(step)
    return cast


def test_fast_steps_vote_about_every_interval_slow_steps_every_step(monkeypatch):
    from hpc_ft.train.preempt import MAX_STEPS_BETWEEN_VOTES, VOTE_INTERVAL_S

    fast = _count_votes(monkeypatch, step_s=0.002, steps=400)  # 2 ms steps: a vote every 50 steps (0.1 s)
    gaps = [b - a for a, b in zip(fast[1:], fast[2:])]
    assert fast[:2] == [1, 2] and all(45 <= g <= VOTE_INTERVAL_S / 0.002 for g in gaps) and len(fast) < 12
    slow = _count_votes(monkeypatch, step_s=1.0, steps=20)  # 1 s steps: every step, as a signal can't wait
    assert slow == list(range(1, 21))
    tiny = _count_votes(monkeypatch, step_s=1e-6, steps=400)  # capped: a vote at least every 100 steps
    assert max(b - a for a, b in zip(tiny, tiny[1:])) == MAX_STEPS_BETWEEN_VOTES
