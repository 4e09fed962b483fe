"""What the loop optimises and measures, by name: the ``Task`` protocol (``hpc_ft.train.tasks.base``).

Kept for the names earlier code imports: ``Objective`` is the task protocol and ``Classification`` the
sequence-classification task (``hpc_ft.train.tasks.classification``).
"""

from __future__ import annotations

from hpc_ft.train.tasks.base import Task as Objective
from hpc_ft.train.tasks.classification import SequenceClassification as Classification

__all__ = ["Classification", "Objective"]
