"""Sequence classification: cross-entropy over class labels; accuracy and mean loss on the test split; the
majority-class baseline. The default task (MiniLM on chatterbot intents, the synthetic MLP task, any
``model=hf`` encoder on ``data=files`` with a text and a label column)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpc_ft.errors import ConfigError, Problem
from hpc_ft.train.tasks.base import LABELS, instantiate, is_file_data, is_hf_model
from hpc_ft.train.tasks.files import FileEncoding, attention_mask, build_file_data, pad

# torch is imported where a tensor is made: the checks before dispatch build this task on a login node (its
# data=files settings and label set) without torch.
if TYPE_CHECKING:
    import torch

    from hpc_ft.train.data import TaskData


def logits_of(outputs: Any) -> torch.Tensor:
    """The logits of a model's output: a Hugging Face ModelOutput's ``.logits``, or the tensor itself."""
    import torch

    return outputs if isinstance(outputs, torch.Tensor) else outputs.logits


class SequenceClassification:
    """One label per example. ``labels``: the label set of ``data=files`` (null: the train split's labels, sorted);
    examples with a label outside it are refused before dispatch."""

    SUMS = ("correct", "samples", "loss_sum")
    METRICS = ("eval_accuracy", "eval_loss")
    AUTO_CLASS = "sequence_classification"

    def __init__(self, labels: list | None = None):
        self.labels = list(labels) if labels is not None else None

    # --- data and model ---------------------------------------------------------------------------------------

    def build_data(self, conf: Any) -> TaskData:
        """The splits: ``data=files`` through the tokenization cache, else the data group's ``_target_``."""
        if is_file_data(conf.data):
            return build_file_data(self, conf.data, conf.model)
        return instantiate(conf.data)

    def model_kwargs(self, data: TaskData) -> dict[str, Any]:
        """What the model is built with besides its config: the number of classes (and their names)."""
        kw: dict[str, Any] = {"num_labels": data.num_labels}
        if data.info.get("label_names"):
            kw["id2label"] = {i: str(n) for i, n in enumerate(data.info["label_names"])}
        if data.info.get("pad_token_id") is not None:
            kw["pad_token_id"] = data.info["pad_token_id"]
        return kw

    def build_model(self, model_conf: Any, model_kwargs: dict[str, Any]) -> torch.nn.Module:
        """``model=hf``: AutoModelForSequenceClassification; else the model's ``_target_`` with ``num_labels``."""
        if is_hf_model(model_conf):
            return instantiate(model_conf, _convert_="all", auto_class=self.AUTO_CLASS, **model_kwargs)
        return instantiate(model_conf, num_labels=model_kwargs["num_labels"])

    # --- data=files -------------------------------------------------------------------------------------------

    def required_fields(self, spec: Any) -> list[str]:
        return ["text_field", "label_field"]

    def label_set(self, spec: Any) -> list | None:
        return self.labels

    def file_problems(self, spec: Any) -> list[Problem]:
        if spec.packing:
            return [Problem("data.packing", True, "packing concatenates examples: a classification example must "
                            "stay whole", "pass data.packing=false (or task=causal_lm)")]
        return []

    def _labels(self, raw: Any, spec: Any) -> tuple[list, list[Problem]]:
        """The label set (``labels``, else the train split's labels sorted) and the problem of eval labels
        outside it (a class the model never saw trained)."""
        label_field = spec.label_field
        names = self.labels if self.labels is not None else sorted(set(raw.train.unique(label_field)), key=repr)
        unknown = sorted(set(raw.eval.unique(label_field)) - set(names), key=repr)
        if not unknown:
            return names, []
        return names, [Problem("data.label_field", label_field, f"eval labels not in the label set: {unknown[:10]} "
                               f"(label set: {names[:20]})", "give every eval label some train examples, or set "
                               "task.labels")]

    def split_problems(self, raw: Any, spec: Any) -> list[Problem]:
        """Before dispatch, on the loaded splits: eval labels outside the label set."""
        return self._labels(raw, spec)[1]

    def encoder(self, raw: Any, tokenizer: Any, spec: Any) -> FileEncoding:
        """Tokenize ``text_field`` (truncated to max_length, flagged) and map ``label_field`` to class ids."""
        field, label_field, max_length = spec.text_field, spec.label_field, spec.max_length
        names, problems = self._labels(raw, spec)
        if problems:
            raise ConfigError(problems)
        ids = {n: i for i, n in enumerate(names)}

        def encode(batch: dict[str, list]) -> dict[str, list]:
            enc = tokenizer([str(t) for t in batch[field]], truncation=False, add_special_tokens=True)["input_ids"]
            return {"input_ids": [e[:max_length] for e in enc], "labels": [ids[v] for v in batch[label_field]],
                    "truncated": [len(e) > max_length for e in enc]}

        return FileEncoding(encode, {"labels": [repr(n) for n in names]}, num_labels=len(names),
                            info={"label_names": [str(n) for n in names]})

    def collate(self, rows: dict[str, list], pad_id: int) -> dict[str, torch.Tensor]:
        """Pad a micro-batch to its longest example; one label per example."""
        import torch

        return {"input_ids": pad(rows["input_ids"], pad_id), "attention_mask": attention_mask(rows["input_ids"]),
                LABELS: torch.as_tensor(rows[LABELS], dtype=torch.long)}

    # --- step and evaluation ----------------------------------------------------------------------------------

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's logits: every input of the batch but the labels, by name."""
        return logits_of(model(**{k: v for k, v in batch.items() if k != LABELS}))

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the micro-batch, computed in float32 whatever the autocast dtype."""
        import torch.nn.functional as F

        return F.cross_entropy(outputs.float(), batch[LABELS])

    def add_eval_sums(self, sums: torch.Tensor, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """Add this micro-batch's correct predictions, samples and summed loss (on the device: no sync)."""
        import torch.nn.functional as F

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


