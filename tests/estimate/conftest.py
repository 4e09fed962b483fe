"""The tiny checkpoints and data files of the task tests, shared (made once per session)."""

from tests.tasks.conftest import data_cache, llama_dir, pairs_file, bert_dir, topics_file  # noqa: F401
