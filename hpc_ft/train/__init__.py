"""The torchrun target: ``python -m hpc_ft.train RUN_DIR/job.yaml``. DDP, AMP, atomic checkpoints, exact resume.

Imports no submitit: a user can put it under their own torchrun.
"""
