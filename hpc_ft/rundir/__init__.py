"""The run-dir contract (DESIGN.md): one place owns the run dir and the sweep dir.

- ``layout``: every path (``RunDir``, ``NodeDir``, ``SweepDir``); no other module spells one.
- ``atomic``: atomic writes (a crash never leaves a half-written record).
- ``records``: the typed, versioned records that cross stages (``TrainResult``, ``NodeReport``).
- ``spec``: ``job.yaml``, the saved JobSpec.
- ``lock``: one live submission per run dir.
"""
