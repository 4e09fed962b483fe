"""Fitting a bigger model: FSDP2, LoRA and activation checkpointing, each against its reference.

- FSDP2 step time: hpc_ft with ``train.strategy=fsdp`` against a hand-written ``fully_shard`` torchrun loop
  (``baselines/fsdp_loop.py``) on the same Llama-style model, global batch and sequence length (goal <= 1.05x).
- LoRA against full fine-tuning: the memory of gradients and optimizer state (bytes of every ``.grad`` and every
  AdamW state tensor after one step, in one process), and hpc_ft's step time with ``peft=lora`` against without.
- Activation checkpointing: the bytes kept for backward in one micro-batch's forward pass (every tensor autograd
  saves, through ``torch.autograd.graph.saved_tensors_hooks``) and hpc_ft's step time, with against without.

Step times are read like ``bench_step``'s: windows of ``log_every`` steps, the first dropped, the median of the
rest; runs of all configurations interleaved. The model is a 4-layer Llama (hidden 256) on packed chatterbot-corpus
text, built once into a temp dir (``--quick``: 2 layers, hidden 64, a few steps: the harness only).

    python benchmarks/bench_fit.py [--quick] [--out FILE]
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_step import windows_from_ends, windows_from_metrics  # noqa: E402
from benchmarks.common import Row, group_main, median, rotate, run_cmd  # noqa: E402
from benchmarks.spec import STEADY, compose_spec, fresh_copy, torchrun_cmd  # noqa: E402
from hpc_ft.rundir.layout import RunDir  # noqa: E402

BASELINE = Path(__file__).resolve().parent / "baselines" / "fsdp_loop.py"
FSDP_GOAL = "<= 1.05x"


@dataclass
class Sizes:
    hidden: int
    layers: int
    seq_len: int
    steps: int
    log_every: int
    repeats: int


FULL = Sizes(hidden=256, layers=4, seq_len=128, steps=30, log_every=5, repeats=3)
QUICK = Sizes(hidden=64, layers=2, seq_len=32, steps=6, log_every=2, repeats=1)
BATCH = 8  # global batch: 4 samples per worker


def build_inputs(root: Path, s: Sizes) -> tuple[Path, Path]:
    """The model directory and a JSONL of texts (chatterbot-corpus prompt + response)."""
    from hpc_ft.testing.hf_models import corpus_pairs, tiny_llama, write_jsonl

    model = tiny_llama(root / "model", hidden_size=s.hidden, num_layers=s.layers)
    rows = [{"text": f"{r['prompt']} {r['response']}"} for r in corpus_pairs()]
    return model, write_jsonl(root / "texts.jsonl", rows)


class Runner:
    """One configuration of hpc_ft, or the hand-written loop, per call: its median window step time."""

    def __init__(self, root: Path, s: Sizes):
        self.root, self.s = root, s
        self.model, self.texts = build_inputs(root, s)
        self.specs: dict[str, object] = {}
        self.last_runs: dict[str, object] = {}  # name -> the spec of its latest run (its run dir holds train.json)

    def overrides(self, extra: list[str]) -> list[str]:
        s = self.s
        return ["task=causal_lm", "model=hf", f"model.path={self.model}", "data=files", f"data.path={self.texts}",
                "data.text_field=text", "data.packing=true", f"data.max_length={s.seq_len}", "precision=fp32",
                "optim.lr=1e-4", f"train.max_steps={s.steps}", f"train.global_batch_size={BATCH}",
                "train.warmup_steps=2", f"train.log_every_steps={s.log_every}", "telemetry=off", *STEADY, *extra]

    def hpc_ft(self, name: str, extra: list[str]) -> float:
        if name not in self.specs:
            self.specs[name] = compose_spec(self.overrides(extra), self.root / "compose")
        spec = fresh_copy(self.specs[name], self.root, f"hpcft-{name}")
        argv, env = torchrun_cmd(spec)
        run_cmd(argv, env=env)
        self.last_runs[name] = spec
        return median(windows_from_metrics(RunDir.of(spec).metrics, BATCH))

    def raw_fsdp(self) -> float:
        spec = self.specs.get("fsdp") or compose_spec(self.overrides(["train.strategy=fsdp"]), self.root / "compose")
        _, env = torchrun_cmd(spec)
        out = Path(tempfile.mkdtemp(prefix="raw-fsdp-", dir=self.root)) / "steps.json"
        t = spec.conf.train
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={spec.workers_per_node}", str(BASELINE), f"--model-dir={self.model}",
                "--precision=fp32", f"--steps={t.max_steps}", f"--batch-size={BATCH}", f"--seq-len={self.s.seq_len}",
                f"--lr={spec.conf.optim['lr']}", f"--warmup-steps={t.warmup_steps}", f"--grad-clip={t.grad_clip_norm}",
                f"--out={out}"]
        if spec.conf.optim.get("fused"):
            argv.append("--fused")
        run_cmd(argv, env=env)
        rec = json.loads(out.read_text())
        return median(windows_from_ends(rec["t0"], rec["step_ends"], t.log_every_steps))


def _model(model_dir: Path, lora: bool, checkpointed: bool):
    from transformers import AutoModelForCausalLM

    from hpc_ft.train.ac import apply_activation_checkpointing
    from hpc_ft.train.lora import apply_lora

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.config.use_cache = False
    if lora:
        model = apply_lora(model, {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": None})
    if checkpointed:
        apply_activation_checkpointing(model)
    return model.train()


ESTIMATED = {"full": "full fine-tuning", "lora": "LoRA", "ac": "activation checkpointing", "fsdp": "FSDP2"}


def estimate_rows(r: "Runner", desc: str) -> list[Row]:
    """The memory estimate (``hpc_ft.estimate``, traced on fake tensors) against the peak each run measured
    (``train.json``: MemTracker over the first step on a CPU), per configuration; MB per worker."""
    from hpc_ft.estimate.trace import trace_memory
    from hpc_ft.rundir.records import TrainResult

    rows = []
    for name, label in ESTIMATED.items():
        spec = r.last_runs.get(name)
        if spec is None:
            continue
        measured = TrainResult.load(RunDir.of(spec).node(0).train_result).peak_memory_bytes
        if not measured:
            continue
        est = trace_memory(spec).peak
        rows.append(Row(f"memory estimate, {label}: peak tensor memory per worker, {desc}",
                        "measured peak (MemTracker, first step)", est / 1e6, measured / 1e6, 1, "report",
                        key=f"fit.estimate.{name}", unit="MB", samples_a=[est / 1e6], samples_b=[measured / 1e6],
                        note=f"estimate error {100 * (est / measured - 1):+.1f}% (tests hold it within 20% on CPU; "
                             f"the GPU goal against max_memory_allocated is 10%)"))
    return rows


def memory_mb(model_dir: Path, s: Sizes) -> dict[str, float]:
    """MB of gradients + AdamW state after one step (full, LoRA), and MB kept for backward (with/without AC)."""
    import torch

    ids = torch.randint(5, 1000, (BATCH // 2, s.seq_len), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    out: dict[str, float] = {}
    for name, lora in (("full", False), ("lora", True)):
        model = _model(model_dir, lora, False)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        model(**batch).loss.backward()
        opt.step()
        grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
        states = sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values()
                     if isinstance(t, torch.Tensor))
        out[f"{name}_grad_opt"] = (grads + states) / 1e6
    for name, ac in (("no_ac", False), ("ac", True)):
        model = _model(model_dir, False, ac)
        saved: list[int] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            loss = model(**batch).loss
        loss.backward()
        out[f"{name}_saved"] = sum(saved) / 1e6
    return out


def measure(quick: bool = False, root: Path | None = None) -> list[Row]:
    """The FSDP2, LoRA and activation-checkpointing rows."""
    s = QUICK if quick else FULL
    root = Path(root or tempfile.mkdtemp(prefix="hpc_ft-bench-fit-"))
    r = Runner(root, s)
    fns = {
        "fsdp": lambda: r.hpc_ft("fsdp", ["train.strategy=fsdp"]),
        "raw_fsdp": r.raw_fsdp,
        "full": lambda: r.hpc_ft("full", []),
        "lora": lambda: r.hpc_ft("lora", ["peft=lora"]),
        "ac": lambda: r.hpc_ft("ac", ["train.activation_checkpointing=true"]),
    }
    t = rotate(fns, s.repeats)
    m = {k: median(v) for k, v in t.items()}
    mem = memory_mb(r.model, s)
    n = s.repeats
    desc = (f"Llama {s.layers} layers x hidden {s.hidden}, fp32, 2 CPU workers, global batch {BATCH} x "
            f"{s.seq_len} tokens, {s.steps} steps, windows of {s.log_every}")
    lora_ratio = mem["lora_grad_opt"] / mem["full_grad_opt"]
    return [
        Row(f"FSDP2 train step (train.strategy=fsdp), {desc}", "hand-written fully_shard torchrun loop",
            m["fsdp"], m["raw_fsdp"], n, FSDP_GOAL, key="fit.fsdp", samples_a=t["fsdp"], samples_b=t["raw_fsdp"]),
        Row(f"LoRA (r=8, attention q/v) gradient + AdamW state memory, {desc.split(', 2 CPU')[0]}",
            "full fine-tuning", mem["lora_grad_opt"], mem["full_grad_opt"], 1, "report", key="fit.lora.memory",
            unit="MB", samples_a=[mem["lora_grad_opt"]], samples_b=[mem["full_grad_opt"]], note=f"LoRA keeps {lora_ratio:.4f}x the gradient + optimizer memory of full fine-tuning"),
        Row(f"LoRA train step (peft=lora), {desc}", "full fine-tuning, same job", m["lora"], m["full"], n,
            "report", key="fit.lora.step", samples_a=t["lora"], samples_b=t["full"]),
        Row(f"activation checkpointing: bytes kept for backward, one micro-batch of {BATCH // 2} x {s.seq_len}",
            "no checkpointing", mem["ac_saved"], mem["no_ac_saved"], 1, "report", key="fit.ac.memory", unit="MB",
            samples_a=[mem["ac_saved"]], samples_b=[mem["no_ac_saved"]], note=f"saves {mem['no_ac_saved'] - mem['ac_saved']:.1f} MB per micro-batch"),
        Row(f"activation checkpointing train step, {desc}", "no checkpointing, same job", m["ac"], m["full"], n,
            "report", key="fit.ac.step", samples_a=t["ac"], samples_b=t["full"],
            note="the recomputation: about one more forward pass per step"),
        *estimate_rows(r, desc),
    ]


def main(argv: list[str] | None = None) -> int:
    return group_main(measure, "Fitting a bigger model", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
