"""Dense peak TFLOP/s of known accelerators, for utilisation figures.

From NVIDIA's data sheets, dense (without 2:4 sparsity), tensor cores for tf32/bf16/fp16 and CUDA
cores for fp32. A device not listed here (every CPU included) gets no utilisation figure: a guessed
peak would make the percentage a fiction.
"""
# (substring of torch.cuda.get_device_name, in matching order) -> precision -> TFLOP/s
PEAK_TFLOPS = (
    ("H200", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),
    ("H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0}),
    ("H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.0, "fp16": 835.0}),
    ("H100", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),  # SXM5 (e.g. "H100 80GB HBM3")
    ("A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    ("L4", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0}),
)


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The dense peak of ``device_name`` at ``precision``, or None when unknown."""
    for pattern, peaks in PEAK_TFLOPS:
        if pattern in device_name:
            return peaks.get(precision)
    return None
