"""Peak memory per worker before submission: will the job fit on the GPUs it asks for, and if not, what to change.

``model.py`` holds the figures (no torch: login-node commands read them); ``trace.py`` computes them by running one
training step on fake tensors under PyTorch's own memory tracker (nothing is allocated); ``fixes.py`` searches the
smallest overrides that make a job fit; ``child.py`` runs the trace in a child process so the login-node commands
(dry run, plan) never import torch themselves.
"""

from hpc_ft.estimate.model import GPU_MEMORY_GIB, MemoryEstimate, FitReport, gpu_memory_bytes

__all__ = ["GPU_MEMORY_GIB", "MemoryEstimate", "FitReport", "gpu_memory_bytes"]
