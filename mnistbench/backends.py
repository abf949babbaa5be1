"""The process-wide backend switches that change what an fp32 step computes, or how fast: TF32 for fp32
convolutions and matrix products on CUDA, and cuDNN's autotuning.

They are global, so a test or case that sets them would leak into the next: ``snapshot`` and ``restore``
bracket each test. torch 2.9 replaced the ``allow_tf32`` flags with ``fp32_precision`` ("ieee", "tf32", or
"none" to follow the level above), and reading a legacy flag after the new one was set raises; this module
uses the new API where torch has it (2.11, 2.14) and the legacy flags only on older torch.

Two settings are used: ``tuned`` (cuDNN autotunes for the fixed shapes; TF32 only for the ``tf32``
precision, so that ``fp32`` means fp32) and PyTorch's defaults (no autotuning; cuDNN convolutions may use
TF32, matrix products may not), which the articles' scripts ran with and the ``reference`` setup keeps.
"""
import contextlib

import torch

NEW_API = hasattr(torch.backends.cuda.matmul, "fp32_precision")


def snapshot() -> dict:
    """Every switch this module sets, as ``restore`` takes them back."""
    if NEW_API:
        tf32 = {"conv": torch.backends.cudnn.conv.fp32_precision, "matmul": torch.backends.cuda.matmul.fp32_precision}
    else:
        tf32 = {"conv": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}
    return {"cudnn_benchmark": torch.backends.cudnn.benchmark, "tf32": tf32}


def restore(state: dict) -> None:
    """Every switch set back as ``snapshot`` read it into ``state``."""
    torch.backends.cudnn.benchmark = state["cudnn_benchmark"]
    if NEW_API:
        torch.backends.cudnn.conv.fp32_precision = state["tf32"]["conv"]
        torch.backends.cuda.matmul.fp32_precision = state["tf32"]["matmul"]
    else:
        torch.backends.cudnn.allow_tf32 = state["tf32"]["conv"]
        torch.backends.cuda.matmul.allow_tf32 = state["tf32"]["matmul"]


@contextlib.contextmanager
def preserved():
    """The switches as they were before the block, whatever it set (or raised)."""
    saved = snapshot()
    try:
        yield
    finally:
        restore(saved)


def set_tf32(enabled: bool) -> None:
    """Let (or forbid) cuDNN's convolutions and cuBLAS's matrix products round fp32 inputs to TF32."""
    if NEW_API:
        precision = "tf32" if enabled else "ieee"
        torch.backends.cudnn.conv.fp32_precision = precision
        torch.backends.cuda.matmul.fp32_precision = precision
    else:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled


def tune(device: str, tf32: bool) -> None:
    """The suite's settings for a timed case on ``device``: cuDNN autotuning for the fixed shapes, TF32 only
    when asked for."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True
    set_tf32(tf32)


def use_pytorch_defaults() -> None:
    """PyTorch's own settings, which the articles' scripts ran with: no autotuning, TF32 allowed in cuDNN's
    convolutions and not in matrix products."""
    torch.backends.cudnn.benchmark = False
    if NEW_API:
        torch.backends.cudnn.conv.fp32_precision = "tf32"
        torch.backends.cuda.matmul.fp32_precision = "none"  # follows torch.get_float32_matmul_precision()
    else:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False


def describe(device: str) -> dict:
    """The settings in effect for ``device``, as the result records them: on CUDA cuDNN's autotuning and the
    fp32 precision of convolutions and matrix products (``ieee``, ``tf32``, or ``none``: as the level above
    says, which for matrix products is fp32 unless ``torch.set_float32_matmul_precision`` said otherwise;
    reading that legacy setting raises once the new API was used); on a CPU oneDNN's fp32 precision (``none``
    is fp32; a user may have set ``bf16``)."""
    kind = torch.device(device).type
    if kind == "cpu":
        return {"onednn_fp32_precision": torch.backends.mkldnn.fp32_precision} if NEW_API else {}
    if kind != "cuda":
        return {}
    if NEW_API:
        tf32 = {"conv_fp32_precision": torch.backends.cudnn.conv.fp32_precision,
                "matmul_fp32_precision": torch.backends.cuda.matmul.fp32_precision}
    else:
        tf32 = {"conv_allow_tf32": torch.backends.cudnn.allow_tf32,
                "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    return {"cudnn_benchmark": torch.backends.cudnn.benchmark, **tf32}
