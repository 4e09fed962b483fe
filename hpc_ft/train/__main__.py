"""``python -m hpc_ft.train JOB_YAML``: one training worker, as started by torchrun."""

import logging
import os
import sys

from torch.distributed.elastic.multiprocessing.errors import record


# @record: an exception is written to torchrun's error file for this worker (TORCHELASTIC_ERROR_FILE), so torchrun's
# closing summary shows its traceback and orders the failed ranks by when they failed (hpc_ft.node.errortail).
@record
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hpc_ft.train RUN_DIR/job.yaml  (under torchrun)", file=sys.stderr)
        return 2
    from hpc_ft.job import JobSpec
    from hpc_ft.train.loop import train

    return train(JobSpec.load(argv[0]))


def exit_now(code: int) -> None:
    """End the worker without interpreter finalization, once everything is flushed.

    A gloo worker thread can still be dropping the last collective's work (it holds tensors made in
    Python) when the main thread finishes. Freeing them takes the GIL, and a thread that takes the GIL
    during finalization aborts the process: SIGABRT, "terminate called without an active exception",
    a failed node after training finished (seen about once in 20 runs on a loaded 2-core machine).
    Checkpoints, metrics and train.json are closed by the time ``train`` returns.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    code = main()
    exit_now(0 if code is None else code)  # None: @record's return for a SystemExit(0)
