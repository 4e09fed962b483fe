"""Pure pieces of training: the deterministic batch stream, the schedule, atomic checkpoints."""

from __future__ import annotations

import logging

import torch

from hpc_ft.train.checkpoint import list_checkpoints, load_latest, save_checkpoint
from hpc_ft.train.data import global_batch, micro_batches
from hpc_ft.train.loop import lr_lambda
from hpc_ft.train.tasks.text import intent_utterances


def test_batches_are_a_pure_function_of_seed_and_step():
    a = [global_batch(100, 3, s, 16) for s in range(20)]
    b = [global_batch(100, 3, s, 16) for s in range(20)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(global_batch(100, 4, 0, 16), a[0])
    # Every sample once per epoch, epochs reshuffled.
    first_epoch = torch.cat([global_batch(96, 3, s, 16) for s in range(6)])
    assert sorted(first_epoch.tolist()) == list(range(96))
    assert not torch.equal(global_batch(96, 3, 6, 16), global_batch(96, 3, 0, 16))


def test_micro_batches_partition_the_global_batch_across_ranks():
    split = {"x": torch.arange(64) * 10, "labels": torch.arange(64)}
    idx = global_batch(64, 0, 0, 16)
    parts = [mb["labels"] for r in range(2) for mb in micro_batches(split, idx, r, 2, 2)]
    assert all(p.numel() == 4 for p in parts)
    assert sorted(torch.cat(parts).tolist()) == sorted(idx.tolist())


def test_warmup_then_cosine_to_min_ratio():
    assert lr_lambda(0, 10, 100, 0.1) == 0.1
    assert lr_lambda(9, 10, 100, 0.1) == 1.0
    assert abs(lr_lambda(10, 10, 100, 0.1) - 1.0) < 1e-9
    assert abs(lr_lambda(100, 10, 100, 0.1) - 0.1) < 1e-9
    assert abs(lr_lambda(55, 10, 100, 0.1) - 0.55) < 1e-9


def _state(step):
    return {"step": step, "model": {"w": torch.full((3,), float(step))}}


def test_checkpoints_are_pruned_and_newest_loaded(tmp_path):
    for s in (5, 10, 15):
        save_checkpoint(tmp_path, s, _state(s), keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10, 15]
    ck = load_latest(tmp_path)
    assert ck.step == 15 and torch.equal(ck.state["model"]["w"], torch.full((3,), 15.0))
    assert not list((tmp_path / "checkpoints").glob(".*tmp"))  # no temporary left behind


def test_truncated_newest_checkpoint_is_skipped_with_a_warning(tmp_path, caplog):
    save_checkpoint(tmp_path, 5, _state(5), keep=0)
    p = save_checkpoint(tmp_path, 10, _state(10), keep=0)
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with caplog.at_level(logging.WARNING):
        ck = load_latest(tmp_path)
    assert ck.step == 5 and "skipping damaged checkpoint" in caplog.text
    assert load_latest(tmp_path / "nowhere") is None


def test_chatterbot_intents_are_the_21_english_files():
    texts, labels, names = intent_utterances()
    assert len(names) == 21 and len(texts) == len(labels) > 4000
    majority = max(labels.count(i) for i in range(21)) / len(labels)
    assert 0.4 < majority < 0.55  # the baseline the default must clearly beat


def test_default_optimizer_is_fused_adamw(tmp_path):
    from hydra.utils import instantiate

    from hpc_ft.config.compose import compose_conf

    conf = compose_conf([], run_dir=tmp_path)
    opt = instantiate(conf.optim, params=torch.nn.Linear(4, 2).parameters())
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
