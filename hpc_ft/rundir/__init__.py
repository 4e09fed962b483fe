"""The run-dir contract (DESIGN.md): for now its lock, ``hpc_ft.rundir.lock`` (one live submission per run dir)."""
