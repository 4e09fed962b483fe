"""``${hpc_ft.fresh_dir:outputs/DATE/TIME}``: a timestamped run (or sweep) dir no other submission has.

Hydra's default ``outputs/DATE/TIME`` names one directory per second, so two submissions started in the same
second trained in one run dir (and each reported the other's result). The resolver creates the directory
with an atomic ``mkdir`` (atomic on local and network file systems): the first submission of a second gets
``TIME``, the next ones ``TIME_01``, ``TIME_02``, ... which still sort by time. Hydra caches the value
(``use_cache``) and copies the cache into every sweep job's config, so one submission resolves it once.
"""

from __future__ import annotations

from pathlib import Path

RESOLVER = "hpc_ft.fresh_dir"
MAX_SUFFIX = 9999
# Every directory this process made here, absolute: a command that ends before any job ran (Hydra refused an
# override of a sweep after the sweep dir was made) removes the ones left holding only Hydra's multirun.yaml.
made: list[Path] = []


def fresh_dir(base: str) -> str:
    """Create and return ``base``, or ``base_NN`` (lowest NN free) when ``base`` exists already.

    Raises FileExistsError when every suffix up to MAX_SUFFIX is taken.
    """
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    for n in range(MAX_SUFFIX + 1):
        candidate = base if n == 0 else f"{base}_{n:02d}"
        try:
            Path(candidate).mkdir()
        except FileExistsError:
            continue
        made.append(Path(candidate).absolute())
        return candidate
    raise FileExistsError(f"{base}: every suffix up to _{MAX_SUFFIX} exists already")


def register_resolver() -> None:
    """Register ``${hpc_ft.fresh_dir:...}`` with OmegaConf (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, fresh_dir, use_cache=True)
