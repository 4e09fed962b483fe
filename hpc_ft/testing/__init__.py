"""Fixtures shared by the tests, the notebook's test and the benchmarks: crafted run dirs and records.

Nothing in hpc_ft imports this package; it sits above every layer, so it may build records of any stage
(a job.yaml through config and job, NodeReports from node, series files from telemetry).
"""
