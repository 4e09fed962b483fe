"""hpc_ft's compose cache (hpc_ft/commands/compose_cache.py): a second identical command line is answered from the
cache with the same config; anything the composition read that changed, a warning, a foreign or torn entry, or
the cache turned off makes Hydra compose again."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest

from hpc_ft import cli
from hpc_ft.commands import compose_cache


@pytest.fixture
def composed(tmp_path, monkeypatch):
    """Counts Hydra's own compositions (under the cache) in a private cache dir; returns the list of calls."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    monkeypatch.setenv("HPC_FT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HPC_FT_COMPOSE_CACHE", raising=False)
    calls: list[list[str]] = []
    original = ConfigLoaderImpl.load_configuration

    def counting(self, *a, **kw):
        calls.append(list(kw.get("overrides", a[1] if len(a) > 1 else [])))
        return original(self, *a, **kw)

    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", counting)
    monkeypatch.chdir(tmp_path)
    return calls


def dry_run(capsys, *overrides: str, options: tuple[str, ...] = ()) -> dict:
    assert cli.main(["submit", *options, "dry_run=true", "model=mlp", "data=synthetic", *overrides]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_same_command_line_is_composed_once_and_gives_the_same_job(composed, capsys):
    first = dry_run(capsys, "train.max_steps=7")
    second = dry_run(capsys, "train.max_steps=7")
    assert len(composed) == 1
    assert second == first and second["train"]["max_steps"] == 7
    third = dry_run(capsys, "train.max_steps=8")  # other overrides: another entry
    assert len(composed) == 2 and third["train"]["max_steps"] == 8
    assert len(list(compose_cache.cache_dir().glob("*.pkl"))) == 2


def test_the_cache_hands_out_a_fresh_copy_with_hydras_flags(composed, tmp_path):
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from omegaconf import OmegaConf

    from hpc_ft.config import register_configs
    from hpc_ft.config.compose import hpc_ft_config_dir

    register_configs()  # what the CLI does before Hydra composes (this test may be its worker's first)
    got = []
    with hpc_ft_config_dir():
        from hydra.core.global_hydra import GlobalHydra
        from hydra.types import RunMode

        loader = GlobalHydra.instance().config_loader()
        with compose_cache.cached_composition():
            for _ in range(2):
                got.append(ConfigLoaderImpl.load_configuration(loader, "config", ["train.seed=3"], RunMode.RUN))
    assert len(composed) == 1
    first, second = got
    assert first is not second
    assert OmegaConf.is_struct(second) and OmegaConf.to_yaml(second) == OmegaConf.to_yaml(first)
    second.train.seed = 4  # the job changes its copy, not the cache's
    with hpc_ft_config_dir(), compose_cache.cached_composition():
        loader = GlobalHydra.instance().config_loader()
        assert ConfigLoaderImpl.load_configuration(loader, "config", ["train.seed=3"], RunMode.RUN).train.seed == 3


def test_an_edited_config_file_of_the_users_is_composed_again(composed, capsys, tmp_path):
    user = tmp_path / "myconf"
    (user / "train").mkdir(parents=True)
    mine = user / "train" / "mine.yaml"
    mine.write_text("defaults:\n  - default\n  - _self_\nmax_steps: 11\n")
    args = {"options": ("--config-dir", str(user))}
    assert dry_run(capsys, "train=mine", **args)["train"]["max_steps"] == 11
    assert dry_run(capsys, "train=mine", **args)["train"]["max_steps"] == 11
    assert len(composed) == 1
    mine.write_text("defaults:\n  - default\n  - _self_\nmax_steps: 12\n")  # same size, same second
    assert dry_run(capsys, "train=mine", **args)["train"]["max_steps"] == 12
    assert len(composed) == 2
    (user / "train" / "other.yaml").write_text("max_steps: 1\n")  # a new file in a source the job reads
    dry_run(capsys, "train=mine", **args)
    assert len(composed) == 3


def test_an_edited_structured_config_module_is_composed_again(composed, capsys, tmp_path, monkeypatch):
    module = tmp_path / "schema_stand_in.py"
    module.write_text("X = 1\n")
    monkeypatch.setattr(compose_cache, "_structured_config_files", lambda: [module])
    dry_run(capsys)
    dry_run(capsys)
    assert len(composed) == 1
    module.write_text("X = 22\n")
    dry_run(capsys)
    assert len(composed) == 2


def test_another_working_directory_is_another_entry(composed, capsys, tmp_path, monkeypatch):
    dry_run(capsys)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    dry_run(capsys)
    assert len(composed) == 2


def test_a_composition_that_warns_warns_every_time_and_is_not_kept(composed, capsys, monkeypatch):
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    counting = ConfigLoaderImpl.load_configuration

    def warning(self, *a, **kw):
        warnings.warn("a config of yours is odd", UserWarning, stacklevel=1)
        return counting(self, *a, **kw)

    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", warning)
    for _ in range(2):
        with pytest.warns(UserWarning, match="a config of yours is odd"):
            dry_run(capsys)
    assert len(composed) == 2
    assert not list(compose_cache.cache_dir().glob("*.pkl"))


@pytest.mark.parametrize("spoil", ["torn", "foreign-writable"])
def test_a_torn_or_unsafe_entry_is_not_read(composed, capsys, spoil):
    dry_run(capsys)
    (entry,) = compose_cache.cache_dir().glob("*.pkl")
    if spoil == "torn":
        entry.write_bytes(entry.read_bytes()[:100])
    else:
        entry.chmod(0o666)  # anyone could have written it: a pickle runs code when loaded
    assert dry_run(capsys)["train"]["max_steps"] > 0
    assert len(composed) == 2


def test_off_or_unwritable_cache_only_costs_a_composition(composed, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HPC_FT_COMPOSE_CACHE", "off")
    dry_run(capsys)
    dry_run(capsys)
    assert len(composed) == 2 and not compose_cache.cache_dir().exists()
    monkeypatch.delenv("HPC_FT_COMPOSE_CACHE")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HPC_FT_CACHE_DIR", str(blocker / "cache"))  # under a file: cannot be made
    dry_run(capsys)
    dry_run(capsys)
    assert len(composed) == 4


def test_a_sweep_is_composed_by_hydra(composed, capsys):
    assert cli.main(["submit", "-m", "dry_run=true", "model=mlp", "data=synthetic", "train.seed=1,2"]) == 0
    capsys.readouterr()
    assert not compose_cache.cache_dir().exists()


def test_the_cache_keeps_at_most_max_entries(composed, capsys, monkeypatch):
    monkeypatch.setattr(compose_cache, "MAX_ENTRIES", 2)
    for steps in (3, 4, 5):
        dry_run(capsys, f"train.max_steps={steps}")
    assert len(list(compose_cache.cache_dir().glob("*.pkl"))) == 2
    dry_run(capsys, "train.max_steps=5")  # the newest is still there
    assert len(composed) == 3


def test_the_cache_dir_is_private(composed, capsys):
    dry_run(capsys)
    assert compose_cache.cache_dir().stat().st_mode & 0o077 == 0
    assert all(p.stat().st_mode & 0o077 == 0 for p in compose_cache.cache_dir().iterdir())


def test_the_default_place_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("HPC_FT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compose_cache.cache_dir() == tmp_path / "hpc_ft" / "compose"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert compose_cache.cache_dir() == Path.home() / ".cache" / "hpc_ft" / "compose"
    assert os.environ.get("HPC_FT_CACHE_DIR") is None


def test_the_schema_is_registered_only_when_hydra_composes_or_may_read_it(composed, capsys, monkeypatch):
    from hydra.core.config_store import ConfigStore

    repo = ConfigStore.instance().repo
    dry_run(capsys)
    monkeypatch.delitem(repo, "hpc_ft_schema.yaml")
    dry_run(capsys)  # a hit: Hydra reads no config, so JobConf is not turned into a structured config
    assert "hpc_ft_schema.yaml" not in repo
    dry_run(capsys, "train.seed=5")  # a miss
    assert "hpc_ft_schema.yaml" in repo
    monkeypatch.delitem(repo, "hpc_ft_schema.yaml")
    # --info reads Hydra's defaults list from the ConfigStore outside a composition: registered up front
    assert cli.main(["submit", "--info", "defaults", "dry_run=true", "model=mlp", "data=synthetic"]) == 0
    assert "hpc_ft_schema" in capsys.readouterr().out
