"""TaskData and the deterministic batch stream.

The sample order is a pure function of (seed, step): a resumed run, or a run on a different
number of workers, reads exactly the same global batches, so no loader state needs saving.

A split is either a dict of tensors with a common first dimension (in-memory tasks), or a ``CollatedSplit``:
a (memory-mapped) Hugging Face dataset read by index, each micro-batch padded by its task's ``collate``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Union

import torch

from hpc_ft.train.tasks.base import LABELS  # noqa: F401  (re-exported: the key of a batch's targets)


@dataclass
class CollatedSplit:
    """A split of variable-length rows (a ``datasets.Dataset``, memory-mapped from the tokenization cache):
    ``take(idx)`` reads those rows only and ``collate`` pads them into one micro-batch of tensors."""

    rows: Any  # datasets.Dataset (or anything with len() and rows by a list of indices)
    collate: Callable[[dict[str, list]], dict[str, torch.Tensor]]

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.collate(self.rows[idx.tolist()])


Split = Union[dict, CollatedSplit]


def split_len(split: Split) -> int:
    """Samples in a split (a tensor dict's first dimension, a collated split's rows)."""
    if isinstance(split, CollatedSplit):
        return len(split)
    return next(iter(split.values())).shape[0] if split else 0


def take(split: Split, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """The samples ``idx`` of a split as one batch of tensors."""
    if isinstance(split, CollatedSplit):
        return split.take(idx)
    return {k: v[idx] for k, v in split.items()}


@dataclass
class TaskData:
    """A task's train and test splits.

    In memory, ``train`` and ``test`` map input names (passed to the model as keyword arguments) to tensors,
    plus ``labels``. A text task adds ``input_ids`` and ``attention_mask``; tokens are counted from the mask.
    From files, each split is a ``CollatedSplit``. ``num_labels`` is the class count (0: not a classification);
    ``info`` carries what the data side reports (tokens, truncated examples, the label names, cache use).
    """

    train: Split
    test: Split
    num_labels: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, split in (("train", self.train), ("test", self.test)):
            if isinstance(split, CollatedSplit):
                continue
            if LABELS not in split:
                raise ValueError(f"TaskData.{name} has no '{LABELS}' tensor")
            sizes = {k: v.shape[0] for k, v in split.items()}
            if len(set(sizes.values())) != 1:
                raise ValueError(f"TaskData.{name} tensors differ in length: {sizes}")

    @property
    def num_train(self) -> int:
        return split_len(self.train)

    @property
    def num_test(self) -> int:
        return split_len(self.test)

    @property
    def seq_len(self) -> int | None:
        """Tokens per sample: the padded length in memory, the mean real length from files."""
        if "tokens_per_example" in self.info:
            return self.info["tokens_per_example"]
        ids = self.train.get("input_ids") if isinstance(self.train, dict) else None
        return None if ids is None else int(ids.shape[1])

    def majority_accuracy(self) -> float:
        """Accuracy of always predicting the most frequent test label (the baseline to beat)."""
        labels = self.test[LABELS] if isinstance(self.test, dict) else torch.tensor(list(self.test.rows[LABELS]))
        counts = torch.bincount(labels.reshape(-1), minlength=self.num_labels)
        return float(counts.max()) / max(1, int(counts.sum()))


@functools.lru_cache(maxsize=2)  # a step's batch spans at most two epochs; don't reshuffle every step
def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def global_batch(n: int, seed: int, step: int, global_batch_size: int) -> torch.Tensor:
    """Indices of the global batch of optimizer step ``step`` (0-based), epochs reshuffled by seed.

    Raises ValueError for an empty split (``n`` < 1): the loop refuses one with a clear message first.
    """
    if n < 1:
        raise ValueError(f"global_batch needs at least one sample, got n={n}")
    start = step * global_batch_size
    out, pos = [], start
    while pos < start + global_batch_size:
        epoch, offset = divmod(pos, n)
        take = min(n - offset, start + global_batch_size - pos)
        out.append(_epoch_order(n, seed, epoch)[offset:offset + take])
        pos += take
    return torch.cat(out)


def micro_batches(split: Split, idx: torch.Tensor, rank: int, world_size: int,
                  grad_accum_steps: int) -> list[dict[str, torch.Tensor]]:
    """This rank's ``grad_accum_steps`` micro-batches of one global batch ``idx``, each of
    len(idx) / (world_size x grad_accum_steps) samples (validation enforces divisibility)."""
    per = idx.numel() // (world_size * grad_accum_steps)
    mine = idx.view(grad_accum_steps, world_size, per)[:, rank]
    return [take(split, m) for m in mine]


def eval_batches(split: Split, rank: int, world_size: int,
                 micro_batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's share of the test set in micro-batches of ``micro_batch_size`` samples (every sample
    counted exactly once across ranks)."""
    mine = torch.arange(rank, split_len(split), world_size)
    for i in range(0, mine.numel(), micro_batch_size):
        yield take(split, mine[i:i + micro_batch_size])
