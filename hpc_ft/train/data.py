"""TaskData and the deterministic batch stream.

The sample order is a pure function of (seed, step): a resumed run, or a run on a different
number of workers, reads exactly the same global batches, so no loader state needs saving.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterator

import torch

LABELS = "labels"


@dataclass
class TaskData:
    """A classification task held in memory as tensors with a common first dimension.

    ``train`` and ``test`` map input names (passed to the model as keyword arguments) to tensors, plus
    ``labels``. A text task adds ``input_ids`` and ``attention_mask``; tokens are counted from the mask.
    """

    train: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]
    num_labels: int

    def __post_init__(self) -> None:
        for name, split in (("train", self.train), ("test", self.test)):
            if LABELS not in split:
                raise ValueError(f"TaskData.{name} has no '{LABELS}' tensor")
            sizes = {k: v.shape[0] for k, v in split.items()}
            if len(set(sizes.values())) != 1:
                raise ValueError(f"TaskData.{name} tensors differ in length: {sizes}")

    @property
    def num_train(self) -> int:
        return self.train[LABELS].shape[0]

    @property
    def num_test(self) -> int:
        return self.test[LABELS].shape[0]

    @property
    def seq_len(self) -> int | None:
        ids = self.train.get("input_ids")
        return None if ids is None else int(ids.shape[1])

    def majority_accuracy(self) -> float:
        """Accuracy of always predicting the most frequent test label (the baseline to beat)."""
        counts = torch.bincount(self.test[LABELS], minlength=self.num_labels)
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


def micro_batches(split: dict[str, torch.Tensor], idx: torch.Tensor, rank: int, world_size: int,
                  grad_accum_steps: int) -> list[dict[str, torch.Tensor]]:
    """This rank's ``grad_accum_steps`` micro-batches of one global batch ``idx``, each of
    len(idx) / (world_size x grad_accum_steps) samples (validation enforces divisibility)."""
    per = idx.numel() // (world_size * grad_accum_steps)
    mine = idx.view(grad_accum_steps, world_size, per)[:, rank]
    return [{k: v[m] for k, v in split.items()} for m in mine]


def eval_batches(split: dict[str, torch.Tensor], rank: int, world_size: int,
                 micro_batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's share of the test set in micro-batches of ``micro_batch_size`` samples (every sample
    counted exactly once across ranks)."""
    n = split[LABELS].shape[0]
    mine = torch.arange(rank, n, world_size)
    for i in range(0, mine.numel(), micro_batch_size):
        sel = mine[i:i + micro_batch_size]
        yield {k: v[sel] for k, v in split.items()}
