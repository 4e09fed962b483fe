"""What a training task is: the protocol the loop calls, and the helpers tasks share.

A task owns everything that differs between kinds of fine-tuning: building its data (in memory, or from files
through ``hpc_ft.data``), building the model from the ``model`` config, collating and masking, the loss, the
evaluation sums and the metrics made from them, the baseline to beat and the FLOPs per sample. The loop
(``hpc_ft.train.loop``) knows none of it. Tasks are built from the ``task`` config group by ``_target_``, so a
user's own task drops in like a model or a dataset does.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

HF_MODEL_TARGET = "hpc_ft.train.tasks.hf.load_model"  # conf/model/hf.yaml
FILE_DATA_TARGET = "hpc_ft.data.FileDataSpec"  # conf/data/files.yaml
LABELS = "labels"  # the batch key of the targets (hpc_ft.train.data re-exports it)
IGNORE_INDEX = -100  # label of a token left out of the loss (prompt, padding): torch's cross_entropy default


class Task(Protocol):
    """The task-specific part of setup, of a training step and of evaluation.

    Evaluation is a sum over the test split: every rank adds its micro-batches into ``eval_sums`` (a float64
    tensor of ``len(SUMS)``), the sums are all-reduced, and ``eval_metrics`` turns them into the reported values.
    """

    SUMS: tuple[str, ...]  # what evaluation adds up, summed across ranks
    METRICS: tuple[str, ...]  # the keys eval_metrics returns (recorded in train.json)

    def build_data(self, conf: Any) -> Any: ...  # a TaskData (hpc_ft.train.data) from the job's conf
    def model_kwargs(self, data: Any) -> dict[str, Any]: ...  # what the model needs from the data (num_labels)
    def build_model(self, model_conf: Any, model_kwargs: dict[str, Any]) -> Any: ...
    def forward(self, model: Any, batch: dict[str, Any]) -> Any: ...
    def loss(self, outputs: Any, batch: dict[str, Any]) -> Any: ...  # the micro-batch's mean loss
    # Optional, for a loss that is a mean over tokens: ``loss_sum(outputs, batch)`` (the summed loss) and
    # ``loss_count(batch)`` (what it sums over); a step then averages over the whole global batch
    # (hpc_ft.train.loss_scale). Without them each micro-batch's mean weighs the same.
    def add_eval_sums(self, sums: Any, outputs: Any, batch: dict[str, Any]) -> None: ...
    def eval_metrics(self, sums: Any) -> dict[str, float]: ...
    def describe(self, metrics: dict[str, float]) -> str: ...
    def baseline(self, data: Any) -> dict[str, float]: ...
    def flops_per_sample(self, model: Any, data: Any) -> float | None: ...


def target_of(node: Any) -> str | None:
    """The ``_target_`` of a config group (a dict or DictConfig), or None."""
    try:
        return node.get("_target_")
    except AttributeError:
        return None


def is_hf_model(model_conf: Any) -> bool:
    """Whether the ``model`` group is ``model=hf`` (a local Hugging Face checkpoint)."""
    return target_of(model_conf) == HF_MODEL_TARGET


def is_file_data(data_conf: Any) -> bool:
    """Whether the ``data`` group is ``data=files`` (examples read from files through hpc_ft.data)."""
    return target_of(data_conf) == FILE_DATA_TARGET


def instantiate(conf: Any, **kwargs: Any) -> Any:
    """Build a ``_target_`` object (Hydra semantics: nested targets, _partial_, _args_).

    An hpc_ft error raised by the target (a dataset refusing its sizes) comes out as itself, not wrapped
    in Hydra's InstantiationException, so it is reported as one clear message.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    from hpc_ft.errors import HpcFtError

    try:
        return hydra_instantiate(conf, **kwargs)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, HpcFtError):
            raise exc.__cause__ from None
        raise


def plain(node: Any) -> Any:
    """A config node as plain Python containers (DictConfig/ListConfig -> dict/list), anything else as is."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def model_settings(model_conf: Mapping) -> dict[str, Any]:
    """The ``model`` group without its ``_target_`` (what the target is called with)."""
    return {k: v for k, v in dict(plain(model_conf)).items() if k != "_target_"}
