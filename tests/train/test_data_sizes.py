"""Empty and tiny datasets: one clear error (or a warning) where the data is built, never a traceback."""

from __future__ import annotations

import pytest
import torch

from hpc_ft.config.validate import split_problems
from hpc_ft.errors import ConfigError
from hpc_ft.train.data import TaskData, global_batch
from hpc_ft.train.tasks.sizes import SYNTHETIC, declared_sizes


def test_synthetic_data_with_an_empty_train_split_is_refused_naming_the_key():
    from hpc_ft.train.tasks.synthetic import gaussian_clusters

    with pytest.raises(ConfigError, match=r"data.num_samples=1: leaves an empty train split \(0 train and 1 test"):
        gaussian_clusters(num_samples=1)
    for bad in (0, -5):
        with pytest.raises(ConfigError, match=f"data.num_samples={bad}: must be a whole number"):
            gaussian_clusters(num_samples=bad)
    with pytest.raises(ConfigError, match="data.test_fraction=1.0: must be within"):
        gaussian_clusters(num_samples=64, test_fraction=1.0)


@pytest.mark.parametrize("n, frac", [(2, 0.25), (7, 0.5), (100, 0.0), (2048, 0.25), (33, 0.9)])
def test_sizes_known_before_dispatch_are_the_sizes_built(n, frac):
    from hpc_ft.train.tasks.synthetic import gaussian_clusters

    _, sizes = declared_sizes({"_target_": SYNTHETIC, "num_samples": n, "test_fraction": frac})
    data = gaussian_clusters(num_samples=n, num_features=2, test_fraction=frac)
    assert (sizes.num_train, sizes.num_test) == (data.num_train, data.num_test)


@pytest.mark.parametrize("frac, match", [(1.0, "must be within"), (-0.1, "must be within"),
                                         (0.0, "leaves an empty test split")])
def test_text_task_refuses_a_fraction_that_empties_or_reverses_a_split(frac, match):
    """-0.1 sliced the utterances backwards; 0.0 evaluated over no sample (accuracy 0, no word said)."""
    from hpc_ft.train.tasks.text import chatterbot_intents

    with pytest.raises(ConfigError, match=f"data.test_fraction={frac}: {match}"):
        chatterbot_intents(test_fraction=frac)
    problems, sizes = declared_sizes({"_target_": "hpc_ft.train.tasks.text.chatterbot_intents",
                                      "test_fraction": frac})
    assert problems or split_problems(sizes.num_train, sizes.num_test, sizes.key, sizes.value, sizes.fix)[0]


def test_batch_larger_than_train_split_and_test_split_smaller_than_world_warn():
    problems, warnings = split_problems(12, 3, "data.num_samples", 16, "fix", global_batch_size=16, world_size=4)
    assert not problems
    assert any("train split (12 samples) is smaller than the global batch (train.global_batch_size=16)" in w
               for w in warnings)
    assert any("test split (3 samples) is smaller than the world size (4): 1 rank(s)" in w for w in warnings)
    assert split_problems(64, 8, "k", 1, "fix", global_batch_size=16, world_size=4) == ([], [])


def test_empty_split_of_any_dataset_is_refused_by_the_loop(tmp_path):
    """A user's dataset: sizes unknown before dispatch, checked by the loop right after it is built."""
    from types import SimpleNamespace

    from hpc_ft.config.compose import compose_conf
    from hpc_ft.job import resolve
    from hpc_ft.train.loop import _check_data

    spec = resolve(compose_conf(["model=mlp", "data=synthetic"], run_dir=tmp_path))
    empty_test = TaskData(train={"x": torch.zeros(4, 2), "labels": torch.zeros(4, dtype=torch.long)},
                          test={"x": torch.zeros(0, 2), "labels": torch.zeros(0, dtype=torch.long)}, num_labels=2)
    with pytest.raises(ConfigError, match="data._target_=.*leaves an empty test split"):
        _check_data(empty_test, spec, SimpleNamespace(world_size=2))
    tiny = TaskData(train=dict(empty_test.train), test=dict(empty_test.train), num_labels=2)
    assert any("smaller than the global batch" in w for w in _check_data(tiny, spec, SimpleNamespace(world_size=2)))


def test_global_batch_of_an_empty_split_is_a_value_error_not_a_division_by_zero():
    with pytest.raises(ValueError, match="at least one sample"):
        global_batch(0, 0, 0, 4)


def test_corpus_lower_bound_holds_and_spares_reading_it_for_usual_settings(monkeypatch):
    from types import SimpleNamespace

    from hpc_ft.train import precheck
    from hpc_ft.train.tasks import sizes

    assert sizes._utterance_count() >= sizes.CORPUS_MIN_UTTERANCES  # the bound the dry run relies on
    spec = SimpleNamespace(conf=SimpleNamespace(data={"_target_": sizes.CHATTERBOT, "test_fraction": 0.2},
                                                train=SimpleNamespace(global_batch_size=16)), world_size=2)
    monkeypatch.setattr(sizes, "_utterance_count", lambda: pytest.fail("read the corpus"))
    assert precheck.data_problems(spec) == ([], [])
    # A doubt at the bound (a split that could be empty) reads the real corpus.
    monkeypatch.setattr(sizes, "_utterance_count", lambda: 3)
    spec.conf.data["test_fraction"] = 0.0001
    problems, _ = precheck.data_problems(spec)
    assert problems and "empty test split" in str(problems[0].rule)


def test_packed_files_with_fewer_blocks_than_one_global_batch_are_refused_by_the_loop(tmp_path):
    """data=files refuses fewer training examples than one global batch before dispatch; packed, the examples are
    blocks of data.max_length tokens, counted once tokenized: the loop refuses them with the same rule and a fix."""
    from types import SimpleNamespace

    from hpc_ft.train.loop import _packed_blocks_problems
    from hpc_ft.train.tasks.base import FILE_DATA_TARGET

    data = {"_target_": FILE_DATA_TARGET, "packing": True, "max_length": 128}
    spec = SimpleNamespace(conf=SimpleNamespace(data=data, train=SimpleNamespace(global_batch_size=16)))
    (problem,) = _packed_blocks_problems(15, spec)
    assert (problem.key, problem.value) == ("data.packing", True)
    assert "15 blocks of data.max_length=128 tokens, fewer than one global batch" in str(problem)
    assert "data.max_length=120" in problem.fix and "data.packing=false" in problem.fix
    assert _packed_blocks_problems(16, spec) == []  # one full global batch: trains
    assert _packed_blocks_problems(15, SimpleNamespace(conf=SimpleNamespace(
        data={**data, "packing": False}, train=spec.conf.train))) == []  # unpacked: checked before dispatch
