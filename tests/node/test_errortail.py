"""A failed node's error tail is the traceback of the rank that failed first (hpc_ft.node.errortail).

The logs below are real torchrun 2.13 output (``--tee=3``, prefix ``[rank${rank}]: ``), trimmed: torchrun's own
ChildFailedError traceback is cut to its first and last frames, library frames of the workers are left out, long
messages are shortened ("...") and long lines are continued with a backslash (one line in the text).
"""

from __future__ import annotations

from hpc_ft.node.errortail import TAIL_LINES, collapse_prefix, error_tail

# A user's script without @record (fail.py of the trial): rank 1 raises; rank 0 is stopped by torchrun (SIGTERM).
PLAIN_SCRIPT = """\
[rank0]: starting
[rank1]: Traceback (most recent call last):
[rank1]:   File "/work/trial/scratch/fail.py", line 3, in <module>
[rank1]:     raise ValueError("boom on rank 1: bad shape (3, 4)")
[rank1]: ValueError: boom on rank 1: bad shape (3, 4)
W1202 06:13:51.917000 23689 torch/distributed/elastic/multiprocessing/api.py:1028]\
 Sending process 23776 closing signal SIGTERM
E1202 06:13:52.017000 23689 torch/distributed/elastic/multiprocessing/api.py:1002]\
 failed (exitcode: 1) local_rank: 1 (pid: 23777) of binary: /work/main/.venv/bin/python
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/work/main/.venv/lib/python3.11/site-packages/torch/distributed/launcher/api.py", line 383, in launch_agent
    raise ChildFailedError(
torch.distributed.elastic.multiprocessing.errors.ChildFailedError: 
============================================================
/work/trial/scratch/fail.py FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-12-02_06:13:52
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 23776)  (SIGTERM)
  error_file: <N/A>
  traceback : Signal 15 (SIGTERM) received by PID 23776
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-02_06:13:51
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : 1 (pid: 23777) 
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
"""

# hpc_ft's loop (@record): rank 0's own error, rank 1's follow-on gloo error printed after it (cls_long of the trial).
# torch.distributed's excepthook prefixes the lines itself: torchrun's prefix in front of it is collapsed.
RECORDED = """\
[rank0]: [rank0]: Traceback (most recent call last):
[rank0]: [rank0]:   File "/work/main/hpc_ft/train/loop.py", line 283, in forward_backward
[rank0]: [rank0]:     loss = self.loss_scale.loss(self.objective.forward(self.fwd, batch), batch)
[rank0]: [rank0]: RuntimeError: The expanded size of the tensor (120) must match the existing size (64)\
 at non-singleton dimension 1.  Target sizes: [8, 120].  Tensor sizes: [1, 64]
[rank1]: [rank1]: Traceback (most recent call last):
[rank1]: [rank1]:   File "/work/main/hpc_ft/train/loop.py", line 284, in forward_backward
[rank1]: [rank1]:     self.scaler.scale(loss).backward()
[rank1]: [rank1]: RuntimeError: [/__w/.../gloo/transport/tcp/pair.cc:553]\
 Connection closed by peer [127.0.0.1]:21909. This is ... GLHF! 🏖️
W1202 06:07:04.350000 15898 torch/distributed/elastic/multiprocessing/api.py:1028]\
 Sending process 15956 closing signal SIGTERM
E1202 06:07:04.417000 15898 torch/distributed/elastic/multiprocessing/api.py:1002]\
 failed (exitcode: 1) local_rank: 0 (pid: 15955) of binary: /work/main/.venv/bin/python
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
    raise ChildFailedError(
torch.distributed.elastic.multiprocessing.errors.ChildFailedError: 
============================================================
hpc_ft.train FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-12-02_06:07:04
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -15 (pid: 15956)  (SIGTERM)
  error_file: /tmp/hpc_ft-torchrun-x/none_63l65dyd/attempt_0/1/error.json
  traceback : Traceback (most recent call last):
    File "/work/main/hpc_ft/train/loop.py", line 284, in forward_backward
      self.scaler.scale(loss).backward()
  RuntimeError: [/__w/.../gloo/transport/tcp/pair.cc:553]\
 Connection closed by peer [127.0.0.1]:21909. This is ... GLHF! 🏖️
  
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-02_06:07:04
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 15955) 
  error_file: /tmp/hpc_ft-torchrun-x/none_63l65dyd/attempt_0/0/error.json
  traceback : Traceback (most recent call last):
    File "/work/main/hpc_ft/train/loop.py", line 283, in forward_backward
      loss = self.loss_scale.loss(self.objective.forward(self.fwd, batch), batch)
  RuntimeError: The expanded size of the tensor (120) must match the existing size (64)\
 at non-singleton dimension 1.  Target sizes: [8, 120].  Tensor sizes: [1, 64]
  
============================================================
"""

EXPANDED = "RuntimeError: The expanded size of the tensor (120) must match the existing size (64)"


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def test_a_plain_scripts_tail_is_the_traceback_of_the_rank_torchrun_names_first():
    tail = error_tail(_lines(PLAIN_SCRIPT))
    assert tail.splitlines()[0].startswith("rank 1 failed (exit code 1")
    assert 'raise ValueError("boom on rank 1: bad shape (3, 4)")' in tail
    assert tail.rstrip().splitlines()[-1] == "ValueError: boom on rank 1: bad shape (3, 4)"  # the last line: the error
    assert "ChildFailedError" not in tail and "To enable traceback" not in tail


def test_a_follow_on_gloo_error_does_not_hide_the_first_ranks_error():
    tail = error_tail(_lines(RECORDED))
    assert tail.splitlines()[0].startswith("rank 0 failed (exit code 1; torchrun's first observed failure)")
    assert tail.rstrip().splitlines()[-1].startswith(EXPANDED)
    assert "Connection closed by peer" not in tail and "[rank" not in tail


def test_torchruns_root_cause_that_is_a_follow_on_gives_way_to_the_rank_with_its_own_error():
    """torchrun orders failures by their error files' time in whole seconds: in a tie it can name the peer whose
    error is the follow-on (rank 1 here) as the first failure."""
    blocks = RECORDED[RECORDED.index("Failures:\n") + len("Failures:\n"):]
    gloo_block, _, rest = blocks.partition("-" * 60 + "\nRoot Cause (first observed failure):\n")
    own_block = rest.partition("=" * 60)[0]
    tie = (RECORDED[:RECORDED.index("Failures:")] + "Failures:\n"
           + own_block.replace("[0]:", "[1]:") + "-" * 60 + "\nRoot Cause (first observed failure):\n"
           + gloo_block.replace("[1]:", "[0]:").replace("-15 (pid: 15956)  (SIGTERM)", "1 (pid: 15956)")
           + "=" * 60 + "\n")
    assert "Connection closed by peer" in tie[tie.index("Root Cause"):]  # torchrun's root cause: the follow-on
    tail = error_tail(_lines(tie))
    assert tail.rstrip().splitlines()[-1].startswith(EXPANDED), tail
    assert tail.splitlines()[0].startswith("rank 0 failed") and "torchrun named rank 1 first" in tail.splitlines()[0]


def test_an_error_without_a_traceback_shows_the_ranks_last_lines():
    """hpc_ft's refusal of a job on the workers (exit 2, no traceback; fail2 of the trial)."""
    log = PLAIN_SCRIPT.replace(
        "[rank1]: Traceback (most recent call last):\n[rank1]:   File \"/work/trial/scratch/fail.py\", line 3, "
        "in <module>\n[rank1]:     raise ValueError(\"boom on rank 1: bad shape (3, 4)\")\n[rank1]: ValueError: "
        "boom on rank 1: bad shape (3, 4)\n",
        "[rank1]: [rank1]: invalid job configuration (1 problem(s)):\n"
        "[rank1]: [rank1]:   - peft.target_modules=['qproj']: matches no module of the model\n")
    tail = error_tail(_lines(log))
    assert "invalid job configuration (1 problem(s)):" in tail and "matches no module" in tail
    assert "starting" not in tail  # rank 0's line


def test_without_torchruns_summary_the_tail_ends_with_torchruns_own_error():
    """torchrun itself stopped by a signal (a cancel): no summary, its SignalException is what there is."""
    log = ("[rank0]: step 3\n"
           "W1202 05:53:53.010000 10347 torch/distributed/elastic/agent/server/api.py:753] Received 15 death "
           "signal, shutting down workers\n"
           "Traceback (most recent call last):\n"
           "  File \"<frozen runpy>\", line 198, in _run_module_as_main\n"
           "torch.distributed.elastic.multiprocessing.api.SignalException: Process 10347 got signal: 15\n")
    tail = error_tail(_lines(log))
    assert tail.rstrip().splitlines()[-1].endswith("got signal: 15") and "step 3" not in tail


def test_the_tail_is_bounded_and_keeps_the_traceback_head_and_the_error():
    frames = "".join(f"[rank1]:   File \"f{i}.py\", line {i}, in g\n[rank1]:     g()\n" for i in range(60))
    log = PLAIN_SCRIPT.replace("[rank1]:   File \"/work/trial/scratch/fail.py\"",
                               frames + "[rank1]:   File \"/work/trial/scratch/fail.py\"")
    lines = error_tail(_lines(log)).rstrip().splitlines()
    assert len(lines) <= TAIL_LINES + 1  # the line naming the rank, then the bounded traceback
    assert lines[1] == "Traceback (most recent call last):" and lines[2].strip() == "..."
    assert lines[-1] == "ValueError: boom on rank 1: bad shape (3, 4)"


def test_torch_distributeds_own_prefix_after_torchruns_is_said_once():
    assert collapse_prefix("[rank3]: [rank3]: Traceback\n") == "[rank3]: Traceback\n"
    assert collapse_prefix("[rank3]: plain\n") == "[rank3]: plain\n"


def test_a_root_cause_that_printed_nothing_gives_way_to_the_rank_that_did():
    """Both ranks refuse the job (exit 2) in the same second, only rank 0 prints the refusal; torchrun names rank 1."""
    log = ("[rank0]: [rank0]: invalid job configuration (1 problem(s)):\n"
           "[rank0]: [rank0]:   - data._target_='user_data.empty_test_split': leaves an empty test split\n"
           + PLAIN_SCRIPT[PLAIN_SCRIPT.index("W1202"):].replace("exitcode  : -15 (pid: 23776)  (SIGTERM)",
                                                                 "exitcode  : 2 (pid: 23776) ")
           .replace("traceback : Signal 15 (SIGTERM) received by PID 23776", "traceback : To enable traceback see"))
    tail = error_tail(_lines(log))
    assert tail.splitlines()[0].startswith("rank 0 failed (exit code 2; torchrun named rank 1 first"), tail
    assert "invalid job configuration" in tail and "leaves an empty test split" in tail
