"""The tiny Hugging Face checkpoints and data files of the task tests (tests/tasks/conftest.py), for the fitting
tests (LoRA, activation checkpointing, FSDP2)."""

from __future__ import annotations

import pytest

from hpc_ft.testing.hf_models import tiny_llama
from tests.tasks.conftest import bert_dir, data_cache, llama_dir, pairs_file  # noqa: F401 - fixtures re-used


@pytest.fixture(scope="session")
def llama64_dir(tmp_path_factory):
    """A tiny Llama 64 wide: bitsandbytes' CPU kernels pack 4-bit weights in blocks of 64 features."""
    return tiny_llama(tmp_path_factory.mktemp("tiny_llama64"), hidden_size=64)


def sft_overrides(model_dir, data_file, steps: int = 4, *extra: str) -> list[str]:
    """A causal-LM SFT job on the tiny model: seconds per run, a checkpoint every 2 steps."""
    return ["task=causal_lm_sft", "model=hf", f"model.path={model_dir}", "data=files", f"data.path={data_file}",
            "data.prompt_field=prompt", "data.response_field=response", "data.max_length=32",
            "precision=fp32", "optim.lr=0.02", f"train.max_steps={steps}", "train.global_batch_size=8",
            "train.ckpt_every_steps=2", "train.warmup_steps=1", "train.log_every_steps=1",
            "train.eval_every_steps=0", "train.num_threads=1", "train.eval_micro_batch_size=16",
            "telemetry=off", *extra]
