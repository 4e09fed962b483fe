"""The task group and old records: a job recorded before tasks existed reads, and resumes, as the sequence
classification it was; a train.json without the new fields still reads."""

from __future__ import annotations

from hpc_ft.config.compose import compose_conf
from hpc_ft.job import JobSpec
from hpc_ft.rundir.records import TrainResult
from hpc_ft.train.resume import compare


def test_a_checkpoint_recorded_before_tasks_resumes_as_sequence_classification(tmp_path):
    from hpc_ft.job import resolve

    new = resolve(compose_conf(["model=mlp", "data=synthetic"], run_dir=tmp_path)).to_dict()["conf"]
    assert new["task"]["_target_"].endswith("SequenceClassification")
    old = {k: v for k, v in new.items() if k != "task"}  # what a checkpoint of the previous version holds
    check = compare(old, new, 2, 2, 5, str(tmp_path))
    assert check.problems == [] and check.warnings == []
    assert JobSpec.from_dict({"conf": old}).conf.task["_target_"] == new["task"]["_target_"]
    other = {**new, "task": {"_target_": "hpc_ft.train.tasks.causal_lm.CausalLMSFT"}}
    refused = compare(new, other, 2, 2, 5, str(tmp_path)).problems  # another task mid-run: refused
    assert "task._target_" in [p.key for p in refused]


def test_a_train_json_without_the_new_fields_reads():
    old = TrainResult.from_dict({"steps": 3, "version": 2, "eval_accuracy": 0.5})
    assert old.truncated_examples is None and old.metric("eval_accuracy") == 0.5
