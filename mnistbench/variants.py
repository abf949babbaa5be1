"""Speed variants of a training or inference step: numeric precision, memory format, compilation.

``fp32`` is true fp32 (TF32 off); ``tf32`` lets cuDNN and cuBLAS round fp32 inputs to TF32 on tensor
cores; ``bf16`` and ``fp16`` are autocast, ``fp16`` with a ``GradScaler``. ``channels_last`` stores
weights and activations NHWC. ``compile`` is ``torch.compile`` of the model; ``cudagraphs`` is its
``reduce-overhead`` mode, which replays the step's kernels as CUDA graphs.
"""
import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
MEMORY_FORMATS = ("contiguous", "channels_last")
COMPILE_MODES = ("eager", "compile", "cudagraphs")
CUDA_ONLY = frozenset({"tf32", "fp16", "cudagraphs"})
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_COMPILE_KWARGS = {"compile": {}, "cudagraphs": {"mode": "reduce-overhead"}}


@dataclass(frozen=True)
class Variant:
    precision: str = "fp32"
    memory_format: str = "contiguous"
    compile: str = "eager"

    def __str__(self) -> str:
        return f"{self.precision}-{self.memory_format}-{self.compile}"

    def unsupported_on(self, device: str) -> str | None:
        """Why this variant cannot run on ``device``, or None."""
        kind = torch.device(device).type
        cuda_only = sorted({self.precision, self.compile} & CUDA_ONLY)
        if cuda_only and kind != "cuda":
            return f"{', '.join(cuda_only)} needs a CUDA device"
        if self.compile != "eager" and not torch._dynamo.is_dynamo_supported():
            return "torch.compile is not supported by this Python or platform"
        if self.precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
            return f"{torch.cuda.get_device_name(device)} has no native bf16"
        return None

    def configure_backends(self) -> None:
        """Set the process-wide TF32 switches: on for ``tf32`` only, so that ``fp32`` means fp32."""
        allow = self.precision == "tf32"
        torch.backends.cudnn.allow_tf32 = allow
        torch.backends.cuda.matmul.allow_tf32 = allow

    def autocast(self, device: str):
        dtype = _AUTOCAST_DTYPES.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=dtype)

    def grad_scaler(self, device: str):
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
        return torch.amp.GradScaler(torch.device(device).type) if self.precision == "fp16" else None

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model in this variant's memory format, compiled if asked (parameters are shared)."""
        if self.memory_format == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        if self.compile in _COMPILE_KWARGS:
            return torch.compile(model, **_COMPILE_KWARGS[self.compile])
        return model

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        if self.memory_format == "channels_last":
            return images.contiguous(memory_format=torch.channels_last)
        return images


# The fastest honest configuration per device type, chosen from step measurements (README, "fast").
FAST = {
    "cpu": Variant("bf16", "channels_last", "eager"),
    "cuda": Variant("bf16", "channels_last", "cudagraphs"),
    "mps": Variant("fp32", "contiguous", "eager"),
}


def fast(device: str) -> Variant:
    return FAST[torch.device(device).type]


def matrix(device: str, precisions=PRECISIONS, memory_formats=MEMORY_FORMATS, compile_modes=COMPILE_MODES) -> list[Variant]:
    """Every requested combination that ``device`` can run."""
    every = (Variant(p, m, c) for p in precisions for m in memory_formats for c in compile_modes)
    return [variant for variant in every if variant.unsupported_on(device) is None]
