"""Gaussian clusters and a small MLP: trains in seconds, deterministic under a seed."""

from __future__ import annotations

import torch
from torch import nn

from hpc_ft.config.validate import split_problems
from hpc_ft.errors import ConfigError
from hpc_ft.train.data import TaskData
from hpc_ft.train.tasks.sizes import SYNTHETIC, declared_sizes, synthetic_split


def gaussian_clusters(num_samples: int = 2048, num_features: int = 16, num_classes: int = 4,
                      test_fraction: float = 0.25, seed: int = 0) -> TaskData:
    """Points around ``num_classes`` random centres; separable enough to reach high accuracy quickly.

    Raises ConfigError (naming data.num_samples or data.test_fraction) when a split would be empty.
    """
    problems, sizes = declared_sizes({"_target_": SYNTHETIC, "num_samples": num_samples,
                                      "test_fraction": test_fraction})
    if sizes is not None:
        problems += split_problems(sizes.num_train, sizes.num_test, sizes.key, sizes.value, sizes.fix)[0]
    if problems:
        raise ConfigError(problems)
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, num_features, generator=g) * 2.0
    labels = torch.randint(0, num_classes, (num_samples,), generator=g)
    features = centres[labels] + torch.randn(num_samples, num_features, generator=g)
    n_test = synthetic_split(num_samples, test_fraction)[1]
    return TaskData(train={"features": features[n_test:], "labels": labels[n_test:]},
                    test={"features": features[:n_test], "labels": labels[:n_test]}, num_labels=num_classes)


class MLPClassifier(nn.Module):
    """Two-layer perceptron over ``features``."""

    def __init__(self, num_features: int, num_labels: int, hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(num_features, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, num_labels))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)
