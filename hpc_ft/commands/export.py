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

from hpc_ft.errors import EXIT_BAD_CONFIG, HpcFtError, Problem

USAGE = "hpc-ft export RUN_DIR [--out DIR] [--step N] [--merge]"
RUN_DIR_FIX = "pass the run dir hpc-ft submit printed (hpc-ft list shows them; a sweep's jobs are its numbered subdirs)"


class ExportError(HpcFtError):
    """What keeps a run from being exported: one Problem (the argument or job key, its value, the rule, the fix),
    printed in the project's ``key=value: rule. Fix: ...`` form."""

    def __init__(self, key: str, value: object, rule: str, fix: str):
        self.problem = Problem(key, value, rule, fix)
        super().__init__(str(self.problem))


class _Parser(argparse.ArgumentParser):
    """argparse's refusals (a missing RUN_DIR, an unknown option) with a Fix line, as every other refusal."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_CONFIG, f"error: {self.prog}: {message}. Fix: {USAGE} (hpc-ft export -h explains "
                                   f"each)\n")


def _step(text: str | None) -> int | None:
    """``--step``'s value (None: not given, the newest); ExportError unless it is a whole number from 0."""
    if text is None:
        return None
    try:
        step = int(text)
    except ValueError:
        step = -1
    if step < 0:
        raise ExportError("--step", text, "must be a checkpoint's step, a whole number from 0",
                          "pass a step the run checkpointed (the names in RUN_DIR/checkpoints), or leave --step out "
                          "for the newest")
    return step


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hpc-ft export", usage=USAGE, description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="the run dir (holds job.yaml and checkpoints/)")
    p.add_argument("--out", help="output directory (default: RUN_DIR/export/step_<N>, with --merge "
                                 "step_<N>_merged); must not exist")
    p.add_argument("--step", help="the checkpoint's step (default: the newest)")
    p.add_argument("--merge", action="store_true",
                   help="LoRA runs: merge the adapter into the base weights (default: the adapter alone)")
    return p


def _checkpoint(run_dir: Path, step: int | None):
    import torch

    from hpc_ft.train.checkpoint import list_checkpoints

    ckpts = dict(list_checkpoints(run_dir))
    if not ckpts:
        raise ExportError("RUN_DIR", str(run_dir), "holds no checkpoint (nothing complete in its checkpoints/)",
                          "train the run first, or let it reach train.ckpt_every_steps (hpc-ft status RUN_DIR shows "
                          "where it stands)")
    steps = ", ".join(map(str, sorted(ckpts)))
    chosen = max(ckpts) if step is None else step
    if chosen not in ckpts:
        raise ExportError("--step", step, f"{run_dir} has no checkpoint of that step (its steps: {steps})",
                          "pass one of those steps, or leave --step out for the newest")
    path = ckpts[chosen]
    from hpc_ft.train.checkpoint import META

    try:  # a sharded (FSDP2) checkpoint: its meta here, its tensors read into the model later
        return chosen, path, torch.load(path / META if path.is_dir() else path, map_location="cpu",
                                        weights_only=False)
    except Exception as exc:  # noqa: BLE001 - truncated, damaged or foreign: torch raises many kinds
        raise ExportError("checkpoint", str(path), f"cannot be read ({_first_line(exc)})",
                          f"export another checkpoint with --step (steps: {steps}), or restore this one") from None


def _unwritable(out: Path, exc: OSError) -> ExportError:
    """The refusal of an ``--out`` whose directory cannot be made (a parent that is a file, no permission)."""
    parent = next((p for p in out.parents if p.exists()), None)
    why = (f"{parent} is a file" if parent is not None and not parent.is_dir() else
           f"{exc.strerror or exc}: {exc.filename or out.parent}")
    return ExportError("--out", str(out), f"cannot be created ({why})", "pass --out in a directory you can write")


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of ``exc``, for an error that names its cause on one line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _load_weights(model, path: Path, state: dict, keys: set | None, model_path: str) -> None:
    """The checkpoint's weights into the rebuilt model: all of them, or a LoRA run's trainable ones. Raises
    ExportError naming model.path when they do not fit it (another architecture or size than the run trained)."""
    try:
        if path.is_dir():
            from hpc_ft.train.dcp_checkpoint import load_full_model_state

            load_full_model_state(path, model, keys)
        elif keys is not None:
            from hpc_ft.train.lora import load_trainable

            load_trainable(model, state["model"], keys)
        else:
            model.load_state_dict(state["model"])
    except BaseException as exc:  # noqa: BLE001 - DCP's CheckpointException is a BaseException
        cause = _weights_cause(exc)
        if cause is None:
            raise
        raise ExportError("model.path", model_path, f"builds a model the checkpoint {path} does not fit "
                          f"({_first_line(cause)})", "set model.path in the run's job.yaml to the checkpoint the run "
                          "was trained from") from None


def _weights_cause(exc: BaseException) -> BaseException | None:
    """The error of checkpoint tensors that do not fit the model (missing, unexpected or misshapen), None for
    anything else. A sharded load wraps it in DCP's CheckpointException, whose message is a whole traceback."""
    from torch.distributed.checkpoint.api import CheckpointException

    if isinstance(exc, CheckpointException):
        failures = list(exc.failures.values())  # rank -> (error, its traceback)
        return failures[0][0] if failures else exc
    return exc if isinstance(exc, (RuntimeError, KeyError, ValueError)) else None


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
    raise ExportError("model.path", path, f"in {RunDir(run_dir).spec} was recorded relative to the directory the run "
                      f"was submitted from ({where}); from {Path.cwd()} it is neither a local directory nor a hub name "
                      f"in the local Hugging Face cache", "run hpc-ft export from the directory you submitted from, "
                      "or set model.path to the checkpoint's absolute path in that job.yaml")


def export(run_dir: Path, out: Path | None, step: int | None, merge: bool = False) -> tuple[Path, str]:
    """Export checkpoint ``step`` (newest: None) of ``run_dir`` into ``out``; returns the directory written and the
    transformers Auto class that loads it (the task's head). A LoRA run writes its adapter, or with ``merge`` the
    base with the adapter merged in.

    Raises ExportError (one Problem) when ``run_dir`` is no run dir or its job.yaml cannot be read, the run has no
    checkpoint of that step or it cannot be read, was not trained from a Hugging Face model (model=hf), ``merge`` is
    asked of a run without LoRA, ``out`` exists or cannot be created, the checkpoint does not fit the model
    model.path builds, or an older run dir's relative model.path names no checkpoint from here (nor from the
    directory the run was submitted from); ConfigError when model.path no longer holds the model or tokenizer.
    """
    from hpc_ft.job import JobSpec
    from hpc_ft.rundir.layout import RunDir
    from hpc_ft.rundir.records import RecordError, TrainResult
    from hpc_ft.train.tasks.base import instantiate, is_hf_model, plain

    rd = RunDir(run_dir)
    if not Path(run_dir).is_dir():
        raise ExportError("RUN_DIR", str(run_dir), "is not a directory", RUN_DIR_FIX)
    if not rd.spec.is_file():
        raise ExportError("RUN_DIR", str(run_dir), f"is not a run dir (it holds no {rd.spec.name})", RUN_DIR_FIX)
    try:
        spec = JobSpec.load(rd.spec)
    except Exception as exc:  # noqa: BLE001 - YAML, OmegaConf or schema errors of a damaged record: one error
        raise ExportError("RUN_DIR", str(run_dir), f"its {rd.spec.name} cannot be read ({_first_line(exc)})",
                          f"restore {rd.spec} (the job the run was trained with; export rebuilds the model from "
                          f"it)") from None
    if not is_hf_model(spec.conf.model):
        raise ExportError("model._target_", spec.conf.model.get("_target_"), f"{run_dir} was not trained from a "
                          f"Hugging Face checkpoint, and export writes Hugging Face format",
                          "export a run trained with model=hf model.path=DIR")
    _local_model_paths(spec, run_dir)  # an older run dir's relative model.path
    lora = spec.conf.peft.method == "lora"
    if merge and not lora:
        raise ExportError("--merge", True, f"{run_dir} trained every weight (peft.method={spec.conf.peft.method}): "
                          f"there is no adapter to merge", "drop --merge")
    chosen, path, state = _checkpoint(run_dir, step)
    out = Path(out) if out else rd.export(chosen, merged=merge)
    if out.exists():
        raise ExportError("--out", str(out), "exists, and export overwrites nothing",
                          "pass --out with a new directory, or remove that one")
    try:  # before the model is built: a --out that cannot be written is refused at once
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(out, exc) from None
    task = instantiate(spec.conf.task)
    from hpc_ft.train.tasks.hf import AUTO_CLASSES

    auto_class = AUTO_CLASSES.get(getattr(task, "AUTO_CLASS", ""), "AutoModel")
    model = task.build_model(spec.conf.model, dict(state.get("model_kwargs") or {}))
    keys = None
    if lora:  # the base from model.path (full precision, even for QLoRA), the adapter from the checkpoint
        from hpc_ft.train.lora import apply_lora, trainable_keys

        model = apply_lora(model, spec.conf.peft)
        keys = trainable_keys(model)
    _load_weights(model, path, state, keys, plain(spec.conf.model).get("path"))
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
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise _unwritable(out, exc) from None
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
    """Entry point of `hpc-ft export`; returns the exit status (2 when the run cannot be exported: one error on
    stderr naming the argument or job key, its value, the rule and the fix; no traceback)."""
    args = _parser().parse_args(argv)
    try:
        out, auto_class = export(Path(args.run_dir), Path(args.out) if args.out else None, _step(args.step),
                                 args.merge)
    except HpcFtError as exc:  # ExportError, or a ConfigError of the model or tokenizer (model.path gone)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if (out / "adapter_config.json").is_file():
        print(f"exported the LoRA adapter to {out} (load with PeftModel.from_pretrained(base, {str(out)!r}); "
              f"--merge writes the merged model)")
    else:
        print(f"exported to {out} (load with {auto_class}.from_pretrained({str(out)!r}))")
    return 0
