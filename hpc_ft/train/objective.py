"""What the loop optimises and measures: the one place that knows the task is classification over labels.

The loop calls an objective for the model's extra arguments, the forward pass, the training loss, the evaluation
sums and the metrics made from them, the baseline to beat and the FLOPs per sample; it knows nothing else about
the task. The training
tasks of a later issue (causal-LM SFT: masked token loss, perplexity, token accuracy) plug in here.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F

from hpc_ft.train.data import LABELS, TaskData


class Objective(Protocol):
    """The task-specific part of a training step and of evaluation.

    Evaluation is a sum over the test split: every rank adds its micro-batches into ``eval_sums`` (a float64
    tensor of ``len(SUMS)``), the sums are all-reduced, and ``eval_metrics`` turns them into the reported values.
    """

    SUMS: tuple[str, ...]  # what evaluation adds up, summed across ranks
    METRICS: tuple[str, ...]  # the keys eval_metrics returns (recorded in train.json)

    def model_kwargs(self, data: TaskData) -> dict[str, Any]: ...
    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any: ...
    def loss(self, outputs: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...
    def add_eval_sums(self, sums: torch.Tensor, outputs: Any, batch: dict[str, torch.Tensor]) -> None: ...
    def eval_metrics(self, sums: torch.Tensor) -> dict[str, float]: ...
    def describe(self, metrics: dict[str, float]) -> str: ...
    def baseline(self, data: TaskData) -> dict[str, float]: ...
    def flops_per_sample(self, model: torch.nn.Module, data: TaskData) -> float | None: ...


class Classification:
    """Cross-entropy over class labels; accuracy and mean loss on the test split; the majority-class baseline."""

    SUMS = ("correct", "samples", "loss_sum")
    METRICS = ("eval_accuracy", "eval_loss")

    def model_kwargs(self, data: TaskData) -> dict[str, Any]:
        """What the model's ``_target_`` is called with besides its config: the number of classes."""
        return {"num_labels": data.num_labels}

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's logits: every input of the batch but the labels, by name."""
        return model(**{k: v for k, v in batch.items() if k != LABELS})

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the micro-batch, computed in float32 whatever the autocast dtype."""
        return F.cross_entropy(outputs.float(), batch[LABELS])

    def add_eval_sums(self, sums: torch.Tensor, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """Add this micro-batch's correct predictions, samples and summed loss (on the device: no sync)."""
        labels = batch[LABELS]
        sums[0] += (outputs.argmax(-1) == labels).sum()
        sums[1] += labels.numel()
        sums[2] += F.cross_entropy(outputs.float(), labels, reduction="sum")

    def eval_metrics(self, sums: torch.Tensor) -> dict[str, float]:
        """Accuracy and mean loss over every test sample (sums already summed across ranks)."""
        n = max(1.0, float(sums[1]))
        return {"eval_accuracy": float(sums[0]) / n, "eval_loss": float(sums[2]) / n}

    def describe(self, metrics: dict[str, float]) -> str:
        return f"eval accuracy {metrics['eval_accuracy']:.3f}, eval loss {metrics['eval_loss']:.3f}"

    def baseline(self, data: TaskData) -> dict[str, float]:
        """Accuracy of always predicting the most frequent test label: what training must beat."""
        return {"majority_accuracy": data.majority_accuracy()}

    def flops_per_sample(self, model: torch.nn.Module, data: TaskData) -> float | None:
        """Training FLOPs per sample: the model's own ``flops_per_sample(seq_len)`` if it has one, else
        6 x non-embedding parameters x tokens (the usual dense estimate)."""
        custom = getattr(model, "flops_per_sample", None)
        if callable(custom):
            return float(custom(data.seq_len))
        params = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
        return 6.0 * params * (data.seq_len or 1)
