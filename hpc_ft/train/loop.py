"""The training loop in named steps. One worker's run, not a framework.

``train(spec)`` sets up the process group and runs a ``Trainer``:

    setup()                      seed, signals, data, model, optimizer, resume from the newest checkpoint, DDP
    train()                      until train.max_steps, or until every rank agrees to stop for preemption:
        train_step()                 one optimizer step: forward_backward() per micro-batch, then optimizer_step()
        log_metrics()                at the end of a logging window: lr, throughput; the loss's all-reduce starts
        flush_metrics()              after the next step: the window's mean loss, its record written
        evaluate()                   every train.eval_every_steps and at the end
        should_stop()                the preemption vote (and the test hooks): checkpoint, exit 75 to be requeued
        save()                       every train.ckpt_every_steps and at the end
    write_result()               this node's train.json

What depends on the task (data, model, the forward pass, the loss, the evaluation metrics, the baseline, FLOPs)
is the task's (``hpc_ft.train.tasks``, built from the ``task`` config group); ranks and devices are
``hpc_ft.train.distributed``'s; the preemption vote and its test hooks are ``hpc_ft.train.preempt``'s. Runs as one
torchrun worker or in-process for the debug executor (world size 1, no process group).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import statistics
import sys
import time
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from hpc_ft.config.validate import split_problems, threads_per_worker
from hpc_ft.errors import EXIT_BAD_CONFIG, ConfigError, Problem
from hpc_ft.job import JobSpec
from hpc_ft.rundir.evals import append_eval
from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.records import TrainResult
from hpc_ft.train import fit
from hpc_ft.train.checkpoint import load_latest, save_checkpoint
from hpc_ft.train.data import TaskData, eval_batches, global_batch, micro_batches, take
from hpc_ft.train.distributed import Dist, all_gather_objects, setup_dist, teardown_dist, to_device
from hpc_ft.train.loss_scale import LossScale
from hpc_ft.train.memory import StepPeak
from hpc_ft.train.meter import Meter, Progress
from hpc_ft.train.objective import Objective
from hpc_ft.train.optim import build_schedule, lr_lambda, restore_optimizer
from hpc_ft.train.precision import for_worker
from hpc_ft.train.preempt import EXIT_PREEMPTED, PreemptFlag, StopHooks
from hpc_ft.train.resume import compare_with_checkpoint
from hpc_ft.train.tasks.base import instantiate as _instantiate
from hpc_ft.train.tracking import Tracker, open_tracking

__all__ = ["EXIT_BAD_CONFIG", "Trainer", "evaluate", "lr_lambda", "train"]

log = logging.getLogger("hpc_ft.train")

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def train(spec: JobSpec) -> int:
    """Train the job described by ``spec``; returns 0 when done, 75 when stopped for preemption, 2 when the data
    or the checkpoint does not fit the job (the refusal is written to stderr by each node's first worker)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    t_start = time.monotonic()
    d = setup_dist(spec)
    if not d.is_node_main:  # each rank builds the same model: a node's first says how (LoRA, FSDP2, ...) in that
        logging.getLogger("hpc_ft").setLevel(logging.WARNING)  # node's torchrun.log; warnings come from every rank
    try:
        trainer = Trainer(spec, d, t_start)
        trainer.setup()
        return trainer.train()
    except ConfigError as exc:  # the same on every rank: the data or the checkpoint does not fit the job
        if d.is_node_main:
            _report_refusal(exc, d.rank)
        return EXIT_BAD_CONFIG
    finally:
        teardown_dist(d)


class Trainer:
    """One worker's training run: ``setup`` builds everything, ``train`` runs the steps, each a method of its own.

    ``step`` counts the optimizer steps done (the resumed run's start included); it is also the index of the
    global batch the next ``train_step`` reads, so the sample order stays a pure function of (seed, step).
    """

    def __init__(self, spec: JobSpec, d: Dist, t_start: float, objective: Objective | None = None):
        self.spec, self.d, self.t_start = spec, d, t_start
        self.t = spec.conf.train
        self.objective: Objective = objective or _instantiate(spec.conf.task)
        self.preempt = PreemptFlag(StopHooks.from_env())
        self.conf_record = spec.to_dict()["conf"]  # recorded in every checkpoint: what a resumed run compares with
        self.node_dir = RunDir.of(spec).node(d.node_rank)
        self.step = self.start_step = 0
        self.warnings: list[str] = []  # resumed with changes, data smaller than a batch: see hpc_ft.train.resume
        self.last_loss = float("nan")
        self.eval_metrics: dict[str, float | None] = dict.fromkeys(self.objective.METRICS)
        self.preempted = False
        self.tracker = Tracker()  # TensorBoard on rank 0 once train() opens it (hpc_ft.train.tracking)
        self._pending_log: tuple | None = None  # a closed window whose loss all-reduce is in flight
        self._held_marker = self.node_dir.held_marker if d.is_node_main else None

    # --- setup ------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Seed, catch the preemption signals, build data, model and optimizer, resume, wrap the model for DDP.

        Raises ConfigError (on every rank alike) when the data or the checkpoint does not fit the job.
        """
        _seed_everything(self.spec, self.d)
        self.preempt.install()
        self._setup_data()
        self._setup_model()
        self._setup_optimizer()
        self._resume()
        self._wrap_model()

    def _setup_data(self) -> None:
        self.data: TaskData = self.objective.build_data(self.spec.conf)
        self.warnings += _check_data(self.data, self.spec, self.d)
        if self.data.info.get("truncated_examples") and self.d.is_main:
            log.warning("warning: %d example(s) cut at data.max_length", self.data.info["truncated_examples"])

    def _setup_model(self) -> None:
        self.model_kwargs = self.objective.model_kwargs(self.data)  # recorded in checkpoints: export rebuilds it
        self.precision = for_worker(self.spec.conf.precision.dtype, self.d)  # auto: what this device computes natively
        self.warnings += [self.precision.warning] if self.precision.warning else []
        # LoRA (QLoRA: a 4-bit base), activation checkpointing, FSDP2 sharding, as configured (hpc_ft.train.fit)
        self.fit = fit.Fit.of(self.spec.conf, self.d, self.precision.dtype)
        self.model: torch.nn.Module = self.objective.build_model(self.spec.conf.model,
                                                                 {**self.model_kwargs, **self.fit.load_kwargs()})
        self.model = self.fit.prepare(self.model)  # on the device
        self.n_params = sum(p.numel() for p in self.model.parameters())

    def _setup_optimizer(self) -> None:
        c = self.spec.conf
        self.optimizer = _instantiate(c.optim, params=[p for p in self.model.parameters() if p.requires_grad])
        self.scheduler = build_schedule(self.optimizer, self.t)
        self.amp_dtype = AMP_DTYPES[self.precision.dtype]
        self.scaler = self.fit.grad_scaler(enabled=self.amp_dtype is torch.float16)  # FSDP2: a sharded one
        self.loss_scale = LossScale(self.objective, self.d, self.t.grad_accum_steps)  # per sample or per token

    def _resume(self) -> None:
        """Continue from the newest complete checkpoint (every rank reads the same one), if the run dir has one.

        The job recorded in the checkpoint is compared with this one first (hpc_ft.train.resume): a change the
        checkpoint cannot take raises ConfigError; one it can is carried over with a warning.
        """
        d, t = self.d, self.t
        ckpt = load_latest(self.spec.run_dir)
        if ckpt is None:
            torch.manual_seed(t.seed + 7919 * d.rank)  # distinct dropout streams per rank
            return
        st = ckpt.state
        check = compare_with_checkpoint(st, self.conf_record, d.world_size, str(self.spec.run_dir))
        check.raise_if_refused()
        self.warnings += check.warnings
        restore_optimizer(self.optimizer, self.scheduler, st, check.fresh_optimizer, t,
                          load_optimizer=self.fit.load_checkpoint(ckpt, self.model, self.optimizer,
                                                                  check.fresh_optimizer))
        # A checkpoint without loss-scaler state (bf16/fp32) resumed in fp16 starts a fresh scaler;
        # a disabled scaler (fp16 resumed in bf16/fp32) has nothing to load.
        if self.scaler.is_enabled() and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        rngs = st.get("rng") or []
        if len(rngs) == d.world_size:
            _set_rng_state(rngs[d.rank], d.device)
        else:
            log.warning("checkpoint has RNG state for %d ranks, this run has %d: dropout streams restart",
                        len(rngs), d.world_size)
            torch.manual_seed(t.seed + 7919 * d.rank + st["step"])
        self.step = self.start_step = ckpt.step
        if d.is_main:
            log.info("resumed from %s at step %d", ckpt.path, self.start_step)

    def _wrap_model(self) -> None:
        d, t = self.d, self.t
        self.ddp = DDP(self.model, device_ids=[d.device.index] if d.device.type == "cuda" else None) \
            if d.world_size > 1 and not self.fit.fsdp else self.model
        if d.world_size > 1 and self.start_step > 0 and not self.fit.fsdp:
            self._settle_ddp_buckets()
        # Compile the DDP wrapper (TorchDynamo splits the graph at DDP's buckets so all-reduces still overlap);
        # ``model`` stays the plain module, so checkpoints keep their parameter names.
        self.fwd = torch.compile(self.ddp) if t.compile else self.ddp
        if t.compile and d.is_main:
            log.info("train.compile=true: torch.compile compiles the model during the first steps")
        self.flops = self.objective.flops_per_sample(self.model, self.data)
        # The measured peak set beside the estimate (hpc_ft.estimate); a compiled model is not traced.
        self.peak = StepPeak(d.device, self.ddp, self.optimizer, enabled=not t.compile)

    def _settle_ddp_buckets(self) -> None:
        """Give a resumed run the gradient buckets an uninterrupted run has by now.

        DDP regroups its gradient buckets after the first backward pass. With three or more ranks the
        order of floating-point additions in the all-reduce depends on that grouping, so a resumed run
        would drift from the uninterrupted one in the last bits. One backward pass on one micro-batch without
        dropout (eval mode), whose gradients are thrown away, makes the regrouping happen before the first real
        step; parameters, optimizer and RNG are untouched.
        """
        micro = self.t.global_batch_size // (self.d.world_size * self.t.grad_accum_steps)
        batch = to_device(take(self.data.train, torch.arange(micro)), self.d.device)
        self.ddp.eval()
        self.objective.loss(self.objective.forward(self.ddp, batch), batch).backward()
        self.ddp.zero_grad(set_to_none=True)
        self.ddp.train()

    def amp(self) -> contextlib.AbstractContextManager:
        """The autocast context of the job's precision (none for fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.d.device.type, dtype=self.amp_dtype)

    # --- the loop ---------------------------------------------------------------------------------------------

    def train(self) -> int:
        """Run the steps from the resumed one to train.max_steps, or until every rank agrees to stop for
        preemption; write this node's result. Returns 0 when done, 75 (EXIT_PREEMPTED) to be requeued."""
        d, t = self.d, self.t
        self.metrics_f = open(RunDir.of(self.spec).metrics, "a") if d.is_main else None
        self.tracker = open_tracking(self.spec, d, self.start_step)
        self.progress = Progress(d.is_main, self.start_step, t.max_steps)
        self.meter = Meter()
        self.loss_sum = torch.zeros((), device=d.device)  # summed on the device over a logging window: no sync
        self.loss_steps = 0
        if d.is_main:
            for w in self.warnings:
                log.warning("warning: %s", w)
        self.ddp.train()
        try:
            while self.step < t.max_steps:
                with self.peak.around_step(first=self.step == self.start_step):  # CPU: the first step tracked
                    self.train_step()
                self.flush_metrics()  # the previous window's: its loss all-reduce overlapped this step
                if self.step % t.log_every_steps == 0 or self.step == t.max_steps:
                    self.log_metrics()
                if (t.eval_every_steps and self.step % t.eval_every_steps == 0) or self.step == t.max_steps:
                    self.flush_metrics()  # the window's line before the evaluation's
                    self.evaluate()
                if self.preempt.hooks.holds_at(self.step, self.start_step):
                    self.flush_metrics()  # on disk while the step is held (`hpc-ft status` reads it)
                stop = self.should_stop()  # asked after every step, the last one too: it reads the pending vote
                if stop:
                    self.flush_metrics()  # before its checkpoint (the last step's was flushed before its evaluation)
                if self.step == t.max_steps:
                    break
                if stop:
                    self.stop_for_preemption()
                    break
                self.preempt.cast_vote(d.control, self.step)  # when due; read after the next step (overlapped)
                if t.ckpt_every_steps and self.step % t.ckpt_every_steps == 0:
                    self.save()
            if not self.preempted:
                self.save()  # the final weights, always
        finally:
            self.progress.close()
            self.tracker.close()
            if self.metrics_f:
                self.metrics_f.close()
        return self.write_result()

    def train_step(self) -> None:
        """One optimizer step on global batch number ``step``: this rank's micro-batches forward and backward
        (gradients all-reduced on the last one only), then the optimizer step; ``step`` moves on by one."""
        d, t = self.d, self.t
        idx = global_batch(self.data.num_train, t.seed, self.step, t.global_batch_size)
        batches = micro_batches(self.data.train, idx, d.rank, d.world_size, t.grad_accum_steps)
        self.loss_scale.begin(batches)  # a per-token loss: the global batch's token count (hpc_ft.train.loss_scale)
        for i, batch in enumerate(batches):
            self.peak.next_micro_batch(i)
            self.meter.tokens += _tokens(batch) * d.world_size  # counted on the host copy: no device sync per step
            self.forward_backward(to_device(batch, d.device), last_micro=i == len(batches) - 1)
        self.optimizer_step()
        self.step += 1
        self.loss_steps += 1
        self.meter.samples += t.global_batch_size
        self.meter.steps += 1

    def forward_backward(self, batch: dict[str, torch.Tensor], last_micro: bool) -> None:
        """Forward and backward on one micro-batch, its loss scaled to its share of the global batch's loss
        (hpc_ft.train.loss_scale: over the accumulation steps, or per token) and by fp16's GradScaler; the loss is
        added to the window's sum on the device."""
        # Accumulate locally; all-reduce gradients only on the last micro-batch.
        sync = self.fit.gradient_sync(self.ddp, last_micro) if self.fit.fsdp else \
            self.ddp.no_sync() if (self.d.world_size > 1 and not last_micro) else contextlib.nullcontext()
        with sync:
            with self.amp():
                loss = self.loss_scale.loss(self.objective.forward(self.fwd, batch), batch)
            self.scaler.scale(loss).backward()
        self.loss_sum += loss.detach()

    def optimizer_step(self) -> None:
        """Clip the (unscaled) gradients, step the optimizer through the scaler, clear gradients, step the schedule."""
        if self.t.grad_clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            self.fit.clip_grad_norm_(self.model, self.t.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def log_metrics(self) -> None:
        """Close the logging window: its throughput and learning rate now, and its training loss summed across
        ranks by an all-reduce started here; ``flush_metrics`` (after the next step, or before an evaluation or
        the loop's end) reads the sum and writes the record. The collective's round trip then overlaps a step
        instead of stalling every rank each window (0.75 ms a window on 2 CPU workers with gloo; a device sync on
        a GPU)."""
        d = self.d
        sps, tps = self.meter.close_window(d.device)
        loss_sum, steps = self.loss_sum, self.loss_steps
        self.loss_sum = torch.zeros((), device=d.device)
        self.loss_steps = 0
        work = dist.all_reduce(loss_sum, async_op=True) if d.world_size > 1 else None
        self._pending_log = (work, loss_sum, steps, self.step, self.scheduler.get_last_lr()[0], sps, tps)

    def flush_metrics(self) -> None:
        """The closed window's mean training loss (across ranks), to metrics.jsonl (rank 0), TensorBoard and the
        progress display; nothing when no window is pending. Every rank calls it at the same steps."""
        if self._pending_log is None:
            return
        work, loss_sum, steps, step, lr, sps, tps = self._pending_log
        self._pending_log = None
        if work is not None:
            work.wait()
        self.last_loss = float(loss_sum) / (steps * self.d.world_size)
        record = {"step": step, "loss": self.last_loss, "lr": lr, "samples_per_s": sps, "tokens_per_s": tps}
        if self.metrics_f:
            self.metrics_f.write(json.dumps(record) + "\n")
            self.metrics_f.flush()
        self.tracker.log(step, record)
        self.progress.update(step, record)

    def evaluate(self) -> None:
        """The objective's metrics over the whole test split; their time is left out of the throughput."""
        self.eval_metrics = evaluate(self.fwd, self.objective, self.data, self.t.eval_micro_batch_size, self.d,
                                     self.amp)
        append_eval(self.metrics_f, self.step, self.eval_metrics)  # every evaluation: `hpc-ft tune` prunes on it
        self.tracker.log(self.step, self.eval_metrics, prefix="eval")
        self.progress.note(f"step {self.step}: {self.objective.describe(self.eval_metrics)}")
        self.meter.skip()

    def should_stop(self) -> bool:
        """Whether every rank stops after this step for preemption (hpc_ft.train.preempt: the vote, the hooks)."""
        return self.preempt.stop_after(self.step, self.start_step, self._held_marker, self.d.rank, self.d.control)

    def stop_for_preemption(self) -> None:
        """Checkpoint this step and mark the run preempted: the node task requeues it on exit status 75."""
        self.save()
        self.preempted = True
        self.progress.note(f"preempted ({self.preempt.signal_name or 'test hook'}): checkpoint at step {self.step}, "
                           f"exiting {EXIT_PREEMPTED} to be requeued")

    def save(self) -> None:
        """Checkpoint step ``step``: weights, optimizer, schedule, scaler, every rank's RNG state and the job.
        Rank 0 writes; every rank returns once the checkpoint is on disk."""
        d = self.d
        # The curves logged up to here reach the disk before the checkpoint does: a resumed run purges from the
        # checkpoint's step on, and must find everything before it (hpc_ft.rundir.events).
        self.tracker.flush()
        rngs = all_gather_objects(_rng_state(d.device), d)
        meta = {"step": self.step, "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rngs, "world_size": d.world_size, "precision": self.precision.dtype, "conf": self.conf_record,
                "model_kwargs": self.model_kwargs}
        if self.fit.fsdp:  # every rank writes its shards (hpc_ft.train.dcp_checkpoint)
            self.fit.save_sharded(self.spec.run_dir, self.step, self.model, self.optimizer, meta,
                                  self.t.keep_checkpoints, self.preempt.hooks.kills_in_ckpt_write(self.step,
                                                                                                  self.start_step))
            return
        if d.is_main:
            state = {**meta, "model": self.fit.model_state(self.model), "optimizer": self.optimizer.state_dict()}
            save_checkpoint(self.spec.run_dir, self.step, state, keep=self.t.keep_checkpoints,
                            note="LoRA: trainable weights only" if self.fit.trainable_keys else "")
        if d.world_size > 1:
            dist.barrier()  # nobody exits (or is counted done) before the checkpoint is on disk

    # --- the result -------------------------------------------------------------------------------------------

    def result(self) -> TrainResult:
        """This run's training result (a node's train.json): steps, median throughput over the logging windows,
        the last loss, the objective's metrics and baseline, and how the run went."""
        st, rates = self.meter.step_times_s, self.meter.rates
        return TrainResult(
            steps=self.step, max_steps=self.t.max_steps, start_step=self.start_step,
            samples_per_s=statistics.median(r[0] for r in rates) if rates else None,
            tokens_per_s=statistics.median(r[1] for r in rates) if rates else None,
            step_time_s=statistics.median(st) if st else None,
            final_loss=self.last_loss, metrics={**self.eval_metrics, **self.objective.baseline(self.data)},
            world_size=self.d.world_size, precision=self.precision.dtype, device=str(self.d.device),
            precision_reason=self.precision.reason,
            preempted=self.preempted, wall_s=time.monotonic() - self.t_start,
            flops_per_sample=self.flops, model_params=self.n_params,
            warnings=self.warnings, truncated_examples=self.data.info.get("truncated_examples"),
            peak_memory_bytes=self.peak.bytes, peak_memory_source=self.peak.source,
        )

    def write_result(self) -> int:
        """Write the result to the node's train.json (once per node); return the worker's exit status."""
        if self.d.is_node_main:
            self.result().save(self.node_dir.train_result)
        return EXIT_PREEMPTED if self.preempted else 0


@torch.no_grad()
def evaluate(model: torch.nn.Module, objective: Objective, data: TaskData, micro_batch_size: int, d: Dist,
             amp: Any) -> dict[str, float]:
    """The objective's metrics over the whole test split, in micro-batches of ``micro_batch_size`` per rank, every
    sample counted once across ranks (the sums are all-reduced)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(objective.SUMS), dtype=torch.float64, device=d.device)
    for batch in eval_batches(data.test, d.rank, d.world_size, micro_batch_size):
        batch = to_device(batch, d.device)
        with amp():
            outputs = objective.forward(model, batch)
        objective.add_eval_sums(sums, outputs, batch)
    if d.world_size > 1:
        dist.all_reduce(sums)
    model.train(was_training)
    return objective.eval_metrics(sums)


# --- setup helpers --------------------------------------------------------------------------------------------

def _seed_everything(spec: JobSpec, d: Dist) -> None:
    t = spec.conf.train
    torch.set_num_threads(threads_per_worker(spec.conf))
    if d.device.type == "cuda":
        # Only on GPU, where kernels (atomics in scatter/index_add, cuBLAS workspaces) can differ run to
        # run. On CPU the kernels are deterministic for a fixed thread count (the bitwise resume tests
        # check it), and this call imports torch._inductor: 1-2 s more start-up for every worker.
        # Set either way: an in-process run (debug executor) must not inherit an earlier run's setting.
        if t.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(t.deterministic, warn_only=True)
    # Same seed on every rank for the model init (DDP broadcasts rank 0's anyway); per-rank for dropout.
    random.seed(t.seed)
    torch.manual_seed(t.seed)


def _check_data(data: TaskData, spec: JobSpec, d: Dist) -> list[str]:
    """Refuse splits the loop cannot use (ConfigError); return warnings about splits it can.

    The built-in datasets refuse their own sizes while being built; this catches any dataset.
    """
    target = spec.conf.data.get("_target_") if isinstance(spec.conf.data, dict) else None
    problems, warnings = split_problems(data.num_train, data.num_test, "data._target_", target,
                                        "give the dataset more samples (see its data.* size settings)",
                                        global_batch_size=spec.conf.train.global_batch_size,
                                        world_size=d.world_size)
    problems += _packed_blocks_problems(data.num_train, spec)
    if problems:
        raise ConfigError(problems)
    return warnings


def _packed_blocks_problems(num_train: int, spec: JobSpec) -> list[Problem]:
    """``data=files`` refuses a train split smaller than one global batch before dispatch (hpc_ft.data.files), but
    with ``data.packing=true`` the training examples are the blocks of ``data.max_length`` tokens, known only once
    the files are tokenized, here: the same rule, refused before the first step (the error reaches the submitter
    as the failed node's error). Fix: shorter blocks (more of them, for about as many tokens), a smaller global
    batch, or no packing."""
    from hpc_ft.train.tasks.base import is_file_data

    data, batch = spec.conf.data, spec.conf.train.global_batch_size
    if not (is_file_data(data) and data.get("packing") is True and num_train < batch):
        return []
    length = data.get("max_length")
    shorter = max(1, int(length) * num_train // batch) if isinstance(length, int) else None
    return [Problem("data.packing", True, f"packs the train split into {num_train} blocks of data.max_length="
                    f"{length} tokens, fewer than one global batch (train.global_batch_size={batch}); data=files "
                    f"refuses a train split smaller than one global batch",
                    (f"pass data.max_length={shorter} (about {batch} blocks), " if shorter else "pass ")
                    + f"train.global_batch_size={max(1, num_train)}, or data.packing=false")]


def _report_refusal(exc: ConfigError, rank: int) -> None:
    """Write the refusal to stderr, every line prefixed like torch prefixes a worker's error output.

    The node task shows a failed node's "[rankN]:" lines as its error output: the message (key, value,
    rule, fix) reaches the submitter's terminal instead of a traceback.
    """
    sys.stderr.write("".join(f"[rank{rank}]: {line}\n" for line in str(exc).splitlines()))
    sys.stderr.flush()


def _tokens(batch: dict[str, torch.Tensor]) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else 0


# --- RNG state in checkpoints ---------------------------------------------------------------------------------

def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
