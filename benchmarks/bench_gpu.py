"""GPU mode: bf16/fp16 against fp32 step time, MFU of a ~110M-parameter transformer fine-tune, and the
telemetry sampler's cost at 1 Hz; hpc_ft's own training loop against the raw step. Needs a CUDA GPU
and refuses clearly without one.

The raw step (class Trainer) is what a hand-written loop does (autocast, float32 loss, GradScaler for
fp16, unscale + clip at 1.0, AdamW, zero_grad(set_to_none)) on a BERT-base-sized encoder (random init,
mean pooling, linear head: the MiniLMClassifier architecture at BERT-base size) with the batch already
on the device; it needs only torch, transformers and hpc_ft.telemetry. The hpc_ft rows run
hpc_ft.train.loop.train in this process (world size 1) on the same model and batch shape, reading its
metrics.jsonl windows as the CPU step benchmark does; they need hydra-core and omegaconf (carry them as
wheels to a GPU machine that lacks them: benchmarks/gpu_check.sh) and say so when missing.

    python benchmarks/bench_gpu.py [--quick] [--compile] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Row, median, missing_row, print_table, rotate, write_json  # noqa: E402
from hpc_ft.report.peaks import peak_tflops  # noqa: E402
from hpc_ft.rundir.layout import RunDir  # noqa: E402

PEAK_ENV = "HPC_FT_PEAK_BF16_TFLOPS"  # override for GPUs not in the table (or other clocks)


class NoGpu(RuntimeError):
    """GPU mode was asked for on a machine without a usable CUDA device."""


def require_cuda() -> None:
    """Raise NoGpu with what was found, unless torch sees a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise NoGpu(f"GPU mode needs a CUDA GPU: torch {torch.__version__} (CUDA build: "
                    f"{torch.version.cuda or 'none'}) sees no CUDA device. Run it on a GPU machine: "
                    f"python benchmarks/run.py --gpu")


def peak_bf16_tflops(name: str) -> float | None:
    if os.environ.get(PEAK_ENV):
        return float(os.environ[PEAK_ENV])
    return peak_tflops(name, "bf16")  # the report's table: one source for MFU in reports and benchmarks


@dataclass
class Shape:
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    intermediate: int = 3072
    vocab: int = 30522
    seq_len: int = 512
    batch: int = 32
    labels: int = 21
    window_steps: int = 20  # steps per timed window (precision rows)
    rounds: int = 5
    sampler_window_s: float = 5.0  # telemetry rows: long enough for several 1 Hz samples per window
    sampler_rounds: int = 6


QUICK = Shape(layers=2, hidden=128, heads=2, intermediate=512, vocab=1000, seq_len=64, batch=8, window_steps=3,
              rounds=1, sampler_window_s=1.2, sampler_rounds=1)


def bert_classifier(num_labels: int, layers: int, hidden: int, heads: int, intermediate: int, vocab: int,
                    seq_len: int):
    """The MiniLMClassifier architecture (encoder, mean pooling over real tokens, linear head) at any size;
    also the ``_target_`` hpc_ft's loop instantiates (called with ``num_labels``)."""
    import torch
    from torch import nn
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=intermediate, max_position_embeddings=max(512, seq_len),
                     attn_implementation="sdpa")

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = BertModel(cfg, add_pooling_layer=False)
            self.dropout = nn.Dropout(0.1)
            self.head = nn.Linear(hidden, num_labels)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(out.dtype)
            return self.head(self.dropout((out * mask).sum(1) / mask.sum(1).clamp(min=1.0)))

    return Classifier()


def model_kwargs(shape: Shape) -> dict:
    return {"layers": shape.layers, "hidden": shape.hidden, "heads": shape.heads,
            "intermediate": shape.intermediate, "vocab": shape.vocab, "seq_len": shape.seq_len}


def build_model(shape: Shape):
    """The benchmark's encoder classifier at ``shape``."""
    return bert_classifier(shape.labels, **model_kwargs(shape))


def random_tokens(num_samples: int, seq_len: int, vocab: int, num_classes: int, seed: int = 0):
    """A TaskData of random full-length token sequences (the step's cost does not depend on the words)."""
    import torch

    from hpc_ft.train.data import TaskData

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (num_samples, seq_len), generator=g)
    labels = torch.randint(0, num_classes, (num_samples,), generator=g)
    n_test = max(1, num_samples // 8)

    def split(sl: slice) -> dict:
        return {"input_ids": ids[sl], "attention_mask": torch.ones_like(ids[sl]), "labels": labels[sl]}

    return TaskData(train=split(slice(n_test, None)), test=split(slice(0, n_test)), num_labels=num_classes)


def flops_per_step(model, shape: Shape) -> float:
    """Training FLOPs of one step: tokens x (6 x non-embedding params + 12 x layers x hidden x seq) (attention)."""
    n = sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)
    tokens = shape.batch * shape.seq_len
    return tokens * (6.0 * n + 12.0 * shape.layers * shape.hidden * shape.seq_len)


class Trainer:
    """One model + optimizer + scaler for one precision; ``window(n)`` runs n steps and returns s/step."""

    DTYPES = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}

    def __init__(self, shape: Shape, precision: str, device, compile_model: bool = False, seed: int = 0):
        import torch

        torch.manual_seed(seed)
        self.torch, self.device = torch, device
        self.model = build_model(shape).to(device)
        self.params = list(self.model.parameters())
        self.fwd = torch.compile(self.model) if compile_model else self.model
        # torch's defaults, as a hand-written loop has them (hpc_ft's config adds fused=True)
        self.opt = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=0.01)
        name = self.DTYPES[precision]
        self.dtype = getattr(torch, name) if name else None
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype is torch.float16)
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, shape.vocab, (shape.batch, shape.seq_len), generator=g).to(device)
        self.mask = torch.ones_like(self.ids)
        self.labels = torch.randint(0, shape.labels, (shape.batch,), generator=g).to(device)

    def step(self) -> None:
        torch = self.torch
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            logits = self.fwd(input_ids=self.ids, attention_mask=self.mask)
            loss = torch.nn.functional.cross_entropy(logits.float(), self.labels)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def window(self, steps: int) -> float:
        self.sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        self.sync()
        return (time.perf_counter() - t0) / steps


def measure(quick: bool = False, compile_model: bool = False, device: str = "cuda") -> list[Row]:
    """The GPU rows. ``device='cpu'`` exists for the harness smoke test only (no figures)."""
    import torch

    if device == "cuda":
        require_cuda()
    else:
        torch.set_num_threads(1)  # harness check on a shared CPU: no thread oversubscription
    dev = torch.device(device)
    shape = QUICK if quick else Shape()
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu (harness check only)"
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # hpc_ft leaves torch's fp32 default (no TF32)
    trainers = {p: Trainer(shape, p, dev, compile_model) for p in ("fp32", "bf16", "fp16")}
    n_params = sum(p.numel() for p in trainers["bf16"].params)
    warm = 2 if quick else 10
    for t in trainers.values():
        t.window(warm)  # kernels chosen, allocator warm, compiled graphs built
    s = rotate({p: (lambda t=t: t.window(shape.window_steps)) for p, t in trainers.items()}, shape.rounds)
    m = {p: median(v) for p, v in s.items()}
    what = (f"{n_params / 1e6:.0f}M-param BERT-style encoder fine-tune, batch {shape.batch} x seq {shape.seq_len}, "
            f"{gpu}{', torch.compile' if compile_model else ''}")
    rows = []
    for p in ("bf16", "fp16"):
        rows.append(Row(f"GPU step time {p} vs fp32, {what}", "same step, fp32 (no TF32)", m[p], m["fp32"],
                        shape.rounds, "<= 0.5x" if p == "bf16" else "report", key=f"gpu.precision.{p}",
                        samples_a=s[p], samples_b=s["fp32"],
                        note=f"{p} throughput = {m['fp32'] / m[p]:.2f}x fp32 (goal for bf16: >= 2x)"))
    flops = flops_per_step(trainers["bf16"].model, shape)
    achieved = flops / m["bf16"] / 1e12
    peak = peak_bf16_tflops(gpu) if dev.type == "cuda" else None
    if peak is None:
        rows.append(Row(f"MFU, bf16, {what}", "dense bf16 peak", achieved, float("nan"), shape.rounds, ">= 0.4x",
                        key="gpu.mfu", unit="TFLOP/s", status="n/a",
                        note=f"no peak known for {gpu!r}: set {PEAK_ENV}"))
    else:
        rows.append(Row(f"MFU, bf16, {what}", f"dense bf16 peak of {gpu}", achieved, peak, shape.rounds, ">= 0.4x",
                        key="gpu.mfu", unit="TFLOP/s",
                        note=f"MFU = {achieved / peak:.1%}; FLOPs = tokens x (6 x non-embedding params + "
                             f"12 x layers x hidden x seq)"))
    for t in (trainers.pop("fp32"), trainers.pop("fp16")):
        del t
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    rows.append(_sampler_row(trainers["bf16"], shape, what))
    rows += _loop_rows(trainers["bf16"], shape, dev, what, flops, peak, compile_model)
    return rows


class LoopRun:
    """hpc_ft's training loop (``train``, in this process, world size 1) on the benchmark's model and batch.

    Every call trains a fresh run (own run dir, own model init) of ``1 + windows`` logging windows of
    ``window_steps`` steps and returns the median step time of the windows after the first (warm-up).
    """

    def __init__(self, shape: Shape, device, windows: int, compile_model: bool = False):
        from benchmarks.spec import compose_spec

        self.root = Path(tempfile.mkdtemp(prefix="hpc_ft-bench-gpu-loop-"))
        self.shape = shape
        gpu = device.type == "cuda"
        steps = shape.window_steps * (1 + windows)
        overrides = ["precision=bf16", "telemetry=off", "optim.lr=1e-4", f"train.global_batch_size={shape.batch}",
                     "train.grad_accum_steps=1", f"train.max_steps={steps}",
                     f"train.log_every_steps={shape.window_steps}", "train.warmup_steps=0", "train.eval_every_steps=0",
                     "train.ckpt_every_steps=0", "train.keep_checkpoints=1"]
        overrides += (["resources=gpu", "resources.gpus_per_node=1", "resources.cpus_per_task=8"] if gpu
                      else ["resources=cpu", "train.num_threads=1"])
        self.spec = compose_spec(overrides, self.root / "compose")
        self.spec.conf.model = {"_target_": "benchmarks.bench_gpu.bert_classifier", **model_kwargs(shape)}
        self.spec.conf.data = {"_target_": "benchmarks.bench_gpu.random_tokens", "num_samples": shape.batch * 9,
                               "seq_len": shape.seq_len, "vocab": shape.vocab, "num_classes": shape.labels}
        self.spec.conf.train.compile = compile_model  # --compile: train.compile=true, as the raw step compiles

    def __call__(self, precision: str = "bf16", deterministic: bool = True) -> float:
        from benchmarks.bench_step import windows_from_metrics
        from benchmarks.spec import fresh_copy
        from hpc_ft.train.loop import train

        import torch

        spec = fresh_copy(self.spec, self.root, f"{precision}-det{int(deterministic)}")
        spec.conf.precision.dtype = precision
        spec.conf.train.deterministic = deterministic
        # train() sets process-wide torch state; the raw step measured next in this process must not inherit it.
        state = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                 torch.backends.cudnn.benchmark, torch.get_num_threads())
        try:
            if train(spec) != 0:
                raise RuntimeError(f"hpc_ft's loop did not finish in {spec.run_dir}")
            return median(windows_from_metrics(RunDir.of(spec).metrics, self.shape.batch))
        finally:
            torch.use_deterministic_algorithms(state[0], warn_only=state[1])
            torch.backends.cudnn.benchmark = state[2]
            torch.set_num_threads(state[3])
            shutil.rmtree(spec.run_dir, ignore_errors=True)  # its final checkpoint: ~1.3 GB at BERT-base size


def _loop_rows(raw: Trainer, shape: Shape, dev, what: str, flops: float, peak: float | None,
               compile_model: bool = False) -> list[Row]:
    """hpc_ft's loop against the raw step (bf16), and the cost of its deterministic default on this device."""
    try:
        import hydra  # noqa: F401 - the loop composes and instantiates through Hydra
        import omegaconf  # noqa: F401
    except ImportError as exc:
        why = (f"{exc.name} is not installed here: carry hydra-core, omegaconf and antlr4-python3-runtime as "
               "wheels (benchmarks/gpu_check.sh)")
        return [missing_row("gpu.loop", "hpc_ft loop vs raw step", "not available", why, "<= 1.02x"),
                missing_row("gpu.deterministic", "hpc_ft loop, deterministic", "not available", why)]
    rounds = max(1, shape.rounds // 2)
    run = LoopRun(shape, dev, windows=3 if shape.rounds > 1 else 1, compile_model=compile_model)
    fns = {"loop": run, "raw": lambda: raw.window(shape.window_steps)}
    if not compile_model:  # every compiled run compiles anew (minutes at BERT-base size): the cost row once, plain
        fns["loop_nondet"] = lambda: run(deterministic=False)
    s = rotate(fns, rounds)
    m = {k: median(v) for k, v in s.items()}
    mfu = f"; loop MFU = {flops / m['loop'] / 1e12 / peak:.1%}" if peak else ""
    loop_row = Row(f"GPU step time, hpc_ft's training loop vs the raw step, bf16, {what}",
                   "raw step, batch already on the device", m["loop"], m["raw"], rounds, "<= 1.02x", key="gpu.loop",
                   samples_a=s["loop"], samples_b=s["raw"],
                   note=f"hpc_ft: train() in-process, batches indexed and copied per step, fused AdamW, "
                        f"deterministic=true{mfu}")
    if compile_model:
        return [loop_row]
    return [
        loop_row,
        Row(f"GPU step time, hpc_ft's loop with train.deterministic=true (default) vs false, bf16, {what}",
            "same loop, deterministic=false", m["loop"], m["loop_nondet"], rounds, "report",
            key="gpu.deterministic", samples_a=s["loop"], samples_b=s["loop_nondet"]),
    ]


def _sampler_row(trainer: Trainer, shape: Shape, what: str) -> Row:
    """bf16 windows of about ``sampler_window_s`` with and without a 1 Hz NodeSampler in this very process."""
    from hpc_ft.telemetry import NodeSampler

    per_step = trainer.window(max(2, shape.window_steps))
    steps = max(3, int(shape.sampler_window_s / max(per_step, 1e-6)))
    out = Path(tempfile.mkdtemp(prefix="hpc_ft-bench-sampler-"))

    def with_sampler() -> float:
        sampler = NodeSampler(out_dir=out, interval_s=1.0, pids=lambda: [os.getpid()])
        sampler.start()
        try:
            return trainer.window(steps)
        finally:
            sampler.stop()

    s = rotate({"on": with_sampler, "off": lambda: trainer.window(steps)}, shape.sampler_rounds)
    return Row(f"telemetry sampler at 1 Hz, bf16 step time with vs without, {what}", "no sampler",
               median(s["on"]), median(s["off"]), shape.sampler_rounds, "<= 1.005x", key="gpu.telemetry",
               samples_a=s["on"], samples_b=s["off"],
               note=f"sampler thread inside the training process (worst case: hpc_ft runs it in the NodeTask "
                    f"process beside torchrun); {steps} steps per window")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    try:
        rows = measure(args.quick, args.compile)
    except NoGpu as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_table(rows, "GPU")
    if args.out:
        write_json(args.out, {"rows": [r.to_dict() for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
