"""The `hpc-ft` commands beside hpc_ft/cli.py: they parse arguments, compose Hydra configs and print.

The command layer is the top of the import order: nothing else in hpc_ft imports it.
"""
