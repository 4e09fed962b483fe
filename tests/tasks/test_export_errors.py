"""`hpc-ft export` refuses bad input as every hpc_ft command does: one ``error:`` line naming the argument or job
key, its value, the rule and a ``Fix:``, exit status 2, no traceback; and an FSDP2 run's sharded checkpoint exports
without torch's single-process warning on the console. Run dirs are written by hand from the tiny Llama (no
training): seconds per case."""

from __future__ import annotations

import pytest
import torch

from hpc_ft.commands.export import export_main

RUN_KEYS = ["task=causal_lm_sft", "model=hf", "data=files", "data.prompt_field=prompt",
            "data.response_field=response", "data.max_length=32", "precision=fp32", "telemetry=off"]


def _run_dir(path, llama_dir, pairs_file, *extra: str):
    """A run dir's job.yaml (SFT of the tiny Llama, as hpc-ft submit writes it), without checkpoints."""
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.job import resolve
    from hpc_ft.rundir.spec import write_spec

    overrides = [*RUN_KEYS, f"model.path={llama_dir}", f"data.path={pairs_file}", "executor=debug", *extra]
    spec = resolve(compose_conf(overrides, run_dir=path))
    write_spec(spec)
    return path


def _tiny_llama(llama_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(llama_dir)


@pytest.fixture
def trained(tmp_path, llama_dir, pairs_file):
    """A run dir with one checkpoint (step 2) of the tiny Llama's weights, as the training loop writes it."""
    from hpc_ft.train.checkpoint import save_checkpoint

    run = _run_dir(tmp_path / "run", llama_dir, pairs_file)
    save_checkpoint(run, 2, {"model": _tiny_llama(llama_dir).state_dict(), "model_kwargs": {}})
    return run


def _no_run(t, r, ll, pf):
    return [str(t / "nope")]


def _no_job_yaml(t, r, ll, pf):
    (t / "empty").mkdir()
    return [str(t / "empty")]


def _broken_job_yaml(t, r, ll, pf):
    (r / "job.yaml").write_text("conf: [1\n")
    return [str(r)]


def _no_checkpoint(t, r, ll, pf):
    return [str(_run_dir(t / "fresh", ll, pf))]


def _not_hf(t, r, ll, pf):
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.job import resolve
    from hpc_ft.rundir.spec import write_spec

    write_spec(resolve(compose_conf(["model=mlp", "data=synthetic", "executor=debug"], run_dir=t / "mlp")))
    return [str(t / "mlp")]


def _out_exists(t, r, ll, pf):
    (t / "taken").mkdir()
    return [str(r), "--out", str(t / "taken")]


def _out_under_a_file(t, r, ll, pf):
    (t / "a_file").write_text("")
    return [str(r), "--out", str(t / "a_file" / "model")]


def _damaged_checkpoint(t, r, ll, pf):
    (r / "checkpoints" / "step_00000002.pt").write_bytes(b"not a checkpoint")
    return [str(r)]


def _foreign_checkpoint(t, r, ll, pf):
    from hpc_ft.train.checkpoint import save_checkpoint

    save_checkpoint(r, 4, {"model": {"other.weight": torch.zeros(2, 2)}, "model_kwargs": {}})
    return [str(r)]


def _foreign_sharded_checkpoint(t, r, ll, pf):
    from hpc_ft.train.dcp_checkpoint import save_sharded

    other = torch.nn.Linear(2, 2)
    save_sharded(r, 4, other, torch.optim.SGD(other.parameters(), lr=0.1), {"model_kwargs": {}}, is_main=True, keep=2)
    return [str(r)]


REFUSED = {
    # case: (argv builder (tmp_path, a trained run dir, llama_dir, pairs_file), the key=value named, rule words)
    "missing run dir": (_no_run, "RUN_DIR='", "is not a directory"),
    "dir without job.yaml": (_no_job_yaml, "RUN_DIR='", "is not a run dir"),
    "unreadable job.yaml": (_broken_job_yaml, "RUN_DIR='", "job.yaml cannot be read"),
    "no checkpoint": (_no_checkpoint, "RUN_DIR='", "holds no checkpoint"),
    "a step it does not have": (lambda t, r, ll, pf: [str(r), "--step", "7"], "--step=7", "its steps: 2"),
    "a step that is no number": (lambda t, r, ll, pf: [str(r), "--step", "last"], "--step='last'", "whole number"),
    "a negative step": (lambda t, r, ll, pf: [str(r), "--step=-2"], "--step='-2'", "whole number"),
    "--merge without LoRA": (lambda t, r, ll, pf: [str(r), "--merge"], "--merge=True", "no adapter to merge"),
    "not a Hugging Face model": (_not_hf, "model._target_='", "not trained from a Hugging Face checkpoint"),
    "--out exists": (_out_exists, "--out='", "exists"),
    "--out under a file": (_out_under_a_file, "--out='", "a_file is a file"),
    "damaged checkpoint": (_damaged_checkpoint, "checkpoint='", "cannot be read"),
    "checkpoint of another model": (_foreign_checkpoint, "model.path='", "does not fit"),
    "sharded checkpoint of another model": (_foreign_sharded_checkpoint, "model.path='",
                                            "does not fit (RuntimeError: Missing key in checkpoint state_dict"),
    "no RUN_DIR": (lambda t, r, ll, pf: [], "the following arguments are required: run_dir", "usage"),
}


def _export(argv: list[str]) -> int:
    try:
        return export_main(argv)
    except SystemExit as exc:  # argparse's refusals exit
        return exc.code


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")  # the test's own dcp.save
@pytest.mark.parametrize("case", list(REFUSED))
def test_each_refusal_names_key_value_rule_and_fix(case, tmp_path, trained, llama_dir, pairs_file, capsys):
    build, named, words = REFUSED[case]
    argv = build(tmp_path, trained, llama_dir, pairs_file)
    assert _export(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]  # one error
    assert named in line and words in err and "Fix: " in line, err
    assert not list(tmp_path.rglob(".step_*"))  # no half-written export left behind


def test_the_console_shows_one_error_and_no_traceback(tmp_path, run_cli):
    done = run_cli("export", str(tmp_path / "nope"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"error: RUN_DIR='{tmp_path / 'nope'}': is not a directory. Fix: ")
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")  # the test's own dcp.save
def test_a_sharded_fsdp2_checkpoint_exports_without_torchs_single_process_warning(tmp_path, llama_dir, pairs_file,
                                                                                  run_cli):
    """torch.distributed.checkpoint warned that it assumed one process, told so or not (the export of every
    FSDP2 run printed a UserWarning); the weights are still the checkpoint's."""
    from transformers import AutoModelForCausalLM

    from hpc_ft.train.dcp_checkpoint import save_sharded

    run = _run_dir(tmp_path / "run", llama_dir, pairs_file, "train.strategy=fsdp")
    model = _tiny_llama(llama_dir)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)  # not the base's weights: the export must read them from the checkpoint
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_sharded(run, 2, model, optimizer, {"step": 2, "model_kwargs": {}}, is_main=True, keep=2)
    out = tmp_path / "exported"
    done = run_cli("export", str(run), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "torch.distributed is disabled" not in done.stderr, done.stderr
    exported = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(exported.lm_head.weight, model.lm_head.weight)
