"""The loop in named steps (issue 11 part 6): the stop decision and its test hooks, and the objective seam.

The loop knows no task: the objective it is given owns the loss and the evaluation metrics (what issue 12's
tasks plug into). Trained in this process, world size 1, on the seconds-long synthetic task.
"""

from __future__ import annotations

import json
import time

import torch
import torch.nn.functional as F

from hpc_ft.rundir.spec import write_spec
from hpc_ft.train.preempt import PreemptFlag, StopHooks


def test_stop_hooks_come_from_the_environment_and_skip_the_resumed_run():
    hooks = StopHooks.from_env({"HPC_FT_STOP_AFTER_STEP": "7", "HPC_FT_TEST_HOLD_AT_STEP": ""})
    assert hooks == StopHooks(stop_after_step=7, hold_at_step=0)
    assert StopHooks.from_env({}) == StopHooks()
    flag = PreemptFlag(hooks)
    assert [s for s in range(1, 12) if flag.stop_after(s, 0, None, rank=0)] == [7]
    assert not flag.stop_after(7, 7, None, rank=0)  # the run resumed at step 7 goes on
    assert not PreemptFlag().stop_after(7, 0, None, rank=0)  # no hooks unless given


def test_a_signal_stops_at_the_end_of_the_step_after_the_vote(tmp_path):
    flag = PreemptFlag()
    flag.requested = True  # as the signal handler sets it
    assert not flag.stop_after(3, 0, None, rank=0)  # no vote cast yet
    flag.cast_vote()
    assert flag.stop_after(4, 0, None, rank=0)
    held = PreemptFlag(StopHooks(hold_at_step=2))
    held.requested = True  # the signal is already there: the hold announces the step and returns at once
    assert held.stop_after(2, 0, tmp_path / "held_at_step", rank=0)
    assert (tmp_path / "held_at_step").read_text() == "held\n"


def test_the_loop_leaves_loss_and_metrics_to_its_objective(tmp_path, synth, in_process):
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.job import resolve
    from hpc_ft.train.distributed import Dist
    from hpc_ft.train.loop import Trainer
    from hpc_ft.train.objective import Classification

    class Smoothed(Classification):
        """Another task's objective: label-smoothed loss, and an evaluation that only counts samples."""

        SUMS = ("samples", "loss_sum")
        METRICS = ("eval_samples", "eval_smoothed_loss")

        def __init__(self):
            self.micro_batches = 0

        def loss(self, outputs, batch):
            self.micro_batches += 1
            return F.cross_entropy(outputs.float(), batch["labels"], label_smoothing=0.1)

        def add_eval_sums(self, sums, outputs, batch):
            sums[0] += batch["labels"].numel()
            sums[1] += F.cross_entropy(outputs.float(), batch["labels"], label_smoothing=0.1, reduction="sum")

        def eval_metrics(self, sums):
            return {"eval_samples": float(sums[0]), "eval_smoothed_loss": float(sums[1] / sums[0])}

        def describe(self, metrics):
            return f"{metrics['eval_samples']:.0f} samples"

    spec = resolve(compose_conf([*synth, "executor=debug", "train.max_steps=3", "train.grad_accum_steps=2",
                                 "train.global_batch_size=8", "train.log_every_steps=1", "train.num_threads=1"],
                                run_dir=tmp_path / "run"))
    write_spec(spec)  # the run dir as dispatch leaves it
    objective = Smoothed()
    trainer = Trainer(spec, Dist(0, 0, 1, 0, torch.device("cpu")), time.monotonic(), objective=objective)
    trainer.setup()
    assert trainer.train() == 0
    assert objective.micro_batches == 3 * 2  # 3 steps x 2 accumulation steps, nothing else computed a loss
    result = json.loads((spec.run_dir / "nodes" / "node0" / "train.json").read_text())
    assert result["eval_samples"] == trainer.data.num_test and result["eval_smoothed_loss"] > 0
    assert "eval_accuracy" not in result and result["steps"] == 3 and result["majority_accuracy"] is not None
    records = [json.loads(line) for line in (spec.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]  # logging windows; evaluations are lines of their own
    assert len(losses) == 3 and all(x > 0 for x in losses)
