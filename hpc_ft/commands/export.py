"""`hpc-ft export RUN_DIR [--out DIR] [--step N] [--merge]`: a run's model in Hugging Face format.

Writes ``save_pretrained`` (safetensors) weights and config, the tokenizer, and a short model card (README.md: the
run's task, model, data, steps and final metrics) for ``AutoModelFor...from_pretrained(DIR)``. The model is
rebuilt by the run's task from its job.yaml and loaded with the checkpoint's weights, so the export computes the
logits the run's evaluation computed. The output is written into a temporary directory renamed into place: an
existing directory is never overwritten.

A LoRA run (``peft=lora``) exports its adapter alone (``adapter_model.safetensors`` + ``adapter_config.json``, for
``PeftModel.from_pretrained(base, DIR)``), or with ``--merge`` the base with the adapter merged into its weights
(a plain model for ``AutoModelFor...from_pretrained(DIR)``). An FSDP2 run's sharded checkpoint is gathered into
full tensors in this one process (torch.distributed.checkpoint, no process group).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from hpc_ft.errors import EXIT_BAD_CONFIG

USAGE = "hpc-ft export RUN_DIR [--out DIR] [--step N] [--merge]"


class ExportError(Exception):
    """What keeps a run from being exported (its message names the cause and the fix)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpc-ft export", usage=USAGE, description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="the run dir (holds job.yaml and checkpoints/)")
    p.add_argument("--out", help="output directory (default: RUN_DIR/export/step_<N>, with --merge "
                                 "step_<N>_merged); must not exist")
    p.add_argument("--step", type=int, help="the checkpoint's step (default: the newest)")
    p.add_argument("--merge", action="store_true",
                   help="LoRA runs: merge the adapter into the base weights (default: the adapter alone)")
    return p


def _checkpoint(run_dir: Path, step: int | None):
    import torch

    from hpc_ft.train.checkpoint import list_checkpoints

    ckpts = dict(list_checkpoints(run_dir))
    if not ckpts:
        raise ExportError(f"{run_dir} holds no checkpoint: train the run first (hpc-ft submit hydra.run.dir=...)")
    chosen = max(ckpts) if step is None else step
    if chosen not in ckpts:
        raise ExportError(f"--step {step}: {run_dir} has no checkpoint of that step (steps: "
                          f"{', '.join(map(str, sorted(ckpts)))}); pass one of them")
    path = ckpts[chosen]
    if path.is_dir():  # a sharded (FSDP2) checkpoint: its tensors are read into the model later
        from hpc_ft.train.checkpoint import META

        return chosen, path, torch.load(path / META, map_location="cpu", weights_only=False)
    return chosen, path, torch.load(path, map_location="cpu", weights_only=False)


def _load_weights(model, path: Path, state: dict, keys: set | None) -> None:
    """The checkpoint's weights into the rebuilt model: all of them, or a LoRA run's trainable ones."""
    if path.is_dir():
        from hpc_ft.train.dcp_checkpoint import load_full_model_state

        load_full_model_state(path, model, keys)
    elif keys is not None:
        from hpc_ft.train.lora import load_trainable

        load_trainable(model, state["model"], keys)
    else:
        model.load_state_dict(state["model"])


def model_card(spec, step: int, metrics: dict) -> str:
    """The README.md of an export: what was trained, on what, for how long, and how it scored."""
    from omegaconf import OmegaConf

    conf = spec.to_dict()["conf"]
    shown = {k: conf[k] for k in ("task", "model", "data", "optim", "precision", "train") if k in conf}
    lines = ["---", "library_name: transformers", "tags: [hpc_ft]", "---", "",
             f"# Fine-tuned with hpc_ft ({conf['task'].get('_target_', '?').rsplit('.', 1)[-1]})", "",
             f"- base model: `{conf['model'].get('path')}`",
             f"- data: `{conf['data'].get('path', conf['data'].get('_target_'))}`"
             + (f" (eval: `{conf['data']['eval_path']}`)" if conf['data'].get('eval_path') else ""),
             f"- optimizer steps: {step} of {conf['train']['max_steps']}, global batch "
             f"{conf['train']['global_batch_size']}", ""]
    if metrics:
        lines += ["## Final evaluation", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.6g} |" if isinstance(v, (int, float)) else f"| {k} | {v} |"
                  for k, v in metrics.items()]
        lines.append("")
    lines += ["## Job", "", "```yaml", OmegaConf.to_yaml(OmegaConf.create(shown)).rstrip(), "```", ""]
    return "\n".join(lines)


def submitted_from(run_dir: Path) -> Path | None:
    """The directory the run was submitted from, as Hydra recorded it (``hydra.runtime.cwd``), or None where the run
    dir has no such record (a Python API or tune trial's dir) or it cannot be read."""
    from omegaconf import OmegaConf

    from hpc_ft.rundir.layout import RunDir

    try:
        cwd = OmegaConf.select(OmegaConf.load(RunDir(run_dir).hydra_record), "hydra.runtime.cwd")
    except Exception:  # noqa: BLE001 - missing or unreadable: the record is only a help
        return None
    return Path(cwd) if isinstance(cwd, str) and Path(cwd).is_absolute() else None


def _local_model_paths(spec, run_dir: Path) -> None:
    """Make the relative paths of a run dir written before jobs recorded them absolute (``hpc_ft.job.resolve``)
    absolute, from the directory the run was submitted from where the run dir records it. Raises ExportError
    naming ``model.path`` when it is still relative and names no checkpoint from here."""
    from hpc_ft.job import absolute_local_paths
    from hpc_ft.rundir.layout import RunDir
    from hpc_ft.train.tasks.base import plain
    from hpc_ft.train.tasks.hf_checks import resolve_model_path

    base = submitted_from(run_dir)
    if base is not None:
        absolute_local_paths(spec.conf, base)  # each path that names an existing file from there
    path = plain(spec.conf.model).get("path")
    if not isinstance(path, str) or Path(path).expanduser().is_absolute() or resolve_model_path(path)[1] is None:
        return  # absolute (today's runs; found or not, the checks below name it), or found from here
    where = (f"{base}, where it names nothing now" if base is not None else
             "not recorded in the run dir: no readable .hydra/hydra.yaml")
    raise ExportError(f"model.path={path!r} in {RunDir(run_dir).spec} was recorded relative to the directory the run "
                      f"was submitted from ({where}); from {Path.cwd()} it is neither a local directory nor a hub name "
                      f"in the local Hugging Face cache: run hpc-ft export from the directory you submitted from, or "
                      f"set model.path to the checkpoint's absolute path in that job.yaml")


def export(run_dir: Path, out: Path | None, step: int | None, merge: bool = False) -> tuple[Path, str]:
    """Export checkpoint ``step`` (newest: None) of ``run_dir`` into ``out``; returns the directory written and the
    transformers Auto class that loads it (the task's head). A LoRA run writes its adapter, or with ``merge`` the
    base with the adapter merged in.

    Raises ExportError when the run has no checkpoint of that step, was not trained from a Hugging Face model
    (model=hf), ``merge`` is asked of a run without LoRA, ``out`` exists, or an older run dir's relative model.path
    names no checkpoint from here (nor from the directory the run was submitted from).
    """
    from hpc_ft.job import JobSpec
    from hpc_ft.rundir.layout import RunDir
    from hpc_ft.rundir.records import RecordError, TrainResult
    from hpc_ft.train.tasks.base import instantiate, is_hf_model, plain

    rd = RunDir(run_dir)
    if not rd.spec.is_file():
        raise ExportError(f"{run_dir} is not a run dir (no {rd.spec.name}): pass the directory hpc-ft submit "
                          f"printed")
    spec = JobSpec.load(rd.spec)
    if not is_hf_model(spec.conf.model):
        raise ExportError(f"{run_dir} trained model._target_={spec.conf.model.get('_target_')}, not a Hugging Face "
                          f"checkpoint: export writes Hugging Face format, so train with model=hf model.path=DIR")
    _local_model_paths(spec, run_dir)  # an older run dir's relative model.path
    lora = spec.conf.peft.method == "lora"
    if merge and not lora:
        raise ExportError(f"--merge: {run_dir} trained every weight (peft.method={spec.conf.peft.method}), there is "
                          f"no adapter to merge; drop --merge")
    chosen, path, state = _checkpoint(run_dir, step)
    out = Path(out) if out else rd.export(chosen, merged=merge)
    if out.exists():
        raise ExportError(f"--out {out} exists: pass a new directory (nothing is overwritten)")
    task = instantiate(spec.conf.task)
    from hpc_ft.train.tasks.hf import AUTO_CLASSES

    auto_class = AUTO_CLASSES.get(getattr(task, "AUTO_CLASS", ""), "AutoModel")
    model = task.build_model(spec.conf.model, dict(state.get("model_kwargs") or {}))
    keys = None
    if lora:  # the base from model.path (full precision, even for QLoRA), the adapter from the checkpoint
        from hpc_ft.train.lora import apply_lora, trainable_keys

        model = apply_lora(model, spec.conf.peft)
        keys = trainable_keys(model)
    _load_weights(model, path, state, keys)
    if lora and merge:
        model = model.merge_and_unload()
    from hpc_ft.train.tasks.hf import load_tokenizer

    model_conf = plain(spec.conf.model)
    tok = load_tokenizer(model_conf["path"], bool(model_conf.get("trust_remote_code", False)))
    metrics: dict = {}
    try:
        result = TrainResult.load(rd.node(0).train_result)
        if result.steps == chosen:
            metrics = {k: v for k, v in result.metrics.items() if v is not None}
    except (OSError, ValueError, RecordError):
        pass  # no result (or another step's): the card says nothing of metrics
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(spec, chosen, metrics))
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, auto_class


def export_main(argv: list[str]) -> int:
    """Entry point of `hpc-ft export`; returns the exit status (2 when the run cannot be exported)."""
    args = _parser().parse_args(argv)
    from hpc_ft.errors import HpcFtError

    try:
        out, auto_class = export(Path(args.run_dir), Path(args.out) if args.out else None, args.step, args.merge)
    except (ExportError, HpcFtError) as exc:
        print(f"hpc-ft export: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if (out / "adapter_config.json").is_file():
        print(f"exported the LoRA adapter to {out} (load with PeftModel.from_pretrained(base, {str(out)!r}); "
              f"--merge writes the merged model)")
    else:
        print(f"exported to {out} (load with {auto_class}.from_pretrained({str(out)!r}))")
    return 0
