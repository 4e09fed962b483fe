"""The rule table of what a resumed run may change, and the loop's handling of the optimizer on resume."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch

from hpc_ft.config.compose import compose_conf
from hpc_ft.config.schema import JobConf
from hpc_ft.errors import ConfigError
from hpc_ft.job import resolve
from hpc_ft.train.resume import FREE, REFUSE, WARN, WORLD_SIZE, compare, compare_with_checkpoint, rule_for

SYNTH = ["model=mlp", "data=synthetic", "precision=fp32"]


def _conf(*overrides: str, run_dir) -> dict:
    return resolve(compose_conf([*SYNTH, *overrides], run_dir=run_dir)).to_dict()["conf"]


def _schema_keys(cls=JobConf, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out += _schema_keys(hints[f.name], key + ".")
        else:
            out.append(key)
    return out


def test_every_config_field_has_a_resume_rule():
    missing = [k for k in _schema_keys() if rule_for(k) is None]
    assert not missing, f"fields without a resume rule: {missing}"
    assert rule_for(WORLD_SIZE).action == WARN


@pytest.mark.parametrize("key, action", [
    ("model.hidden", REFUSE), ("model._target_", REFUSE), ("data.num_samples", REFUSE), ("train.seed", REFUSE),
    ("train.global_batch_size", REFUSE), ("precision.dtype", WARN), ("train.grad_accum_steps", WARN),
    ("optim.lr", WARN), ("optim._target_", WARN), ("train.max_steps", WARN), ("resources.gpus_per_node", WARN),
    ("resources.nodes", FREE), ("resources.timeout_min", FREE), ("executor.name", FREE),
    ("train.ckpt_every_steps", FREE), ("telemetry.enabled", FREE),
])
def test_rule_table(key, action):
    assert rule_for(key).action == action


def test_changes_that_continue_warn_and_name_old_and_new(tmp_path):
    old = _conf("precision=bf16", "train.max_steps=10", run_dir=tmp_path)
    new = _conf("precision=fp16", "train.max_steps=20", "optim.lr=0.01", "train.grad_accum_steps=2",
                "executor.poll_interval_s=3", run_dir=tmp_path)
    check = compare(old, new, 2, 4, step=10, where="RUN")
    assert not check.problems and not check.fresh_optimizer
    text = "\n".join(check.warnings)
    for piece in ("precision.dtype changed from bf16 to fp16", "train.max_steps changed from 10 to 20",
                  "optim.lr changed from 0.0001 to 0.01", "train.grad_accum_steps changed from 1 to 2",
                  "world size changed from 2 to 4"):
        assert piece in text
    assert "poll_interval" not in text  # free
    check.raise_if_refused()


def test_changes_the_checkpoint_cannot_take_are_refused_with_key_old_new_and_fix(tmp_path):
    old = _conf(run_dir=tmp_path)
    new = _conf("model.hidden=32", "data.num_samples=512", "train.seed=5", "train.global_batch_size=32",
                "train.max_steps=4", run_dir=tmp_path)
    check = compare(old, new, 2, 2, step=6, where="RUN")
    by_key = {p.key: p for p in check.problems}
    assert set(by_key) == {"model.hidden", "data.num_samples", "train.seed", "train.global_batch_size",
                           "train.max_steps"}
    seed = by_key["train.seed"]
    assert seed.value == 5 and "was 0" in seed.rule and "pass train.seed=0" in seed.fix and "new run dir" in seed.fix
    assert "step 6" in by_key["train.max_steps"].rule and "train.max_steps>=6" in by_key["train.max_steps"].fix
    with pytest.raises(ConfigError, match="train.global_batch_size=32"):
        check.raise_if_refused()


def test_another_optimizer_starts_fresh_with_one_warning(tmp_path):
    check = compare(_conf(run_dir=tmp_path), _conf("optim=sgd", run_dir=tmp_path), 2, 2, step=3, where="RUN")
    assert check.fresh_optimizer and not check.problems
    assert len(check.warnings) == 1 and "torch.optim.AdamW to torch.optim.SGD" in check.warnings[0]


def test_checkpoint_without_a_recorded_job_compares_precision_and_world_size(tmp_path):
    new = _conf("precision=fp16", run_dir=tmp_path)
    check = compare_with_checkpoint({"step": 4, "precision": "bf16", "world_size": 4}, new, 2, "RUN")
    assert not check.problems and len(check.warnings) == 2
    assert not compare_with_checkpoint({"step": 4, "conf": new, "world_size": 2}, new, 2, "RUN").warnings



def test_checkpoint_and_job_yaml_of_the_previous_version_resume_without_refusal(tmp_path):
    # issue 11.5: they record train.batch_size / train.eval_batch_size, today global_batch_size / eval_micro_...
    from hpc_ft.testing.previous import previous_conf, write_previous_job_yaml
    from hpc_ft.train.checkpoint import save_checkpoint
    from hpc_ft.train.resume import check_before_dispatch

    new = _conf("train.global_batch_size=32", run_dir=tmp_path)
    old = previous_conf(new)
    assert old["train"]["batch_size"] == 32 and "global_batch_size" not in old["train"]
    check = compare_with_checkpoint({"step": 4, "conf": old, "world_size": 2}, new, 2, "RUN")
    assert not check.problems and not check.warnings
    changed = compare_with_checkpoint({"step": 4, "conf": previous_conf(_conf(run_dir=tmp_path)), "world_size": 2},
                                      new, 2, "RUN")  # the old global batch was 16: still refused, by its new name
    assert [p.key for p in changed.problems] == ["train.global_batch_size"]
    spec = resolve(compose_conf([*SYNTH, "train.global_batch_size=32"], run_dir=tmp_path / "run"))
    write_previous_job_yaml(spec)
    save_checkpoint(spec.run_dir, 4, {"step": 4, "conf": old, "world_size": 2}, keep=2)
    before = check_before_dispatch(spec)
    assert before is not None and not before.problems and not before.warnings

def _checkpointed(spec, step: int, conf: dict | None = None):
    """``spec``'s run dir as a run that reached ``step`` leaves it: its job.yaml and a checkpoint of ``step``
    recording ``conf`` (default: the spec's); returns the checkpoint's state."""
    from hpc_ft.rundir.spec import write_spec
    from hpc_ft.train.checkpoint import save_checkpoint

    write_spec(spec)
    state = {"step": step, "conf": conf or spec.to_dict()["conf"], "world_size": spec.world_size}
    save_checkpoint(spec.run_dir, step, state, keep=2)
    return state


def test_a_run_that_reached_max_steps_is_refused_before_dispatch_and_its_requeue_still_finishes(tmp_path):
    # The same command again trained 0 steps and overwrote train.json with final_loss nan, eval_loss None.
    from hpc_ft.rundir.spec import spec_path
    from hpc_ft.train.precheck import check_before_dispatch as precheck
    from hpc_ft.train.resume import check_before_dispatch

    spec = resolve(compose_conf([*SYNTH, "train.max_steps=20"], run_dir=tmp_path / "run"))
    state = _checkpointed(spec, 20)
    [p] = check_before_dispatch(spec).problems
    assert (p.key, p.value) == ("train.max_steps", 20)
    assert p.rule == (f"the run in {spec.run_dir} has already reached train.max_steps (checkpoint at step 20): "
                      "nothing left to train")
    assert (f"`hpc-ft report {spec.run_dir}` shows its results" in p.fix and "train.max_steps=M with M > 20" in p.fix
            and "hydra.run.dir=NEW_DIR" in p.fix)
    with pytest.raises(ConfigError, match="train.max_steps=20"):
        precheck(spec)  # what hpc-ft submit, the sweep launcher and hpc-ft tune call
    # Below the checkpoint's step: one refusal, whose fix trains further (compare's own asks for >= 20).
    lower = check_before_dispatch(resolve(compose_conf([*SYNTH, "train.max_steps=10"], run_dir=spec.run_dir)))
    assert [(p.key, p.value) for p in lower.problems] == [("train.max_steps", 10)]
    assert "is below the step" in lower.problems[0].rule and "M > 20" in lower.problems[0].fix
    longer = check_before_dispatch(resolve(compose_conf([*SYNTH, "train.max_steps=30"], run_dir=spec.run_dir)))
    assert not longer.problems and "train.max_steps changed from 20 to 30" in longer.warnings[0]
    # The workers' own comparison allows it: a job requeued after its last checkpoint still finishes.
    assert not compare_with_checkpoint(state, spec.to_dict()["conf"], spec.world_size, "RUN").problems
    spec_path(spec).unlink()  # no job.yaml (nothing known of the job): the checkpoint's step is enough
    assert [p.key for p in check_before_dispatch(spec).problems] == ["train.max_steps"]
    # A user's script keeps its own checkpoints, which hpc_ft neither reads nor checks: not refused.
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    assert precheck(resolve(compose_conf([*SYNTH, "train.max_steps=20", f"script.path={script}"],
                                         run_dir=spec.run_dir))) == []


def test_a_run_dir_recorded_with_relative_paths_resumes_with_the_same_absolute_ones(tmp_path, monkeypatch):
    # job.yaml and checkpoints written before resolve made model.path / data.path absolute: the same command
    # (now recording them absolute) resumes; a path that names another file is still refused.
    from hpc_ft.job import JobSpec
    from hpc_ft.train.resume import check_before_dispatch

    (tmp_path / "scratch" / "tiny_llm").mkdir(parents=True)
    for name in ("sft.jsonl", "other.jsonl"):
        (tmp_path / "scratch" / name).write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    hf = ["model=hf", "model.path=scratch/tiny_llm", "data=files", "data.path=scratch/sft.jsonl"]
    spec = resolve(compose_conf(hf, run_dir=tmp_path / "run"))
    assert spec.conf.model["path"] == str(tmp_path / "scratch" / "tiny_llm")
    old = spec.to_dict()["conf"]
    old["model"]["path"], old["data"]["path"] = "scratch/tiny_llm", "scratch/sft.jsonl"  # as the old hpc_ft wrote
    state = _checkpointed(JobSpec.from_dict({"conf": old}), 10, old)
    assert "path: scratch/tiny_llm" in (spec.run_dir / "job.yaml").read_text()
    check = check_before_dispatch(spec)
    assert not check.problems and not check.warnings
    assert not compare_with_checkpoint(state, spec.to_dict()["conf"], spec.world_size, "RUN").problems
    other = resolve(compose_conf([*hf, "data.path=scratch/other.jsonl"], run_dir=tmp_path / "run"))
    [p] = check_before_dispatch(other).problems
    assert p.key == "data.path" and "was scratch/sft.jsonl" in p.rule


def _optimizer_and_schedule(lr: float, weight_decay: float):
    from hpc_ft.train.loop import lr_lambda

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, 2, 20, 0.1))
    return model, opt, sched


def test_resume_applies_the_new_hyperparameters_and_keeps_the_old_exactly():
    """Optimizer/LambdaLR.load_state_dict restore the old lr and weight decay: a new optim.lr was silently lost."""
    from types import SimpleNamespace

    from hpc_ft.train.optim import restore_optimizer

    t = SimpleNamespace(warmup_steps=2, max_steps=20, min_lr_ratio=0.1)
    model, opt, sched = _optimizer_and_schedule(1e-3, 0.01)
    for _ in range(5):
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    saved_lr = opt.param_groups[0]["lr"]

    _, same, same_sched = _optimizer_and_schedule(1e-3, 0.01)
    restore_optimizer(same, same_sched, state, False, t)
    assert same.param_groups[0]["lr"] == saved_lr  # bitwise: unchanged config, unchanged lr
    assert same_sched.get_last_lr() == [saved_lr]

    _, new, new_sched = _optimizer_and_schedule(1e-2, 0.0)
    restore_optimizer(new, new_sched, state, False, t)
    assert new.param_groups[0]["weight_decay"] == 0.0 and new_sched.base_lrs == [1e-2]
    assert new.param_groups[0]["lr"] == pytest.approx(saved_lr * 10)
    assert int(new.state_dict()["state"][0]["step"]) == 5  # the optimizer state itself was loaded
