"""The `hpc-ft` command: the only place that prints to the user or touches Hydra's global state."""

from __future__ import annotations

import functools
import json
import shlex
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from hpc_ft.errors import EXIT_BAD_CONFIG
# EXIT_CLOSED_PIPE: kept importable from here, where main's docstring names it.
from hpc_ft.terminal import (EXIT_CLOSED_PIPE, closed_pipe, console, interrupted_exit_status,  # noqa: F401
                             is_write_error, write_error)

USAGE = """usage: hpc-ft COMMAND [hydra overrides...]

commands:
  submit [overrides]   compose conf/, validate, dispatch (local | debug | slurm), wait, report
                       e.g. hpc-ft submit precision=fp32 optim.lr=3e-5 train.max_steps=50
                            hpc-ft submit dry_run=true      (print the job, dispatch nothing)
                            hpc-ft submit --cfg job         (print the composed config)
                            hpc-ft submit -m optim.lr=1e-5,3e-5   (a sweep)
  sbatch [overrides]   write a standalone sbatch script for the same job into its run dir
  report RUN_DIR       the run report (utilization, idle GPUs, energy, cost, advice) of a run or sweep
  plan -m [overrides]  plan a sweep within a GPU budget; submits nothing
  tune [overrides]     search hyperparameters within a budget (Optuna, early stopping); see hpc-ft tune -h
  estimate [overrides] peak memory per worker of the job, against its GPU; the changes that make it fit
  export RUN_DIR       the trained model in Hugging Face format (save_pretrained, tokenizer, model card)
  status [DIR]         where a run or sweep stands (Slurm state and reason, step, ETA, telemetry, nodes)
  logs RUN_DIR [-f]    the run's node task and torchrun logs (--node N), followed with -f
  cancel DIR [--yes]   cancel a run's job or a sweep's jobs; submitting again resumes
  list [DIR...]        recent runs and sweeps: state, metric, steps, GPU-hours, wall time

Hydra's own flags (--cfg, --info, -m, hydra.run.dir=...) work after the command.
"""
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped at a preemption checkpoint; submitting again resumes (not a failure)
EXIT_DOES_NOT_FIT = 1  # hpc-ft estimate: the job does not fit one GPU's memory (2 stays bad input)

COMMAND_USAGE = {
    "submit": """usage: hpc-ft submit [--cfg job] [-m] [overrides...]

Compose conf/ with the Hydra overrides, validate, dispatch (executor=local | debug | slurm), wait and report.
  dry_run=true          print the job description; dispatch and leave nothing
  wait=false            submit and return (hpc-ft status / logs / report RUN_DIR follow the job)
  --cfg job             print the composed config
  -m a=1,2              a sweep (planned by hpc_ft.sched)
  --from RUN_DIR        that run's job again, in a new run dir (its overrides, then yours)
  --apply-advice        with --from: the right-sizing overrides of its run report applied
  +executor.env.NAME=v  export NAME=v on every node ('+': the names are your own)
Hydra's own help: hpc-ft submit --hydra-help""",
    "sbatch": """usage: hpc-ft sbatch [overrides...]

Write a standalone sbatch script for the job into its run dir (nothing is submitted) and print the
sbatch command that submits it. Takes the same overrides as hpc-ft submit.""",
    "estimate": """usage: hpc-ft estimate [overrides...]

Estimate the job's peak memory per worker (parameters, gradients, optimizer state, activations) by tracing one
training step on fake tensors (nothing is allocated, nothing is submitted), compare it with the memory of one GPU
of resources.gpu_type (or resources.gpu_mem_gb), and when it does not fit, list the smallest overrides that make
it fit. Takes the same overrides as hpc-ft submit, without the checks of this machine (its GPUs); `hpc-ft submit`
refuses a GPU job that does not fit.
Exit status: 0 it fits (or there is no GPU to compare with), 1 it does not fit, 2 bad input.""",
    "report": """usage: hpc-ft report RUN_DIR

Print the run report (utilization, idle GPUs, energy, cost, advice) of a run dir, or of every job of a
sweep dir, and write report/report.json and plots into it. For a search (hpc-ft tune): its leaderboard,
the best trial's hpc-ft submit line and plots.""",
    "tune": """usage: hpc-ft tune [-m] [overrides...] [hydra.sweep.dir=DIR]

Search hyperparameters within a budget: Optuna proposes trials, each a full hpc_ft job; bad trials are stopped
at a checkpoint at an evaluation. The search space is Hydra's sweep grammar, e.g.
  hpc-ft tune 'optim.lr=tag(log,interval(1e-5,1e-3))' 'train.warmup_steps=choice(0,20,100)' \\
      tune.metric=eval_loss tune.direction=minimize tune.trials=32 sched.budget_gpu_hours=40
  tune.sampler=tpe|random|grid  tune.pruner=asha|median|none  tune.parallelism=N
Run it again with the same hydra.sweep.dir to continue a stopped search.""",
    "export": """usage: hpc-ft export RUN_DIR [--out DIR] [--step N] [--merge]

Write a run's model (model=hf) in Hugging Face format: safetensors weights, config, tokenizer and a model
card, loadable with AutoModelFor...from_pretrained(DIR). Default --out: RUN_DIR/export/step_<N>; the newest
checkpoint unless --step N. An existing --out is never overwritten. A LoRA run (peft=lora) writes its adapter
(PeftModel.from_pretrained(base, DIR)), or with --merge the base with the adapter merged in.""",
}


# Commands that parse their own arguments, each in its own module under hpc_ft/commands/ (imported only when run,
# so `hpc-ft --help` and the light commands stay fast): name -> (module, function taking argv, returning exit code).
COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("hpc_ft.commands.plan", "plan_main"),
    "tune": ("hpc_ft.commands.tune", "tune_main"),
    "export": ("hpc_ft.commands.export", "export_main"),
    "status": ("hpc_ft.commands.status", "status_main"),
    "logs": ("hpc_ft.commands.logs", "logs_main"),
    "cancel": ("hpc_ft.commands.cancel", "cancel_main"),
    "list": ("hpc_ft.commands.list", "list_main"),
}


class _State:
    exit_code = 0
    error: Exception | None = None
    ran = False  # the task function was called (Hydra composed a config)
    sweep_dirs: set = set()  # sweep dirs whose jobs left nothing (dry run, refused): removed when Hydra is done
    named_dir: Any = None  # hpc_ft.commands.named_dir.NamedRunDir: a hydra.run.dir= as it was before the command


def _is_multirun(argv: list[str]) -> bool:
    """The command line asks for a sweep (``-m``/``--multirun``) or sets ``hydra.mode`` itself."""
    return any(a in ("-m", "--multirun") for a in argv) or any("hydra.mode" in a for a in argv)


@contextmanager
def _compose_once(argv: list[str]) -> Iterator[None]:
    """Spare Hydra's first composition of the whole config on a single run.

    ``hydra.main`` composes the config once only to read ``hydra.mode`` (``Hydra.get_mode``) and then again to
    run; composing is most of a dry run's cold start (0.50 s against 0.26 s for importing hydra, omegaconf and
    submitit). hpc_ft's config never sets ``hydra.mode``, so without ``-m``/``--multirun`` and without a
    ``hydra.mode`` override the answer is known: answering "not set" makes Hydra run it as a single run, exactly
    what its own fallback does. With ``-m``, or if Hydra's internals move, Hydra's own path runs.
    """
    try:
        from hydra._internal.hydra import Hydra
    except ImportError:  # pragma: no cover - a Hydra without the internal class: its own path
        yield
        return
    if _is_multirun(argv) or not callable(getattr(Hydra, "get_mode", None)):
        yield
        return
    original = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Hydra.get_mode = original  # type: ignore[method-assign]


@contextmanager
def _cached_composition(argv: list[str]) -> Iterator[None]:
    """A single run's composition from hpc_ft's compose cache (hpc_ft.commands.compose_cache); a sweep's is Hydra's.

    hpc_ft's schema is registered in Hydra's ConfigStore only when Hydra composes, unless an option (``--info``,
    ``--cfg``, ``--config-dir``, ...) may make Hydra read the store in another way."""
    from hpc_ft.config.schema import register_schema

    if _is_multirun(argv):
        register_schema()
        yield
        return
    from hpc_ft.commands.compose_cache import cached_composition

    options = any(a.startswith("-") for a in argv)
    if options:
        register_schema()
    with cached_composition(before_compose=None if options else register_schema):
        yield


@contextmanager
def _process_state_kept() -> Iterator[None]:
    """Put back what running hydra.main changes in this process: ``sys.argv``, Hydra's version base
    (hpc_ft.config.compose.version_base_kept) and the root logger's handlers and level (Hydra's job logging adds a
    file handler on the run dir's log, which would take the caller's later records), for hpc-ft run in-process (a
    notebook, a test)."""
    import logging

    from hpc_ft.config.compose import version_base_kept

    argv, root = list(sys.argv), logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with version_base_kept():
            yield
    finally:
        sys.argv[:] = argv
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)


@functools.lru_cache(maxsize=1)
def _console():
    return console()


class _HeldStderr:
    """Holds what is written to stderr while Hydra composes, until the job starts (``release``) or Hydra refuses the
    command line (``take``): its refusal then becomes one hpc_ft error instead of Hydra's page of hints."""

    def __init__(self) -> None:
        import io

        self._buf, self._real, self._held = io.StringIO(), None, False

    def __enter__(self) -> "_HeldStderr":
        self._real, sys.stderr, self._held = sys.stderr, self._buf, True
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()  # what is held waits for release() or take(): the caller knows which

    def _restore(self) -> None:
        if self._held:
            sys.stderr, self._held = self._real, False

    def release(self) -> None:
        """Put the real stderr back and write to it what was held."""
        self._restore()
        sys.stderr.write(self.take())

    def take(self) -> str:
        """What was held (and no longer is), with the real stderr back."""
        self._restore()
        text = self._buf.getvalue()
        self._buf.seek(0)
        self._buf.truncate()
        return text


def _hydra_run(task, argv: list[str], prog: str) -> int:
    """Run ``task(cfg)`` under hydra.main with ``argv`` as the command line."""
    import hydra

    from hpc_ft import CONF_DIR
    from hpc_ft.config.fresh_dir import register_resolver

    register_resolver()  # conf/config.yaml names run and sweep dirs with it; the schema: _cached_composition
    _State.exit_code, _State.error, _State.ran, _State.named_dir = 0, None, False, None
    from hpc_ft.config import fresh_dir

    fresh_dir.made.clear()  # this command's own
    if any("hydra.run.dir=" in a for a in argv):  # before Hydra writes into it
        from hpc_ft.commands.named_dir import NamedRunDir

        _State.named_dir = NamedRunDir.before(argv)
    from hpc_ft.config.renames import renamed_in_config_file, renamed_override_problems
    from hpc_ft.errors import ConfigError

    renamed = renamed_override_problems(argv)
    if renamed:  # before Hydra, whose "not in TrainConf" would hide the new name
        print(f"error: {ConfigError(renamed)}", file=sys.stderr)
        return EXIT_BAD_CONFIG

    if any(a.lstrip("+").startswith("hydra/sweeper=optuna") for a in argv):
        from hydra_plugins.hpc_ft_launcher.launcher import quiet_optuna_sweeper_deprecations

        quiet_optuna_sweeper_deprecations()  # before Hydra instantiates the sweeper and its sampler
    held = _HeldStderr()

    def wrapped(cfg):
        from hpc_ft.errors import HpcFtError

        _State.ran = True
        held.release()  # the job's own output (and any warning of the compose) goes straight to stderr
        try:
            code = task(cfg)
        except BrokenPipeError:  # inside the job, where Hydra would report it as the job's error
            code = closed_pipe()
        except OSError as exc:
            if not is_write_error(exc):
                raise
            code = write_error(exc)
        except HpcFtError as exc:
            _State.error = exc
            code = EXIT_BAD_CONFIG
            _discard_unused_run_dir()
        except Exception as exc:
            if not _is_config_library_error(exc):
                raise
            # OmegaConf/Hydra refusing the composed config (e.g. in a sweep launcher): bad input, not a crash.
            from hpc_ft.config.overrides import omegaconf_problem
            from hpc_ft.errors import ConfigError

            _State.error = ConfigError([omegaconf_problem(exc)])
            code = EXIT_BAD_CONFIG
            _discard_unused_run_dir()
        _State.exit_code = max(_State.exit_code, code or 0)
        return code

    hydra_argv = _options_first(argv)
    if "dry_run=true" in argv:
        # A dry run leaves nothing and only prints: no .hydra/ to delete afterwards, and no logging set-up (loading
        # and applying Hydra's logging configs is a fifth of the compose; warnings still reach stderr).
        for key, value in (("hydra.output_subdir", "null"), ("hydra/job_logging", "none"),
                           ("hydra/hydra_logging", "none")):
            if not any(a.lstrip("+~").startswith(key) for a in argv):
                hydra_argv.append(f"{key}={value}")
    if any(a in ("--cfg", "-c", "--info", "-i") or a.startswith(("--cfg=", "--info=")) for a in argv):
        # Printing the config runs no job: show the run and sweep dirs without the resolver that creates them
        # (hpc_ft.config.fresh_dir), or every --cfg would leave an empty outputs/DATE/TIME and multirun/DATE/TIME.
        for key, plain in (("hydra.run.dir", "outputs"), ("hydra.sweep.dir", "multirun")):
            if not any(a.lstrip("+~").startswith(key + "=") for a in argv):
                hydra_argv.append(f"{key}={plain}/${{now:%Y-%m-%d}}/${{now:%H-%M-%S}}")  # a bare --info goes last
    if "--resolve" in argv and not any(a.lstrip("+~").startswith("run.dir") for a in argv):
        # --cfg job --resolve: run.dir is ${hydra:runtime.output_dir}, which exists only once a job starts (Hydra
        # would fail resolving it); show what it will be instead of making the directory.
        hydra_argv.append("run.dir='<hydra.run.dir, made when the job starts>'")
    try:
        try:
            with _process_state_kept(), _compose_once(argv), _cached_composition(argv), held:
                sys.argv = [prog, *_bare_info_last(hydra_argv)]  # hydra.main reads its command line there
                hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(wrapped)()
            held.release()  # --cfg, --info: no job ran; Hydra's warnings, if any
        finally:
            _prune_sweep_dirs()
    except SystemExit as exc:
        if exc.code in (0, None) or _State.ran:
            held.release()
            raise
        # Hydra refused an override or the config before anything ran: its reason, as one error.
        hydra_said = held.take()
        renamed_in_file = renamed_in_config_file(exc)
        if renamed_in_file is not None:  # a config file of the user's sets a key by its old name
            print(f"error: {ConfigError([renamed_in_file])}", file=sys.stderr)
            return EXIT_BAD_CONFIG
        from hpc_ft.config.overrides import hydra_refusal, refusal_fix

        _discard_fresh_dirs()  # a sweep's dir, made before Hydra applied the job's overrides
        print(hydra_refusal(hydra_said), file=sys.stderr)
        print(refusal_fix(argv, prog), file=sys.stderr)
        return EXIT_BAD_CONFIG
    except Exception as exc:
        held.release()
        if not _State.ran and isinstance(exc, ValueError) and str(exc).startswith("Only one of --run"):
            # Hydra's own refusal of two modes at once (-m with --cfg): bad input, not a crash
            print(f"error: {exc}", file=sys.stderr)
            print(f"Fix: drop one: `{prog} -m ...` runs the sweep, `{prog} --cfg job ...` prints one job's config",
                  file=sys.stderr)
            return EXIT_BAD_CONFIG
        if _State.ran or not _is_config_library_error(exc):
            raise
        # Hydra re-raises what it failed to format (e.g. hydra.run.dir=${oc.env:UNSET}): bad input all the same.
        from hpc_ft.config.overrides import omegaconf_problem
        from hpc_ft.errors import ConfigError

        print(f"error: {ConfigError([omegaconf_problem(exc)])}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if _State.error is not None:
        print(f"error: {_State.error}", file=sys.stderr)
        from hpc_ft.config.sweep_fix import sweep_refusal_fix

        fix = sweep_refusal_fix(argv, prog, _State.error)  # values of a sweep refused job by job: drop them
        if fix:
            print(fix, file=sys.stderr)
    return _State.exit_code


def _is_config_library_error(exc: BaseException) -> bool:
    """An error OmegaConf or Hydra raised about the config (missing value, bad interpolation, bad override)."""
    from hpc_ft.config.overrides import is_config_library_error

    return is_config_library_error(exc)


def _discard_unused_run_dir() -> None:
    """A refused job or a dry run leaves no run dir behind: remove the timestamped one Hydra made for it
    while it holds only Hydra's own files (in a sweep, the job's dir now and the sweep dir once Hydra is
    done, see ``_prune_sweep_dirs``). A dir the user named with ``hydra.run.dir=`` is put back as it was
    (hpc_ft.commands.named_dir: it may hold an earlier run, whose .hydra/ Hydra has just overwritten); one named
    with ``hydra.sweep.dir=`` is left alone."""
    import shutil
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from hpc_ft.rundir.layout import LOCK_FILE

    hc = HydraConfig.get()
    out, cwd = Path(hc.runtime.output_dir), Path.cwd()
    hydra_own = {hc.output_subdir, f"{hc.job.name}.log", LOCK_FILE}  # the lock of a submission refused after it
    named = "hydra.run.dir=" if hc.mode == RunMode.RUN else "hydra.sweep.dir="
    if any(o.lstrip("+").startswith(named) for o in OmegaConf.to_container(hc.overrides.hydra, resolve=False)):
        if hc.mode == RunMode.RUN and _State.named_dir is not None:
            _close_log_files_under(out)
            _State.named_dir.put_back(out, hydra_own - {None})
        return
    if cwd not in out.parents or not out.is_dir() or any(p.name not in hydra_own for p in out.iterdir()):
        return
    _close_log_files_under(out)
    shutil.rmtree(out, ignore_errors=True)
    if hc.mode == RunMode.RUN:
        _remove_empty_parents(out, cwd)
    else:
        _State.sweep_dirs.add(Path(hc.sweep.dir).absolute())


def _close_log_files_under(path) -> None:
    """Detach and close the log files Hydra opened in ``path`` (its ``<job>.log``) before the dir goes: a
    handler left on a deleted file fails every later log record of this process (hpc-ft run in-process, as
    by a notebook or a test, lives on after the command)."""
    import logging
    from pathlib import Path

    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in list(getattr(logger, "handlers", [])):
            name = getattr(handler, "baseFilename", None)
            if name is not None and Path(path) in Path(name).parents:
                logger.removeHandler(handler)
                handler.close()


def _remove_empty_parents(path, cwd) -> None:
    for parent in path.parents:  # outputs/DATE, then outputs, while empty; never the working directory
        if parent == cwd:
            break
        try:
            parent.rmdir()
        except OSError:
            break


def _prune_sweep_dirs() -> None:
    """Remove a sweep dir whose every job was discarded (it holds only Hydra's multirun.yaml)."""
    _remove_if_only_multirun_yaml(_State.sweep_dirs)
    _State.sweep_dirs = set()


def _discard_fresh_dirs() -> None:
    """The timestamped dirs this command made (``${hpc_ft.fresh_dir:...}``) that hold nothing of a job (at most
    Hydra's multirun.yaml): removed, with the parents they leave empty, for a command refused before any job ran."""
    from hpc_ft.config import fresh_dir

    _remove_if_only_multirun_yaml(fresh_dir.made)
    fresh_dir.made.clear()


def _remove_if_only_multirun_yaml(dirs) -> None:
    """Each of ``dirs`` below the working directory that holds nothing but Hydra's multirun.yaml goes, with the
    parents it leaves empty."""
    import shutil
    from pathlib import Path

    cwd = Path.cwd()
    for d in dirs:
        if cwd in d.parents and d.is_dir() and all(p.name == "multirun.yaml" for p in d.iterdir()):
            shutil.rmtree(d, ignore_errors=True)
            _remove_empty_parents(d, cwd)


# Hydra's command-line options that take a value, and the one whose value is optional (then one of these).
_HYDRA_VALUE_OPTIONS = {"--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn", "--cfg", "-c",
                        "--package", "-p", "--experimental-rerun"}
_HYDRA_INFO = {"--info", "-i"}
_HYDRA_INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def _options_first(argv: list[str]) -> list[str]:
    """``argv`` with Hydra's options (and their values) moved before the overrides, each group in its order.

    Hydra parses its command line with argparse, which takes options only before the overrides: ``hpc-ft submit
    dry_run=true --config-dir DIR train=mine`` would fail with "unrecognized arguments". A token starting with ``-``
    is an option (an override never does); ``--opt=value`` is one token."""
    options: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("-"):
            overrides.append(a)
        else:
            options.append(a)
            takes = a in _HYDRA_VALUE_OPTIONS or (a in _HYDRA_INFO and i + 1 < len(argv)
                                                  and argv[i + 1] in _HYDRA_INFO_VALUES)
            if takes and i + 1 < len(argv):
                i += 1
                options.append(argv[i])
        i += 1
    return options + overrides


def _bare_info_last(argv: list[str]) -> list[str]:
    """A ``--info`` without one of its values moved to the end: before an override, argparse would take the override
    for its value."""
    bare = [i for i, a in enumerate(argv) if a in _HYDRA_INFO
            and not (i + 1 < len(argv) and argv[i + 1] in _HYDRA_INFO_VALUES)]
    return [a for i, a in enumerate(argv) if i not in bare] + [argv[i] for i in bare]


def _in_multirun() -> bool:
    """The running Hydra job is one of a sweep's (``-m``, whichever launcher)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def _compose_spec(cfg, dispatches: bool = True) -> tuple[Any, list[str]]:
    """DictConfig -> validated JobSpec (+ warnings). Raises ConfigError with every problem; the run dir is only read.

    ``dispatches=False`` (``hpc-ft estimate``, which runs nothing): the executor is not asked about this machine's
    GPUs (the local executor's count), which a login node lacks; every other check stands."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from hpc_ft.config.overrides import to_job_conf
    from hpc_ft.config.validate import local_gpu_count
    from hpc_ft.submit.executors import resolve, validate

    # As typed: iterating the ListConfig would resolve an ${...} inside an override's text.
    overrides = OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)
    from hpc_ft.errors import ConfigError
    from hpc_ft.train.precheck import check_before_dispatch

    conf = to_job_conf(cfg, overrides)
    gpu_count = local_gpu_count if dispatches else (lambda: conf.resources.gpus_per_node)  # as many as it asks
    try:
        warnings = validate(conf, gpu_count)
    except ConfigError as exc:
        raise ConfigError(exc.problems + _later_problems(conf, overrides, exc.problems)) from None
    spec = resolve(conf, overrides)
    return spec, warnings + check_before_dispatch(spec)  # dataset sizes; what a resumed run may change


def _later_problems(conf, overrides: list[str], known: list) -> list:
    """The data, task and resume checks' problems of a conf that failed validation, so that the user sees every
    problem at once; none where the invalid values leave those checks nothing sound to build on (nodes=0 has no
    world size to split the data over), and none already among ``known``."""
    from hpc_ft.errors import ConfigError
    from hpc_ft.submit.executors import resolve
    from hpc_ft.train.precheck import check_before_dispatch

    try:
        check_before_dispatch(resolve(conf, overrides))
    except ConfigError as exc:
        seen = {p.key for p in known}
        return [p for p in exc.problems if p.key not in seen]
    except Exception:  # noqa: BLE001 - a check that cannot run on invalid values: validation's problems stand
        pass
    return []


def _submit_task(cfg) -> int:
    from hpc_ft.submit.describe import describe
    from hpc_ft.sweep.context import current_sweep

    sweep = current_sweep()
    if sweep is not None and sweep.take(cfg):  # -m: the hpc_ft launcher submits every job, as planned
        return 0
    spec, warnings = _compose_spec(cfg)
    for w in warnings:
        if spec.conf.dry_run:  # stdout holds the job's JSON alone, and a dry run does not import rich
            print(f"warning: {w}", file=sys.stderr)
        else:
            _console().print(f"[yellow]warning:[/] {w}")
    fit = _memory_check(spec)  # a GPU job that cannot fit is refused here, before anything is submitted
    if spec.conf.dry_run:  # plain JSON: a dry run does not pay for importing rich (a tenth of its cold start)
        described = {**describe(spec), **({"memory_estimate": fit.to_dict()} if fit else {})}
        # A sweep's jobs (-m) print one compact object per line (JSON Lines), each line a whole job: `jq -c`,
        # `json.loads` per line; a single run prints one indented object.
        text = json.dumps(described) if _in_multirun() else json.dumps(described, indent=2)
        _discard_unused_run_dir()  # a dry run leaves nothing behind, even when its reader goes away (`| head`)
        print(text)
        return 0
    from hpc_ft.rundir.lock import RunDirLock

    lock = RunDirLock(spec.run_dir)
    from hpc_ft.submit.executors import executor_of

    # RunDirInUse (exit 2) while another live submission uses the dir.
    lock.acquire(spec.conf.executor.name, executor_of(spec).liveness)
    if fit is not None:  # the report sets the measured peak beside it
        from hpc_ft.rundir.atomic import atomic_write_text
        from hpc_ft.rundir.layout import RunDir

        atomic_write_text(RunDir.of(spec).memory_estimate, json.dumps({**fit.to_dict(), "usable_bytes": fit.usable}))
    try:
        return _submit_locked(spec, _console(), lock)
    finally:
        lock.release()  # no-op once detached: a wait=false job holds the dir while it runs


def _submit_locked(spec, con, lock) -> int:
    import shlex

    from hpc_ft.submit.dispatch import submit
    from hpc_ft.submit.gather import gather, save_results, wait

    job = submit(spec)
    lock.record_job(str(job.job_id))
    con.print(f"submitted job {job.job_id} ({spec.conf.executor.name}, {spec.nodes} node(s) x "
              f"{spec.workers_per_node} worker(s)); run dir: {spec.run_dir}")
    if not spec.conf.wait:
        from hpc_ft.submit.executors import executor_of

        if executor_of(spec).detaches:
            lock.detach()
        con.print(f"not waiting (wait=false); later: hpc-ft report {shlex.quote(str(spec.run_dir))}", soft_wrap=True)
        return 0
    try:
        with con.status("waiting") as status:
            wait(job, poll_s=spec.conf.executor.poll_interval_s,
                 on_tick=lambda state, el: status.update(f"job {job.job_id}: {state}, {el:.0f} s"))
    except KeyboardInterrupt as exc:
        if not _stop_on_interrupt(job, spec, con, lock):
            return interrupted_exit_status(exc)
        interrupted: KeyboardInterrupt | None = exc
    else:
        interrupted = None
    reports = gather(job, spec)
    save_results(spec, reports)
    from hpc_ft.submit.summary import all_preempted, render_results, resume_command

    con.print(render_results(spec, reports))
    if all_preempted(reports):  # one unbroken line whatever the terminal width: it is meant to be pasted
        con.print(f"  {resume_command(spec)}", soft_wrap=True, markup=False, highlight=False)
    _show_run_report(spec, con)
    if interrupted is not None:
        return interrupted_exit_status(interrupted)
    if all(r.ok for r in reports):
        return 0
    return EXIT_PREEMPTED if all_preempted(reports) else 1


def _stop_on_interrupt(job, spec, con, lock) -> bool:
    """Ctrl-C while waiting: what the executor says it means (``interrupt_stops_job``). A job on this machine is
    stopped at a checkpoint and waited for: True, its results are shown. A scheduler's job goes on, and so does a
    local one on a second Ctrl-C: False, the job holds its run dir and hpc-ft says how to follow it."""
    import shlex

    from hpc_ft.submit.executors import executor_of
    from hpc_ft.submit.gather import wait

    run = shlex.quote(str(spec.run_dir))
    later = f"later: hpc-ft status {run}, hpc-ft report {run}; to stop it: hpc-ft cancel {run}"
    ex = executor_of(spec)
    if ex.interrupt_stops_job:
        con.print(f"\nstopping job {job.job_id} at a checkpoint (Ctrl-C again: stop waiting, the job goes on)")
        try:
            for line in ex.stop_and_wait([str(job.job_id)]):
                con.print(line)
            wait(job, poll_s=spec.conf.executor.poll_interval_s, timeout_s=60)
            return True
        except KeyboardInterrupt:
            pass
    lock.detach()  # the job, not this command, holds the run dir from now on
    con.print(f"\nnot waiting; job {job.job_id} goes on. {later}", soft_wrap=True)
    return False


def _show_run_report(spec, con) -> None:
    """The telemetry run report, when telemetry ran; a report failure never fails the job."""
    if not spec.conf.telemetry.enabled:
        return
    try:
        from hpc_ft import report

        rr = report.build_report(*report.load_run(spec.run_dir))
        report.print_report(con, rr)  # the advised command on one unbroken line, to paste
        report.write_report(rr, spec.run_dir)
    except Exception as exc:  # noqa: BLE001 - the training result is already printed and saved
        con.print(f"[yellow]run report unavailable:[/] {exc}")


def _estimate_task(cfg) -> int:
    """`hpc-ft estimate`: the memory estimate of the composed job, in this process (torch loads here). Returns 0
    when the job fits (or has no GPU to compare with), EXIT_DOES_NOT_FIT when it does not."""
    from hpc_ft.estimate.fit import fit_report

    spec, warnings = _compose_spec(cfg, dispatches=False)
    _discard_unused_run_dir()  # an estimate leaves nothing behind, like a dry run
    for w in warnings:
        _console().print(f"[yellow]warning:[/] {w}")
    report = fit_report(spec)
    for line in report.lines():
        print(line)
    return EXIT_DOES_NOT_FIT if report.fits is False else 0


def _memory_check(spec) -> Any:
    """The estimate of a GPU job (in a child process: this one stays torch-free) or None when it is not checked;
    raises ConfigError when the job does not fit its GPU."""
    if not spec.conf.resources.gpus_per_node or not spec.conf.resources.memory_check:
        return None
    from hpc_ft.errors import ConfigError
    from hpc_ft.estimate.child import EstimateFailed, estimate_in_child
    from hpc_ft.estimate.model import fit_problem

    try:
        report = estimate_in_child(spec)
    except EstimateFailed as exc:  # not the job's fault: say so and let it go
        _console().print(f"[yellow]warning:[/] no memory estimate: {str(exc)[-400:]}")
        return None
    problem = fit_problem(report)
    if problem is not None:
        raise ConfigError([problem])
    return report


def _sbatch_task(cfg) -> int:
    from hpc_ft.rundir.spec import save_spec
    from hpc_ft.submit.sbatch import write_sbatch

    spec, warnings = _compose_spec(cfg)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    from hpc_ft.submit.slurm import check_sbatch_values

    check_sbatch_values(spec)  # refuse values a batch script can't hold before writing anything
    from hpc_ft.rundir.layout import RunDir

    path = RunDir.of(spec).sbatch_script
    save_spec(spec)
    write_sbatch(spec, path)
    print(f"wrote {path}\nsubmit it with: sbatch {shlex.quote(str(path))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hpc-ft` console script. Returns the exit status (2: bad input, refused before anything
    was submitted; 141: the reader of stdout went away, as in ``hpc-ft submit dry_run=true | head -1``; 1: stdout
    or a file could not be written, as in ``hpc-ft status > /dev/full``; 130: Ctrl-C, as a shell counts it)."""
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:  # Ctrl-C where no command gives it a meaning of its own: no traceback
        print("\ninterrupted", file=sys.stderr)
        return interrupted_exit_status(exc)
    except BrokenPipeError:
        return closed_pipe()
    except OSError as exc:
        if is_write_error(exc):
            return write_error(exc)
        raise


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] == "--version":
        from hpc_ft import __version__

        print(__version__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd in COMMAND_USAGE and any(a in ("-h", "--help") for a in rest):
        print(COMMAND_USAGE[cmd])
        return 0
    if cmd == "submit":
        from hpc_ft.commands.resubmit import expand_argv

        rest = expand_argv(rest)  # --from RUN_DIR [--apply-advice]: that run's (advised) overrides
        return EXIT_BAD_CONFIG if rest is None else _hydra_run(_submit_task, rest, "hpc-ft submit")
    if cmd == "sbatch":
        return _hydra_run(_sbatch_task, rest, "hpc-ft sbatch")
    if cmd == "estimate":
        return _hydra_run(_estimate_task, rest, "hpc-ft estimate")
    if cmd == "report":
        if len(rest) != 1 or rest[0].startswith("-"):
            print(COMMAND_USAGE["report"], file=sys.stderr)
            return EXIT_BAD_CONFIG
        from hpc_ft.rundir.layout import SweepDir

        if SweepDir(rest[0]).tune_journal.exists():  # a search: its leaderboard (hpc_ft.commands.tune)
            from hpc_ft.commands.tune import report_main

            return report_main(rest[0])
        from hpc_ft import report

        return report.main(rest[0])
    if cmd in COMMANDS:
        import importlib

        module, func = COMMANDS[cmd]
        return getattr(importlib.import_module(module), func)(rest)
    print(f"unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return EXIT_BAD_CONFIG


if __name__ == "__main__":
    sys.exit(main())
