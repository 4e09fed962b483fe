"""Dispatch: submitit executors (slurm, local, debug), sbatch rendering, gathering node reports."""
