"""Dense (no sparsity) peak TFLOPS per GPU model and precision, for MFU.

Figures are the vendors' published dense tensor-core peaks for bf16/fp16 and the plain (non-tensor-core)
fp32 peak, since PyTorch does not use TF32 for fp32 matmuls by default. Matching is by substring of the
NVML name, most specific first (``NVIDIA H100 PCIe`` before ``H100``).
"""

from __future__ import annotations

# (substring of the NVML device name, {precision: dense peak TFLOPS})
PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("GH200", {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9}),
    ("H200", {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9}),
    ("H100 PCIe", {"bf16": 756.5, "fp16": 756.5, "fp32": 51.2}),
    ("H100 NVL", {"bf16": 835.5, "fp16": 835.5, "fp32": 60.0}),
    ("H100", {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9}),  # SXM5 (NVML: "NVIDIA H100 80GB HBM3")
    ("H800", {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9}),
    ("B200", {"bf16": 2250.0, "fp16": 2250.0}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}),
    ("A800", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.1, "fp16": 362.1, "fp32": 91.6}),
    ("L40", {"bf16": 181.0, "fp16": 181.0, "fp32": 90.5}),
    ("L4", {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3}),
    ("A10G", {"bf16": 70.0, "fp16": 70.0, "fp32": 31.2}),
    ("A10", {"bf16": 125.0, "fp16": 125.0, "fp32": 31.2}),
    ("A40", {"bf16": 149.7, "fp16": 149.7, "fp32": 37.4}),
    ("RTX 4090", {"bf16": 165.2, "fp16": 165.2, "fp32": 82.6}),  # fp32-accumulate tensor-core rate
    ("V100", {"fp16": 125.0, "fp32": 15.7}),
    ("T4", {"fp16": 65.0, "fp32": 8.1}),
]


def peak_tflops(gpu_name: str | None, precision: str) -> float | None:
    """The dense peak of ``gpu_name`` at ``precision`` (fp32 | bf16 | fp16), or None when unknown."""
    if not gpu_name:
        return None
    for key, peaks in PEAK_TFLOPS:
        if key.lower() in gpu_name.lower():
            return peaks.get(precision)
    return None
