"""The tokenization cache with the real MiniLM tokenizer: written once, reused without encoding, invalidated by
the tokenizer or the settings, one writer among racing processes, truncation counted, packing exact, and the
result memory-mapped from the cache's Arrow files."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_ft.data import FileDataSpec, cache_root, load_splits, tokenize_cached, tokenizer_fingerprint
from hpc_ft.data.cache import DataCacheError
from tests.conftest import wait_until
from tests.data.cache_worker import make_encode, word_encode
from tests.data.conftest import example_rows, write_rows

WORKER = Path(__file__).with_name("cache_worker.py")
L = 16


@pytest.fixture
def raw(write):
    path = write("json")
    return load_splits(FileDataSpec(path=str(path), eval_path=str(path))).train


def test_cache_root_is_the_env_var_else_home(monkeypatch, data_cache, tmp_path):
    assert cache_root(None) == data_cache
    monkeypatch.delenv("HPC_FT_DATA_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root(tmp_path / "run") == tmp_path / ".cache" / "hpc_ft" / "data"


def test_second_call_is_a_cache_hit_that_does_not_encode(raw, tokenizer, data_cache):
    fp = tokenizer_fingerprint(tokenizer)
    first_calls, second_calls = [], []
    ds1, s1 = tokenize_cached(raw, make_encode(tokenizer, L, first_calls), fp, data_cache, max_length=L)
    ds2, s2 = tokenize_cached(raw, make_encode(tokenizer, L, second_calls), fp, data_cache, max_length=L)
    assert (s1.cache_hit, s2.cache_hit) == (False, True)
    assert sum(first_calls) == len(raw) and second_calls == []
    expected = [x[:L] for x in tokenizer(list(raw["text"]))["input_ids"]]
    assert list(ds2["input_ids"]) == list(ds1["input_ids"]) == expected
    assert (s2.examples, s2.truncated, s2.tokens) == (s1.examples, s1.truncated, s1.tokens)


def test_fingerprint_is_stable_across_calls_with_truncation(tokenizer):
    before = tokenizer_fingerprint(tokenizer)
    tokenizer(["a b c d e f"], truncation=True, max_length=3, padding="max_length")
    assert tokenizer_fingerprint(copy.deepcopy(tokenizer)) == before


def test_changed_tokenizer_or_settings_miss_the_cache(raw, tokenizer, data_cache):
    def miss(tok, fp=None, **kw):
        calls = []
        _, stats = tokenize_cached(raw, make_encode(tok, kw.get("max_length", L), calls),
                                   fp or tokenizer_fingerprint(tok), data_cache, **{"max_length": L, **kw})
        assert stats.cache_hit == (calls == [])
        return not stats.cache_hit

    assert miss(tokenizer)
    assert not miss(tokenizer)  # the same again: a hit
    left = copy.deepcopy(tokenizer)
    left.padding_side = "left"
    assert miss(left)
    more = copy.deepcopy(tokenizer)
    more.add_special_tokens({"additional_special_tokens": ["<extra>"]})
    assert miss(more)
    templated = copy.deepcopy(tokenizer)
    templated.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert miss(templated)
    assert len({tokenizer_fingerprint(t) for t in (tokenizer, left, more, templated)}) == 4
    assert miss(tokenizer, max_length=8)
    assert miss(tokenizer, packing=True)
    assert miss(tokenizer, fp=tokenizer_fingerprint(tokenizer) + "-other-files")


def test_truncated_examples_are_counted_and_the_flag_dropped(raw, tokenizer, data_cache):
    full = tokenizer(list(raw["text"]))["input_ids"]
    ds, stats = tokenize_cached(raw, make_encode(tokenizer, L), "fp", data_cache, max_length=L)
    assert 0 < stats.truncated == sum(len(x) > L for x in full) < len(full)
    assert stats.examples == len(ds) == len(raw)
    assert stats.tokens == sum(min(len(x), L) for x in full)
    assert "truncated" not in ds.column_names and max(len(x) for x in list(ds["input_ids"])) == L


def test_packing_cuts_full_blocks_and_keeps_every_token_in_order(tmp_path, tokenizer, data_cache):
    # More examples than one map batch (1000), so blocks must span batch boundaries.
    rows = example_rows(2500)
    path = write_rows(rows, tmp_path / "many.jsonl", "json")
    raw = load_splits(FileDataSpec(path=str(path), eval_path=str(path))).train
    encode = make_encode(tokenizer, L, mask_first=True)
    plain, _ = tokenize_cached(raw, encode, "fp", data_cache, max_length=L)
    packed, stats = tokenize_cached(raw, encode, "fp", data_cache, max_length=L, packing=True)
    ids = [t for x in list(plain["input_ids"]) for t in x]
    labels = [t for x in list(plain["labels"]) for t in x]
    n = len(ids) // L * L
    assert len(packed) == len(ids) // L and stats.tokens == n
    assert {len(b) for b in list(packed["input_ids"])} == {len(b) for b in list(packed["labels"])} == {L}
    assert [t for b in list(packed["input_ids"]) for t in b] == ids[:n]
    # Labels as encoded: each example's masked first token stays where it was.
    assert [t for b in list(packed["labels"]) for t in b] == labels[:n]


def test_the_dataset_is_memory_mapped_from_the_cache(raw, tokenizer, data_cache):
    import datasets

    for expect_hit in (False, True):
        ds, stats = tokenize_cached(raw, make_encode(tokenizer, L), "fp", data_cache, max_length=L)
        assert stats.cache_hit == expect_hit
        assert isinstance(ds.data, datasets.table.MemoryMappedTable)
        files = [Path(f["filename"]) for f in ds.cache_files]
        assert files and all(f.is_relative_to(data_cache / "fp") for f in files)


def test_an_encode_that_does_not_truncate_is_refused_and_leaves_nothing(raw, tokenizer, data_cache):
    with pytest.raises(DataCacheError, match="longer than max_length=4"):
        tokenize_cached(raw, make_encode(tokenizer, 64), "fp", data_cache, max_length=4)
    with pytest.raises(DataCacheError, match="'truncated'"):
        tokenize_cached(raw, lambda b: {"input_ids": [[1]] * len(b["text"])}, "fp", data_cache, max_length=4)
    assert [p.name for p in (data_cache / "fp").iterdir()] == ["len4-examples-v1.lock"]


def test_one_fingerprint_for_two_splits_is_refused(write, tokenizer, data_cache):
    splits = load_splits(FileDataSpec(path=str(write("json")), eval_fraction=0.25))
    tokenize_cached(splits.train, make_encode(tokenizer, L), "fp", data_cache, max_length=L)
    with pytest.raises(DataCacheError, match="written from 30 examples, but this split has 10"):
        tokenize_cached(splits.eval, make_encode(tokenizer, L), "fp", data_cache, max_length=L)


def test_a_dead_writers_leftovers_are_removed_by_the_next_writer(raw, tokenizer, data_cache):
    leftover = data_cache / "fp" / ".len16-examples-v1.tmp-999-dead"
    leftover.mkdir(parents=True)
    (leftover / "data-00000-of-00001.arrow").write_bytes(b"half written")
    tokenize_cached(raw, make_encode(tokenizer, L), "fp", data_cache, max_length=L)
    assert sorted(p.name for p in (data_cache / "fp").iterdir()) == ["len16-examples-v1", "len16-examples-v1.lock"]


def test_an_unwritable_cache_is_a_clear_error(raw, tokenizer, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    with pytest.raises(DataCacheError, match="cannot create the tokenization cache directory .*HPC_FT_DATA_CACHE"):
        tokenize_cached(raw, make_encode(tokenizer, L), "fp", blocker / "cache", max_length=L)


def test_fingerprint_must_be_a_plain_name(raw, tokenizer, data_cache):
    with pytest.raises(ValueError, match="fingerprint"):
        tokenize_cached(raw, make_encode(tokenizer, L), "../escape", data_cache, max_length=L)


def _worker(data: Path, cache: Path, flags: Path, name: str, mode: str) -> tuple[subprocess.Popen, Path]:
    out = flags / f"{name}.json"
    proc = subprocess.Popen([sys.executable, str(WORKER), str(data), str(cache), "fp", str(flags), name, mode,
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, out


def _finish(proc: subprocess.Popen, out: Path) -> dict:
    log, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, log[-3000:]
    return json.loads(out.read_text())


def test_racing_processes_tokenize_once(write, data_cache, tmp_path):
    data, flags = write("json"), tmp_path / "flags"
    flags.mkdir()
    # Each encode waits until the other process has entered tokenize_cached: both race for the same entry.
    a, b = _worker(data, data_cache, flags, "a", "race:b"), _worker(data, data_cache, flags, "b", "race:a")
    results = [_finish(*a), _finish(*b)]
    writers = [r for r in results if not r["cache_hit"]]
    assert len(writers) == 1 and writers[0]["encode_calls"] > 0
    assert [r["encode_calls"] for r in results if r["cache_hit"]] == [0]
    assert results[0]["rows"] == results[1]["rows"]


def test_a_lock_held_past_the_timeout_is_a_clear_error(write, raw, data_cache, tmp_path):
    data, flags = write("json"), tmp_path / "flags"
    flags.mkdir()
    holder = _worker(data, data_cache, flags, "holder", "hold")
    try:
        wait_until(lambda: (flags / "writing").exists() or holder[0].poll() is not None, 120, "the writer to start")
        assert holder[0].poll() is None, "the writer exited early"
        calls = []
        with pytest.raises(DataCacheError, match=r"waited 0.5 s for the tokenization cache lock .*Fix:"):
            tokenize_cached(raw, word_encode(L, calls), "fp", data_cache, max_length=L, lock_timeout_s=0.5)
        assert calls == []
    finally:
        (flags / "release").touch()
    assert _finish(*holder)["cache_hit"] is False
    ds, stats = tokenize_cached(raw, word_encode(L), "fp", data_cache, max_length=L)
    assert stats.cache_hit and list(ds["input_ids"]) == word_encode(L)({"text": list(raw["text"])})["input_ids"]
