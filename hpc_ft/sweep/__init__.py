"""Hydra -m sweeps: plan every job (hpc_ft.sched), validate all, submit them as job arrays, gather every node.

``plan``: composed jobs -> SweepJobs -> a Plan (pure). ``history``: durations of earlier runs from their dirs.
``context``: the hand-over between the launcher and the CLI's submit task. ``run``: submission and gathering.
``outcome``: what a waited-for sweep shows when its jobs end (a results table) and its report written.
The Hydra side lives in hydra_plugins/hpc_ft_launcher.
"""
