"""The training loop: one readable function for setup, steps and cleanup. Not a framework.

Runs as one torchrun worker (RANK/LOCAL_RANK/WORLD_SIZE from torchrun) or in-process for the debug
executor (world size 1, no process group).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from hpc_ft.config.validate import split_problems
from hpc_ft.errors import ConfigError, HpcFtError
from hpc_ft.job import JobSpec, atomic_write_text
from hpc_ft.train.checkpoint import load_latest, save_checkpoint
from hpc_ft.train.data import LABELS, TaskData, eval_batches, global_batch, micro_batches
from hpc_ft.train.preempt import EXIT_PREEMPTED, PreemptFlag
from hpc_ft.train.resume import compare_with_checkpoint

log = logging.getLogger("hpc_ft.train")

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
EXIT_BAD_CONFIG = 2  # as hpc-ft's own refusals: the job cannot run as configured


@dataclass
class Dist:
    """Where this worker sits: ranks from torchrun's environment, the device it trains on."""

    rank: int
    local_rank: int
    world_size: int
    node_rank: int
    device: torch.device
    control: Any = None  # a gloo group for tiny CPU-side agreements (no GPU sync); None: the default group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_node_main(self) -> bool:
        return self.local_rank == 0


@dataclass
class Meter:
    """Throughput over logging windows (device-synchronised only at window ends)."""

    samples: int = 0
    tokens: int = 0
    steps: int = 0
    t0: float = field(default_factory=time.perf_counter)
    step_times_s: list[float] = field(default_factory=list)
    rates: list[tuple[float, float]] = field(default_factory=list)  # (samples/s, tokens/s) per window

    def close_window(self, device: torch.device) -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        dt = max(now - self.t0, 1e-9)
        rate = (self.samples / dt, self.tokens / dt)
        if self.steps:
            self.step_times_s.append(dt / self.steps)
            self.rates.append(rate)
        self.samples = self.tokens = self.steps = 0
        self.t0 = now
        return rate


def _attempt_store(rank: int, world: int) -> dist.Store:
    """The rendezvous store of this torchrun attempt, under a prefix of its own.

    torchrun keeps one store across worker restarts (``--max-restarts``) and its env:// path adds no
    per-attempt prefix, so restarted workers could read the dead workers' addresses and hang or fail
    in gloo's connect. Keys under ``attempt_N`` start clean on every restart.
    """
    import datetime

    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent_store and rank == 0, multi_tenant=True,
                          timeout=datetime.timedelta(minutes=10))
    return dist.PrefixStore(f"hpc_ft/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def _setup_dist(spec: JobSpec) -> Dist:
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = spec.conf.resources.gpus_per_node > 0 and torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=device if use_cuda else None,
                                store=_attempt_store(rank, world), rank=rank, world_size=world)
    # The per-step "anyone preempted?" vote runs over gloo on CPU tensors: with NCCL it would need a
    # device tensor and a .item() that stalls the GPU queue every step.
    control = dist.new_group(backend="gloo") if (world > 1 and use_cuda) else None
    return Dist(rank, local_rank, world, int(os.environ.get("HPC_FT_NODE_RANK", "0")), device, control)


def _seed_everything(spec: JobSpec, d: Dist) -> None:
    t = spec.conf.train
    threads = t.num_threads or max(1, spec.conf.resources.cpus_per_task // spec.workers_per_node)
    torch.set_num_threads(threads)
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


def _instantiate(conf: Any, **kwargs: Any) -> Any:
    """Build the user's ``_target_`` object (Hydra semantics: nested targets, _partial_, _args_).

    An hpc_ft error raised by the target (a dataset refusing its sizes) comes out as itself, not wrapped
    in Hydra's InstantiationException, so it is reported as one clear message.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(conf, **kwargs)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, HpcFtError):
            raise exc.__cause__ from None
        raise


def lr_lambda(step: int, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``max_steps``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


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


def _all_gather(obj: Any, d: Dist) -> list[Any]:
    if d.world_size == 1:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _tokens(batch: dict[str, torch.Tensor]) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else 0


def _flops_per_sample(model: torch.nn.Module, data: TaskData) -> float | None:
    """Training FLOPs per sample: 6 x non-embedding parameters x tokens (the usual dense estimate)."""
    custom = getattr(model, "flops_per_sample", None)
    if callable(custom):
        return float(custom(data.seq_len))
    params = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    return 6.0 * params * (data.seq_len or 1)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: TaskData, spec: JobSpec, d: Dist, amp: Any) -> tuple[float, float]:
    """(accuracy, mean loss) over the whole test split, summed across ranks."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=d.device)  # correct, count, loss sum
    for batch in eval_batches(data.test, d.rank, d.world_size, spec.conf.train.eval_micro_batch_size):
        batch = _to_device(batch, d.device)
        labels = batch.pop(LABELS)
        with amp():
            logits = model(**batch)
        totals[0] += (logits.argmax(-1) == labels).sum()
        totals[1] += labels.numel()
        totals[2] += F.cross_entropy(logits.float(), labels, reduction="sum")
    if d.world_size > 1:
        dist.all_reduce(totals)
    model.train(was_training)
    n = max(1.0, float(totals[1]))
    return float(totals[0]) / n, float(totals[2]) / n


def _settle_ddp_buckets(ddp: DDP, data: TaskData, micro: int, d: Dist) -> None:
    """Give a resumed run the gradient buckets an uninterrupted run has by now.

    DDP regroups its gradient buckets after the first backward pass. With three or more ranks the
    order of floating-point additions in the all-reduce depends on that grouping, so a resumed run
    would drift from the uninterrupted one in the last bits. One backward pass without dropout
    (eval mode), whose gradients are thrown away, makes the regrouping happen before the first real
    step; parameters, optimizer and RNG are untouched.
    """
    batch = _to_device({k: v[:micro] for k, v in data.train.items()}, d.device)
    labels = batch.pop(LABELS)
    ddp.eval()
    F.cross_entropy(ddp(**batch).float(), labels).backward()
    ddp.zero_grad(set_to_none=True)
    ddp.train()


def train(spec: JobSpec) -> int:
    """Train the job described by ``spec``; returns 0 when done, 75 when stopped for preemption."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    t_start = time.monotonic()
    d = _setup_dist(spec)
    try:
        return _train(spec, d, t_start)
    except ConfigError as exc:  # the same on every rank: the data or the checkpoint does not fit the job
        if d.is_node_main:
            _report_refusal(exc, d.rank)
        return EXIT_BAD_CONFIG
    finally:
        if d.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _report_refusal(exc: ConfigError, rank: int) -> None:
    """Write the refusal to stderr, every line prefixed like torch prefixes a worker's error output.

    The node task shows a failed node's "[rankN]:" lines as its error output: the message (key, value,
    rule, fix) reaches the submitter's terminal instead of a traceback.
    """
    sys.stderr.write("".join(f"[rank{rank}]: {line}\n" for line in str(exc).splitlines()))
    sys.stderr.flush()


def _check_data(data: TaskData, spec: JobSpec, d: Dist) -> list[str]:
    """Refuse splits the loop cannot use (ConfigError); return warnings about splits it can.

    The built-in datasets refuse their own sizes while being built; this catches any dataset.
    """
    target = spec.conf.data.get("_target_") if isinstance(spec.conf.data, dict) else None
    problems, warnings = split_problems(data.num_train, data.num_test, "data._target_", target,
                                        "give the dataset more samples (see its data.* size settings)",
                                        global_batch_size=spec.conf.train.global_batch_size, world_size=d.world_size)
    if problems:
        raise ConfigError(problems)
    return warnings


def _restore_optimizer(optimizer: torch.optim.Optimizer, scheduler: Any, state: dict[str, Any],
                       fresh_state: bool, t: Any) -> None:
    """Load the checkpointed optimizer and schedule position, keeping this job's hyperparameters.

    ``Optimizer.load_state_dict`` and ``LambdaLR.load_state_dict`` also restore the old lr, weight decay
    and base learning rates: a resumed run with a new optim.lr would silently keep the old one. The
    values built from this job's config are put back, and the learning rate of the resumed step is
    recomputed from them (the same float as the saved one when nothing changed: resume stays bitwise).
    With ``fresh_state`` (another optimizer class) the checkpointed state is not loaded at all.
    """
    built = [{k: v for k, v in g.items() if k not in ("params", "lr")} for g in optimizer.param_groups]
    if not fresh_state:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    for group, values in zip(optimizer.param_groups, built):
        group.update(values)
    scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
    lrs = [base * lr_lambda(scheduler.last_epoch, t.warmup_steps, t.max_steps, t.min_lr_ratio)
           for base in scheduler.base_lrs]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() reports until the next step


def _train(spec: JobSpec, d: Dist, t_start: float) -> int:
    c, t = spec.conf, spec.conf.train
    run_dir = spec.run_dir
    _seed_everything(spec, d)
    preempt = PreemptFlag()
    preempt.install()

    data: TaskData = _instantiate(c.data)
    warnings = _check_data(data, spec, d)
    model: torch.nn.Module = _instantiate(c.model, num_labels=data.num_labels).to(d.device)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = _instantiate(c.optim, params=model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, t.warmup_steps, t.max_steps, t.min_lr_ratio))
    amp_dtype = AMP_DTYPES[c.precision.dtype]
    scaler = torch.amp.GradScaler(d.device.type, enabled=amp_dtype is torch.float16)

    def amp():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=d.device.type, dtype=amp_dtype)

    # Resume: every rank reads the same newest complete checkpoint.
    start_step = 0
    ckpt = load_latest(run_dir)
    conf_record = spec.to_dict()["conf"]  # recorded in every checkpoint: what a resumed run compares with
    if ckpt is not None:
        st = ckpt.state
        check = compare_with_checkpoint(st, conf_record, d.world_size, str(run_dir))
        check.raise_if_refused()
        warnings += check.warnings
        model.load_state_dict(st["model"])
        _restore_optimizer(optimizer, scheduler, st, check.fresh_optimizer, t)
        # A checkpoint without loss-scaler state (bf16/fp32) resumed in fp16 starts a fresh scaler;
        # a disabled scaler (fp16 resumed in bf16/fp32) has nothing to load.
        if scaler.is_enabled() and st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        rngs = st.get("rng") or []
        if len(rngs) == d.world_size:
            _set_rng_state(rngs[d.rank], d.device)
        else:
            log.warning("checkpoint has RNG state for %d ranks, this run has %d: dropout streams restart",
                        len(rngs), d.world_size)
            torch.manual_seed(t.seed + 7919 * d.rank + st["step"])
        start_step = ckpt.step
        if d.is_main:
            log.info("resumed from %s at step %d", ckpt.path, start_step)
    else:
        torch.manual_seed(t.seed + 7919 * d.rank)  # distinct dropout streams per rank

    ddp = DDP(model, device_ids=[d.device.index] if d.device.type == "cuda" else None) if d.world_size > 1 else model
    if d.world_size > 1 and start_step > 0:
        _settle_ddp_buckets(ddp, data, t.global_batch_size // (d.world_size * t.grad_accum_steps), d)  # one micro-batch
    # Compile the DDP wrapper (TorchDynamo splits the graph at DDP's buckets so all-reduces still overlap);
    # ``model`` stays the plain module, so checkpoints keep their parameter names.
    fwd = torch.compile(ddp) if t.compile else ddp
    if t.compile and d.is_main:
        log.info("train.compile=true: torch.compile compiles the model during the first steps")
    flops = _flops_per_sample(model, data)

    def save(step: int) -> None:
        rngs = _all_gather(_rng_state(d.device), d)
        if d.is_main:
            state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rngs,
                     "world_size": d.world_size, "precision": c.precision.dtype, "conf": conf_record}
            save_checkpoint(run_dir, step, state, keep=t.keep_checkpoints)
        if d.world_size > 1:
            dist.barrier()  # nobody exits (or is counted done) before the checkpoint is on disk

    hold_at = int(os.environ.get("HPC_FT_TEST_HOLD_AT_STEP", "0") or 0)
    stop_after = int(os.environ.get("HPC_FT_STOP_AFTER_STEP", "0") or 0)
    node_dir = run_dir / "nodes" / f"node{d.node_rank}"
    metrics_f = open(run_dir / "metrics.jsonl", "a") if d.is_main else None
    progress = _Progress(d.is_main, start_step, t.max_steps)

    meter = Meter()
    loss_sum = torch.zeros((), device=d.device)
    loss_n = 0
    last_loss = float("nan")
    accuracy = eval_loss = None
    preempted = False
    step = start_step
    if d.is_main:
        for w in warnings:
            log.warning("warning: %s", w)
    ddp.train()
    try:
        while step < t.max_steps:
            idx = global_batch(data.num_train, t.seed, step, t.global_batch_size)
            batches = micro_batches(data.train, idx, d.rank, d.world_size, t.grad_accum_steps)
            for i, batch in enumerate(batches):
                meter.tokens += _tokens(batch) * d.world_size  # counted on the host copy: no device sync per step
                batch = _to_device(batch, d.device)
                labels = batch.pop(LABELS)
                last_micro = i == len(batches) - 1
                # Accumulate locally; all-reduce gradients only on the last micro-batch.
                sync = ddp.no_sync() if (d.world_size > 1 and not last_micro) else contextlib.nullcontext()
                with sync:
                    with amp():
                        logits = fwd(**batch)
                        loss = F.cross_entropy(logits.float(), labels) / t.grad_accum_steps
                    scaler.scale(loss).backward()
                loss_sum += loss.detach()
            if t.grad_clip_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            loss_n += 1
            meter.samples += t.global_batch_size
            meter.steps += 1

            if step % t.log_every_steps == 0 or step == t.max_steps:
                if d.world_size > 1:
                    dist.all_reduce(loss_sum)
                last_loss = float(loss_sum) / (loss_n * d.world_size)
                loss_sum.zero_()
                loss_n = 0
                sps, tps = meter.close_window(d.device)
                record = {"step": step, "loss": last_loss, "lr": scheduler.get_last_lr()[0],
                          "samples_per_s": sps, "tokens_per_s": tps}
                if metrics_f:
                    metrics_f.write(json.dumps(record) + "\n")
                    metrics_f.flush()
                progress.update(step, record)
            if (t.eval_every_steps and step % t.eval_every_steps == 0) or step == t.max_steps:
                accuracy, eval_loss = evaluate(fwd, data, spec, d, amp)
                progress.note(f"step {step}: eval accuracy {accuracy:.3f}, eval loss {eval_loss:.3f}")
                meter.t0 = time.perf_counter()  # eval time is not training throughput

            # Stop for preemption when the vote cast after the previous step says so. The test hooks
            # fire at the same step on every rank, so they stop at once without a vote.
            stop = preempt.vote_result()
            if hold_at and step == hold_at and start_step < hold_at:
                preempt.hold_until_signal(node_dir / "held_at_step" if d.is_node_main else None, d.rank,
                                          d.control)
                stop = True
            stop = stop or (stop_after > 0 and step == stop_after and start_step < stop_after)
            if step < t.max_steps and stop:
                save(step)
                preempted = True
                progress.note(f"preempted ({preempt.signal_name or 'test hook'}): checkpoint at step {step}, "
                              f"exiting {EXIT_PREEMPTED} to be requeued")
                break
            if step < t.max_steps:
                preempt.cast_vote(d.control)
            if step < t.max_steps and t.ckpt_every_steps and step % t.ckpt_every_steps == 0:
                save(step)
        else:
            save(step)  # the final weights, always
    finally:
        progress.close()
        if metrics_f:
            metrics_f.close()

    if d.is_node_main:
        st = meter.step_times_s
        rates = meter.rates
        result = {
            "steps": step, "max_steps": t.max_steps, "start_step": start_step,
            "samples_per_s": statistics.median(r[0] for r in rates) if rates else None,
            "tokens_per_s": statistics.median(r[1] for r in rates) if rates else None,
            "step_time_s": statistics.median(st) if st else None,
            "final_loss": last_loss, "eval_accuracy": accuracy, "eval_loss": eval_loss,
            "majority_accuracy": data.majority_accuracy(),
            "world_size": d.world_size, "precision": c.precision.dtype, "device": str(d.device),
            "preempted": preempted, "wall_s": time.monotonic() - t_start,
            "flops_per_sample": flops, "model_params": n_params,
            "warnings": warnings,  # resumed with changes, data smaller than a batch: see hpc_ft.train.resume
        }
        atomic_write_text(node_dir / "train.json", json.dumps(result, indent=1))
    return EXIT_PREEMPTED if preempted else 0


class _Progress:
    """A rich progress bar on an interactive rank-0 terminal; plain log lines otherwise (job logs)."""

    def __init__(self, enabled: bool, start: int, total: int):
        self.enabled = enabled
        self.bar = None
        if enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                TimeRemainingColumn())
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    def update(self, step: int, rec: dict[str, float]) -> None:
        if not self.enabled:
            return
        info = f"loss {rec['loss']:.4f} lr {rec['lr']:.2e} {rec['samples_per_s']:.1f} samples/s"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)
        else:
            print(f"step {step}: {info}", flush=True)

    def note(self, text: str) -> None:
        if self.enabled:
            (self.bar.console.print if self.bar is not None else print)(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
