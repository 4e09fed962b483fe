"""A task's data from files (``data=files``): load the splits, tokenize them once into the shared cache (the
task's ``encode``), and read micro-batches by index from the memory-mapped result (the task's ``collate``).

The sample order stays ``hpc_ft.train.data.global_batch``'s: rows are addressed by index, so a resumed run reads
the same global batches without loader state.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # torch, at run time only where a split is built: the checks before dispatch import this module
    from hpc_ft.train.data import TaskData

log = logging.getLogger("hpc_ft.train")


@dataclass
class FileEncoding:
    """What a task hands the cache for one dataset: its batched ``encode`` (examples -> token ids, labels and a
    ``truncated`` flag per example), the settings that change its output (part of the cache key), the class count
    (0: not classification) and what it reports (label names)."""

    encode: Callable[[dict[str, list]], dict[str, list]]
    settings: dict[str, Any]
    num_labels: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def files_signature(*paths: str | None) -> list[list[Any]]:
    """(path, size in bytes, mtime in ns) of every file under ``paths`` (a directory: each file in it), sorted:
    the data part of the cache key (a changed file is a new entry)."""
    out = []
    for p in paths:
        if not p:
            continue
        root = Path(p).resolve()
        files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root]
        for f in files:
            st = f.stat()
            out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def cache_key(spec: Any, tokenizer_fp: str, task: Any, settings: dict[str, Any]) -> str:
    """The cache fingerprint of (files, tokenizer, data settings, task and its settings)."""
    blob = json.dumps({"files": files_signature(spec.path, spec.eval_path), "tokenizer": tokenizer_fp,
                       "spec": {k: v for k, v in asdict(spec).items() if k not in ("path", "eval_path")},
                       "task": f"{type(task).__module__}.{type(task).__qualname__}", "settings": settings},
                      sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def build_file_data(task: Any, data_conf: Any, model_conf: Any) -> TaskData:
    """The train and eval splits of ``data=files``, tokenized through the cache by ``task``'s ``encoder`` and read
    through its ``collate``. Raises ConfigError when the files or settings do not fit (the same checks as
    before dispatch)."""
    from hpc_ft.data import cache_root, load_splits, spec_from_config, tokenize_cached, tokenizer_fingerprint
    from hpc_ft.errors import ConfigError
    from hpc_ft.train.data import CollatedSplit, TaskData
    from hpc_ft.train.tasks.base import plain
    from hpc_ft.train.tasks.hf import load_tokenizer
    from hpc_ft.train.tasks.hf_checks import max_length_problems

    spec = spec_from_config(plain(data_conf))
    model = plain(model_conf)
    too_long = max_length_problems(model, spec.max_length)  # checked before dispatch too; a job from the Python API
    if too_long:
        raise ConfigError(too_long)
    tok = load_tokenizer(model["path"], bool(model.get("trust_remote_code", False)))
    raw = load_splits(spec)
    enc = task.encoder(raw, tok, spec)
    key = cache_key(spec, tokenizer_fingerprint(tok), task, enc.settings)
    root = cache_root(None)
    splits, stats = {}, {}
    for name, ds in (("train", raw.train), ("eval", raw.eval)):
        # Each split is its own entry; the eval split never packs (each example is scored alone).
        packing = spec.packing and name == "train"
        splits[name], stats[name] = tokenize_cached(ds, enc.encode, f"{key}-{name}", root,
                                                    max_length=spec.max_length, packing=packing)
    pad_id = tok.pad_token_id

    def collate(rows: dict[str, list]) -> dict[str, Any]:
        return task.collate(rows, pad_id)

    st = stats["train"]
    info = {**enc.info, "truncated_examples": stats["train"].truncated + stats["eval"].truncated,
            "train_examples": st.examples, "eval_examples": stats["eval"].examples,
            "train_tokens": st.tokens, "cache_hit": st.cache_hit and stats["eval"].cache_hit,
            "tokens_per_example": st.tokens / max(1, len(splits["train"])), "pad_token_id": pad_id}
    log.info("data: %d train / %d eval examples (%d truncated at data.max_length=%d), %d train tokens, "
             "tokenization cache %s (%.2f s)", len(splits["train"]), len(splits["eval"]), info["truncated_examples"],
             spec.max_length, st.tokens, "hit" if info["cache_hit"] else f"written under {root}",
             st.seconds + stats["eval"].seconds)
    return TaskData(train=CollatedSplit(splits["train"], collate), test=CollatedSplit(splits["eval"], collate),
                    num_labels=enc.num_labels, info=info)


def pad(seqs: list[list[int]], value: int) -> Any:
    """Right-pad int sequences to the longest into a (batch, length) long tensor."""
    import torch

    longest = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), longest), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def attention_mask(seqs: list[list[int]]) -> Any:
    """1 for each real token, 0 for padding (the same shape as ``pad(seqs, ...)``)."""
    import torch

    longest = max((len(s) for s in seqs), default=0)
    return torch.tensor([[1] * len(s) + [0] * (longest - len(s)) for s in seqs], dtype=torch.long)


def data_problems(task: Any, conf: Any, world_size: int) -> tuple[list[Any], list[str]]:
    """Every problem of ``data=files`` for ``task`` before dispatch: settings, the model it needs, the files
    (missing, unreadable, empty, missing fields, fewer than one global batch, labels outside the label set)."""
    from hpc_ft.data import check_files, spec_from_config
    from hpc_ft.data.files import spec_problems
    from hpc_ft.errors import ConfigError, Problem
    from hpc_ft.train.tasks.base import is_hf_model, plain, target_of

    try:
        spec = spec_from_config(plain(conf.data))
    except ConfigError as exc:
        return list(exc.problems), []
    except TypeError as exc:
        return [Problem("data", "files", f"has a key data=files does not know ({exc})",
                        "see conf/data/files.yaml for its keys")], []
    problems = spec_problems(spec)
    if not is_hf_model(conf.model):
        problems.append(Problem("model", target_of(conf.model), "data=files reads text with the model's tokenizer: "
                                "it needs a Hugging Face checkpoint", "pass model=hf model.path=DIR"))
    problems += task.file_problems(spec)
    if problems:
        return problems, []
    problems += check_files(spec, task.required_fields(spec), conf.train.global_batch_size,
                            label_set=task.label_set(spec))
    more = getattr(task, "split_problems", None)  # checks of the loaded splits a task may add
    if not problems and callable(more):
        from hpc_ft.data import load_splits

        problems += more(load_splits(spec), spec)
    return problems, []


