"""The Python API (README "From Python"): every override compose_conf cannot compose is one hpc_ft ConfigError with
the fix the CLI gives, Hydra's own exception chained as its cause; values are validate's to refuse."""

import pytest
from hydra.errors import HydraException

from hpc_ft.config.compose import compose_conf
from hpc_ft.errors import ConfigError
from hpc_ft.submit.executors import validate

BASE = ["model=mlp", "data=synthetic"]


@pytest.mark.parametrize("override, key, value, words", [
    ("train.max_step=3", "train.max_step", "3",
     ["Key 'max_step' not in 'TrainConf'", "did you mean compose_conf(['model=mlp', 'data=synthetic', "
                                           "'train.max_steps=3'], run_dir="]),
    ("train.max_steps=abc", "train.max_steps", "abc", ["could not be converted to Integer",
                                                       "train.max_steps takes a whole number"]),
    ("train.compile=maybe", "train.compile", "maybe", ["train.compile takes true or false"]),
    ("train.max_steps=(", "train.max_steps", "(", ["is not valid Hydra syntax", """'train.max_steps="("'"""]),
    ("train.max_steps=1,2", "train.max_steps", "1,2", ["makes it a sweep"]),
    ("executor.env.HF_HOME=/tmp/hf", "executor.env.HF_HOME", "/tmp/hf", ["'+executor.env.HF_HOME=/tmp/hf'"]),
    ("optim.lrr=0.1", "optim.lrr", "0.1", ["optim=adamw has no 'lrr'; did you mean"]),
    ("~train.max_steps", "train.max_steps", "~train.max_steps", ["cannot be deleted"]),
])
def test_a_bad_override_is_one_config_error_with_the_clis_fix(tmp_path, override, key, value, words):
    with pytest.raises(ConfigError) as err:
        compose_conf([*BASE, override], run_dir=tmp_path)
    (problem,) = err.value.problems
    assert (problem.key, problem.value) == (key, value), str(err.value)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert isinstance(err.value.__cause__, HydraException)  # Hydra's own refusal, chained
    assert "HYDRA_FULL_ERROR" not in str(err.value) and "To append to your config" not in str(err.value)
    assert "hpc-ft submit -m" not in str(err.value) and "shell" not in str(err.value)  # a CLI hint, not here


def test_a_missing_group_option_names_the_options_without_hydras_search_path(tmp_path):
    with pytest.raises(ConfigError) as err:
        compose_conf(["model=mpl", "data=synthetic"], run_dir=tmp_path)
    msg = str(err.value)
    assert err.value.problems[0].key == "model" and "hf, minilm, mlp" in msg, msg
    assert f"did you mean compose_conf(['model=mlp', 'data=synthetic'], run_dir={str(tmp_path)!r})" in msg, msg
    assert "Config search path" not in msg and "provider=" not in msg, msg
    assert type(err.value.__cause__).__name__ == "MissingConfigException"


def test_a_renamed_key_names_its_new_name_before_hydra(tmp_path):
    with pytest.raises(ConfigError) as err:
        compose_conf([*BASE, "train.batch_size=32"], run_dir=tmp_path)
    assert "was renamed train.global_batch_size" in str(err.value) and "train.global_batch_size=32" in str(err.value)


def test_an_unresolvable_interpolation_is_a_config_error_with_its_cause(tmp_path):
    with pytest.raises(ConfigError) as err:
        compose_conf([*BASE, "train.max_steps=${oc.env:HPC_FT_TEST_SURELY_UNSET}"], run_dir=tmp_path)
    assert err.value.problems[0].key == "train.max_steps"
    assert type(err.value.__cause__).__module__.startswith("omegaconf")


def test_bad_values_compose_and_validate_refuses_them_all_at_once(tmp_path):
    """README: compose_conf refuses overrides it cannot compose; validate refuses values, every one at once."""
    conf = compose_conf([*BASE, "optim.lr=-1", "resources.nodes=0"], run_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(conf, gpu_count=lambda: 0)
    assert {"optim.lr", "resources.nodes"} <= {p.key for p in err.value.problems}


def test_the_readme_says_what_compose_conf_and_validate_raise():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### From Python"):readme.index("### Outputs")]
    assert "ConfigError on a bad override" in section and "`__cause__`" in section
