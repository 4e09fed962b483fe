"""``python -m hpc_ft.train JOB_YAML``: one training worker, as started by torchrun."""

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hpc_ft.train RUN_DIR/job.yaml  (under torchrun)", file=sys.stderr)
        return 2
    from hpc_ft.job import JobSpec
    from hpc_ft.train.loop import train

    return train(JobSpec.load(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
