"""The submitit SlurmExecutor for a single job and for a sweep's array comes from one function, which is also the
one place that sets submitit's preemption signal."""

from __future__ import annotations

from hpc_ft.config.compose import compose_conf
from hpc_ft.job import resolve
from hpc_ft.submit.slurm import make_slurm_executor


def test_single_and_array_executors_signal_the_same_way(tmp_path):
    from submitit.slurm.slurm import SlurmJobEnvironment

    spec = resolve(compose_conf(["model=mlp", "data=synthetic", "executor=slurm", "executor.preempt_signal=XCPU",
                                 "executor.preempt_signal_delay_s=90", "resources.timeout_min=10"],
                                run_dir=tmp_path / "run"))
    before = SlurmJobEnvironment.USR_SIG
    try:
        single = make_slurm_executor(spec)
        array = make_slurm_executor(spec, folder=tmp_path / "sweep" / ".submitit" / "array0", array_parallelism=2)
        assert single.folder == (spec.run_dir / "submitit").absolute()
        assert array.folder == (tmp_path / "sweep" / ".submitit" / "array0").absolute()
        assert array.parameters["array_parallelism"] == 2
        for ex in (single, array):
            text = ex._make_submission_file_text("python -m submitit.core._submit F", "uid")
            assert "#SBATCH --signal=XCPU@90" in text
            assert "export SUBMITIT_PREEMPT_SIGNAL=XCPU" in text  # submitit's handler on the nodes listens for it
    finally:
        SlurmJobEnvironment.USR_SIG = before
