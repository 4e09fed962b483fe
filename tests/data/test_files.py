"""Datasets from files: every format loads the same examples, the eval split is seeded and disjoint, and each
bad-data case is refused with its own problem naming its key (real files, read by Hugging Face datasets)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from hpc_ft.data import FileDataSpec, check_files, data_fingerprint, label_names, load_splits, spec_from_config
from hpc_ft.errors import ConfigError

FORMATS = ("json", "csv", "parquet", "disk")


def test_every_format_loads_the_same_examples_memory_mapped(write, rows):
    from datasets.table import MemoryMappedTable

    seen = {}
    for fmt in FORMATS:
        path = write(fmt)
        whole = load_splits(FileDataSpec(path=str(path), eval_path=str(path)))
        assert whole.train.to_list() == rows, fmt
        assert isinstance(whole.train.data, MemoryMappedTable), fmt  # Arrow files mapped, not read into memory
        held_out = load_splits(FileDataSpec(path=str(path), eval_fraction=0.25, split_seed=7))
        seen[fmt] = (held_out.train.to_list(), held_out.eval.to_list())
    assert all(v == seen["json"] for v in seen.values())  # same seed, same examples -> the same split


def test_format_named_explicitly_reads_an_unusual_extension(write, rows, tmp_path):
    path = write("json").rename(tmp_path / "train.data")
    assert load_splits(FileDataSpec(path=str(path), eval_path=str(path), format="json")).train.to_list() == rows


def test_eval_split_is_seeded_and_disjoint(write, rows):
    path = str(write("json"))
    a = load_splits(FileDataSpec(path=path, eval_fraction=0.25, split_seed=3))
    again = load_splits(FileDataSpec(path=path, eval_fraction=0.25, split_seed=3))
    other = load_splits(FileDataSpec(path=path, eval_fraction=0.25, split_seed=4))
    train, held = list(a.train["text"]), list(a.eval["text"])
    assert len(held) == math.ceil(0.25 * len(rows)) and len(train) + len(held) == len(rows)
    assert not set(train) & set(held) and set(train) | set(held) == {r["text"] for r in rows}
    assert (list(again.train["text"]), list(again.eval["text"])) == (train, held)
    assert list(other.eval["text"]) != held


def test_eval_path_is_used_whole(write, rows):
    train, dev = write("csv", rows[:30]), write("csv", rows[30:], name="dev")
    splits = load_splits(FileDataSpec(path=str(train), eval_path=str(dev)))
    assert (splits.train.to_list(), splits.eval.to_list()) == (rows[:30], rows[30:])


def _spec(path, **kw) -> FileDataSpec:
    return FileDataSpec(path=str(path), text_field="text", label_field="label", **kw)


# (case, how to build the spec from the fixtures, required fields, min train examples, label set,
#  the key the one problem names, words of its rule)
BAD = [
    ("missing file", lambda w, t: _spec(t / "nope.jsonl"), ["text_field"], 1, None, "data.path", "no such file"),
    ("missing eval file", lambda w, t: _spec(w("json"), eval_path=str(t / "dev.jsonl")), ["text_field"], 1, None,
     "data.eval_path", "no such file"),
    ("unknown extension", lambda w, t: _spec(w("json").rename(t / "train.txt")), ["text_field"], 1, None,
     "data.path", "unreadable format"),
    ("corrupt parquet", lambda w, t: _spec(_text(t / "x.parquet", "not parquet at all\n")), ["text_field"], 1,
     None, "data.path", "unreadable format"),
    ("corrupt jsonl", lambda w, t: _spec(_text(t / "x.jsonl", "{not json\n")), ["text_field"], 1, None,
     "data.path", "unreadable format"),
    ("not a save_to_disk dir", lambda w, t: _spec(_dir(t / "plain")), ["text_field"], 1, None, "data.path",
     "unreadable format"),
    ("missing field", lambda w, t: FileDataSpec(path=str(w("json")), text_field="body"),
     ["text_field"], 1, None, "data.text_field", "missing field"),
    ("missing field in eval file", lambda w, t: _spec(w("json"), eval_path=str(w("json", [{"body": "x"}], "dev"))),
     ["text_field"], 1, None, "data.text_field", "missing field"),
    ("messages that are not chat messages", lambda w, t: FileDataSpec(path=str(w("json")), messages_field="text"),
     ["messages_field"], 1, None, "data.messages_field", "not a list of chat messages"),
    ("field not set", lambda w, t: _spec(w("json")), ["prompt_field"], 1, None, "data.prompt_field", "not set"),
    ("empty jsonl", lambda w, t: _spec(_text(t / "e.jsonl", "")), ["text_field"], 1, None, "data.path",
     "empty dataset"),
    ("header-only csv", lambda w, t: _spec(_text(t / "e.csv", "text,label\n")), ["text_field"], 1, None,
     "data.path", "empty dataset"),
    ("fewer than a global batch", lambda w, t: _spec(w("json")), ["text_field"], 64, None, "data.path",
     "fewer than one global batch (64)"),
    ("labels not in the label set", lambda w, t: _spec(w("parquet")), ["text_field", "label_field"], 1, ["pos"],
     "data.label_field", "labels not in the label set: ['neg']"),
    ("eval fraction out of range", lambda w, t: _spec(w("json"), eval_fraction=1.5), ["text_field"], 1, None,
     "data.eval_fraction", "strictly between 0 and 1"),
    ("eval fraction leaves nothing", lambda w, t: _spec(w("json", [{"text": "a", "label": "pos"}])),
     ["text_field"], 1, None, "data.eval_fraction", "leaving 0 to train on"),
]


def _text(path, text):
    path.write_text(text)
    return path


def _dir(path):
    path.mkdir()
    (path / "notes.txt").write_text("not a dataset")
    return path


@pytest.mark.parametrize("case,build,fields,min_train,label_set,key,words", BAD, ids=[b[0] for b in BAD])
def test_each_bad_data_case_is_one_problem_naming_its_key(case, build, fields, min_train, label_set, key, words,
                                                          write, tmp_path):
    spec = build(write, tmp_path)
    problems = check_files(spec, fields, min_train, label_set)
    assert len(problems) == 1, problems
    (p,) = problems
    assert p.key == key and words in p.rule, p
    assert p.fix and str(p).startswith(f"{key}=")


def test_good_data_has_no_problems(write):
    spec = _spec(write("json"), eval_path=str(write("csv", name="dev")))
    assert check_files(spec, ["text_field", "label_field", "prompt"], 40, ["neg", "pos"]) == []


def test_chat_messages_pass(write):
    chats = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}]}
             for i in range(10)]
    assert check_files(FileDataSpec(path=str(write("parquet", chats)), messages_field="messages"),
                       ["messages_field"], 5) == []


def test_load_splits_raises_the_problems_as_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_splits(FileDataSpec(path=str(tmp_path / "a.jsonl"), eval_path=str(tmp_path / "b.jsonl")))
    assert [p.key for p in err.value.problems] == ["data.path", "data.eval_path"]
    assert "no such file" in str(err.value)


def test_spec_from_config_takes_the_data_group(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = OmegaConf.create({"_target_": "x.y", "path": "~/train.jsonl", "eval_path": None, "text_field": "t",
                            "max_length": 128, "packing": True, "something_else": 1})
    spec = spec_from_config(cfg)
    assert spec == FileDataSpec(path=str(tmp_path / "train.jsonl"), text_field="t", max_length=128, packing=True)
    with pytest.raises(ConfigError, match="data.path"):
        spec_from_config({"text_field": "t"})


def test_importing_the_package_loads_neither_datasets_nor_torch():
    code = ("import sys, json, hpc_ft.data; "
            "print(json.dumps([m for m in ('datasets', 'torch', 'pyarrow') if m in sys.modules]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []


def test_label_names_are_sorted_over_both_splits(write, rows):
    splits = load_splits(FileDataSpec(path=str(write("json", rows[:3])), eval_path=str(write("csv", rows[3:4], "dev"))))
    assert label_names(splits, "label") == ["neg", "pos"]
    ints = load_splits(FileDataSpec(path=str(write("json", [{"label": 3}, {"label": 1}])), eval_fraction=0.5))
    assert label_names(ints, "label") == [1, 3]


def test_data_fingerprint_follows_the_files_the_split_and_the_settings(write, rows):
    path = write("json")
    spec = FileDataSpec(path=str(path), text_field="text")
    fp = data_fingerprint(spec, "train", "tok", {"max_length": 16})
    assert data_fingerprint(spec, "train", "tok", {"max_length": 16}) == fp
    others = [data_fingerprint(spec, "eval", "tok", {"max_length": 16}),
              data_fingerprint(spec, "train", "tok2", {"max_length": 16}),
              data_fingerprint(spec, "train", "tok", {"max_length": 8}),
              data_fingerprint(dataclasses.replace(spec, split_seed=5), "train", "tok", {"max_length": 16})]
    write("json", rows[:-1])  # the same file, edited
    others.append(data_fingerprint(spec, "train", "tok", {"max_length": 16}))
    assert len({fp, *others}) == 6
    disk = FileDataSpec(path=str(write("disk")))
    before = data_fingerprint(disk, "train", "tok")
    write("disk", rows[:-1])
    assert data_fingerprint(disk, "train", "tok") != before


def test_datasets_is_imported_offline(write, tmp_path):
    path = write("json")
    code = ("import json, os, sys; from hpc_ft.data import FileDataSpec, load_splits; "
            f"load_splits(FileDataSpec(path={str(path)!r})); import datasets; "
            "print(json.dumps([datasets.config.HF_DATASETS_OFFLINE, datasets.config.HF_HUB_OFFLINE]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == [True, True]
