"""Hydra launcher plugin of hpc_ft: a -m sweep planned within a budget, submitted as Slurm job arrays."""
