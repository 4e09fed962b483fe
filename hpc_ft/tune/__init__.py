"""Hyperparameter search within a budget (`hpc-ft tune`): Optuna proposes, hpc_ft runs each trial as a job.

``space``: Hydra sweep overrides -> Optuna distributions. ``settings``: the tune.* rules and Optuna's sampler and
pruner. ``budget``: what may start (pure). ``trials``: one running trial's job, its evaluations, stopping it.
``driver``: the asynchronous loop over a study kept in Optuna's journal file. ``results``: leaderboard and plots.
"""
