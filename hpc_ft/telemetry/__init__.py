"""Per-node telemetry: NVML and host samplers, the series file format, streaming summaries.

``pynvml`` is imported only when a sampler starts, so importing this package stays cheap.
"""

from hpc_ft.rundir.layout import series_files
from hpc_ft.telemetry.records import SeriesFile, SeriesWriter, read_series
from hpc_ft.telemetry.sampler import NodeSampler
from hpc_ft.telemetry.summary import BucketMeans, Downsampler, NodeSummary, QuantileSketch, Stat

__all__ = ["NodeSampler", "SeriesWriter", "SeriesFile", "read_series", "series_files", "NodeSummary",
           "QuantileSketch", "Stat", "Downsampler", "BucketMeans"]
