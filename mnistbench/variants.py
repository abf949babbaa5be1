"""Speed variants of a training or inference step: numeric precision, memory format, compilation, optimizer,
convolutions.

``fp32`` is true fp32 (TF32 off); ``tf32`` lets cuDNN and cuBLAS round fp32 inputs to TF32 on tensor
cores; ``bf16`` and ``fp16`` are autocast, ``fp16`` with a ``GradScaler``. ``channels_last`` stores
weights and activations NHWC. ``compile`` is ``torch.compile`` of the model; ``compile-step`` also compiles
Adam's update, so forward, backward and optimizer all run compiled code; ``cudagraphs`` is the model's
``reduce-overhead`` mode, which replays its kernels as CUDA graphs; ``cudagraphs-step`` compiles nothing and
captures the whole eager step instead, forward, backward and a capturable Adam, as one CUDA graph that each
step replays (``training.CapturedStep``). ``matmul`` computes the convolutions on
maps of a few pixels as matrix products, and more of their work where the backend's kernels lag behind
(``mnistbench.convolution``); ``native`` leaves every convolution
to the backend's kernels, and is left out of the name. The optimizer is always Adam, the same
algorithm in each implementation: ``default`` is whatever ``torch.optim.Adam`` picks (the articles' choice:
a loop over the parameters on a CPU, ``foreach`` on a GPU; the loop for a step captured under a schedule,
``Variant.optimizer_options``), ``foreach`` batches the parameters into multi-tensor kernels, ``fused`` runs
one fused kernel.

Every compiled model starts from an empty Dynamo cache and compiles with static shapes; hitting Dynamo's
recompile limit, or a graph that CUDA graphs cannot capture, is an error, never a silent fall-back.
"""
import contextlib
import functools
import os
import shutil
from dataclasses import dataclass, fields

import torch
import torch._dynamo
import torch._inductor.config
import torch.utils._triton

from . import adam, backends, convolution, data

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
MEMORY_FORMATS = ("contiguous", "channels_last")
COMPILE_MODES = ("eager", "compile", "compile-step", "cudagraphs", "cudagraphs-step")
OPTIMIZERS = ("default", "foreach", "fused")
CONVOLUTIONS = ("native", "matmul")
CUDA_ONLY = frozenset({"tf32", "fp16", "cudagraphs", "cudagraphs-step"})
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_COMPILE_KWARGS = {"compile": {}, "compile-step": {}, "cudagraphs": {"mode": "reduce-overhead"}}
# fp16's GradScaler starts at a loss scale of 65,536 and halves it, skipping Adam's update, on every step
# whose gradients overflow; only after those steps does an fp16 step do a whole step's work.
FP16_WARM_UP_STEPS = 20

# Past its recompile limit Dynamo would otherwise run the function eagerly with one log line, and a
# "compiled" benchmark would time eager code.
torch._dynamo.config.fail_on_recompile_limit_hit = True
# Likewise Inductor runs a graph it cannot capture without CUDA graphs, with one log line, and a
# "cudagraphs" benchmark would time plain compiled code.
torch._inductor.config.triton.cudagraph_or_error = True


@dataclass(frozen=True)
class Variant:
    precision: str = "fp32"
    memory_format: str = "contiguous"
    compile: str = "eager"
    optimizer: str = "default"
    convolution: str = "native"

    def __str__(self) -> str:
        name = f"{self.precision}-{self.memory_format}-{self.compile}-{self.optimizer}"
        return name if self.convolution == "native" else f"{name}-{self.convolution}"

    @classmethod
    def parse(cls, text: str) -> "Variant":
        """The variant written as ``str(variant)``, e.g. ``bf16-channels_last-eager-fused`` or
        ``bf16-channels_last-eager-fused-matmul``."""
        parts = text.strip().split("-")
        # compile-step and cudagraphs-step hold a dash of their own
        if len(parts) >= 5 and parts[3] == "step" and f"{parts[2]}-step" in COMPILE_MODES:
            parts[2:4] = [f"{parts[2]}-step"]
        matmul = parts[4:] == ["matmul"]  # the one convolution written out
        if matmul:
            parts = parts[:4]
        choices = (PRECISIONS, MEMORY_FORMATS, COMPILE_MODES, OPTIMIZERS)
        if len(parts) != 4 or any(part not in valid for part, valid in zip(parts, choices)):
            raise ValueError(f"unknown variant {text!r}: write PRECISION-FORMAT-COMPILE-OPTIMIZER, -matmul added "
                             "to compute the convolutions on small maps as matrix products, from "
                             + "; ".join(f"{f.name}: {', '.join(v)}" for f, v in zip(fields(cls), choices)))
        return cls(*parts, convolution="matmul" if matmul else "native")

    @classmethod
    def from_info(cls, info: dict) -> "Variant":
        """The variant a stored result's ``extra_info`` ran (``mnistbench.metrics``); a field it lacks
        takes its default, as before the field existed."""
        return cls(**{f.name: info[f.name] for f in fields(cls) if info.get(f.name) is not None})

    def unsupported_on(self, device: str) -> str | None:
        """Why this variant cannot run on ``device``, or None."""
        kind = torch.device(device).type
        cuda_only = sorted({self.precision, self.compile} & CUDA_ONLY)
        if cuda_only and kind != "cuda":
            return f"{', '.join(cuda_only)} needs a CUDA device"
        if self.compile == "compile-step" and self.precision == "fp16":
            return "compile-step cannot compile GradScaler's unscale-and-step, which fp16 needs"
        if self.compile == "cudagraphs-step" and self.precision == "fp16":
            return "cudagraphs-step cannot capture GradScaler's step, which reads the gradients' overflow on the host"
        if self.compiles and (missing := compiler_missing(kind)):
            return missing
        if self.precision == "bf16" and kind == "cuda" and not _native_bf16(device):
            return f"{torch.cuda.get_device_name(device)} has no native bf16"
        if self.optimizer == "fused" and kind == "mps":
            return "fused Adam is not implemented for MPS"
        return None

    def unsupported_with(self, schedule: str) -> str | None:
        """Why this variant cannot train with the learning-rate ``schedule``, or None: a schedule changes
        Adam's rate and momentum every step, which a compiled optimizer step would recompile each time. A
        captured step reads them from tensors on the device (``training.OneCycleOnDevice``), which only Adam's
        single-tensor form takes without reading them back to the host: the ``default`` Adam runs it there."""
        if schedule == "constant":
            return None
        if self.compile == "compile-step":
            return f"compile-step needs a constant learning rate, not the {schedule} schedule"
        if self.compile == "cudagraphs-step" and self.optimizer != "default":
            return (f"the {schedule} schedule changes Adam's beta1 every step, which a captured step must read "
                    f"from the device: the {self.optimizer} Adam reads it back to the host, which a capture "
                    f"forbids; the default Adam runs its single-tensor form, which does not")
        return None

    @property
    def compiles(self) -> bool:
        """Whether this variant runs ``torch.compile``d code (``cudagraphs-step`` captures eager kernels)."""
        return self.compile in _COMPILE_KWARGS

    def configure_backends(self, device: str) -> None:
        """The suite's backend settings for a case on ``device`` (``backends.tune``): cuDNN autotuning, TF32
        on for ``tf32`` only, so that ``fp32`` means fp32."""
        backends.tune(device, tf32=self.precision == "tf32")

    def warm_up_steps(self, minimum: int) -> int:
        """Untimed steps before this variant's steps are timed: ``minimum``, or for fp16 as many as its
        GradScaler needs before a step updates the weights."""
        return max(minimum, FP16_WARM_UP_STEPS) if self.precision == "fp16" else minimum

    def autocast(self, device: str):
        """Autocast to this variant's precision; without its cache of cast weights under ``cudagraphs-step``,
        as PyTorch's CUDA graph notes require of a captured region."""
        dtype = _AUTOCAST_DTYPES.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=dtype,
                              cache_enabled=self.compile != "cudagraphs-step")

    def grad_scaler(self, device: str):
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
        return torch.amp.GradScaler(torch.device(device).type) if self.precision == "fp16" else None

    def optimizer_options(self, schedule: str = "constant") -> dict:
        """Keyword arguments that select this variant's implementation of Adam, which keeps its step count on
        the device where a CUDA graph replays it (``capturable``), in its single-tensor form under a learning-rate
        ``schedule``: the one that reads the schedule's tensors without a wait (``training.OneCycleOnDevice``)."""
        options = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[self.optimizer]
        if self.compile != "cudagraphs-step":
            return options
        return {**options, "capturable": True, **({"foreach": False} if schedule != "constant" else {})}

    def prepare_model(self, model: torch.nn.Module,
                      image_shape: tuple[int, int, int] = data.IMAGE_SHAPE) -> torch.nn.Module:
        """The model in this variant's memory format and convolutions for images of ``image_shape`` (C, H, W),
        compiled if asked (parameters are shared)."""
        if self.memory_format == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        if self.convolution == "matmul":
            model = convolution.as_matrix_products(model, image_shape)
        if self.compile in _COMPILE_KWARGS:
            separate_inductor_cache_by_cpu_capability()
            torch._dynamo.reset()  # a fresh cache: earlier cases' entries would count against the limit
            return torch.compile(model, dynamic=False, **_COMPILE_KWARGS[self.compile])
        return model

    def prepare_optimizer_step(self, optimizer: torch.optim.Optimizer):
        """``optimizer.step``, compiled for ``compile-step``; the fused one on a CPU over each parameter as the
        flat memory its kernel updates (``mnistbench.adam``)."""
        if self.compile == "compile-step":
            separate_inductor_cache_by_cpu_capability()
            return torch.compile(optimizer.step, dynamic=False)
        if self.optimizer == "fused" and optimizer.param_groups[0]["params"][0].device.type == "cpu":
            return functools.partial(adam.step, optimizer)
        return optimizer.step

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        if self.memory_format == "channels_last":
            return images.contiguous(memory_format=torch.channels_last)
        return images


def separate_inductor_cache_by_cpu_capability() -> None:
    """Give each ``ATEN_CPU_CAPABILITY`` its own Inductor cache, unless the user chose a cache directory.

    Inductor's FX graph cache keys its C++ on the graph, not on the vector ISA it picked from
    ``ATEN_CPU_CAPABILITY``, and builds it again for that ISA: a graph first compiled for AVX-512 (16 floats a
    vector), then run with ``ATEN_CPU_CAPABILITY=avx2`` (8), gets 16-lane loops over 8-lane vectors. On this
    project's Intel Xeon the compiled VGGNet's backward then indexed out of bounds (torch 2.14.1; a fresh cache
    ran it right). The variable is how one emulates an older CPU on a newer one (docs/testing.md)."""
    capability = os.environ.get("ATEN_CPU_CAPABILITY")
    if not capability:
        return
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    shared = os.path.abspath(default_cache_dir())
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR", shared) == shared:  # Inductor sets it to its default on first use
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(shared, f"aten-cpu-capability-{capability}")


@functools.cache
def compiler_missing(kind: str) -> str | None:
    """Why ``torch.compile`` cannot run on a device of ``kind`` here, or None: Inductor generates C++ on a
    CPU and Triton kernels on CUDA. A compiled case that fails although this returns None is broken, not
    unrunnable, and fails the run."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported by this Python or platform"
    if kind == "cpu":
        from torch._inductor import cpp_builder
        try:
            compiler = cpp_builder.get_cpp_compiler()
        except Exception as error:  # Inductor raises its own error types for a missing or unusable compiler
            return f"torch.compile on a CPU needs a C++ compiler: {str(error).strip().splitlines()[0]}"
        if shutil.which(compiler) is None:
            return f"torch.compile on a CPU needs a C++ compiler, and {compiler!r} is not on PATH"
    if kind == "cuda" and not torch.utils._triton.has_triton():
        return "torch.compile on CUDA needs Triton, which this torch cannot import"
    return None


def _native_bf16(device: str) -> bool:
    """Whether the GPU ``device`` names (not the current one) runs bf16 natively."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def matrix(device: str, precisions=PRECISIONS, memory_formats=MEMORY_FORMATS, compile_modes=COMPILE_MODES,
           optimizers=OPTIMIZERS, convolutions=("native",)) -> list[Variant]:
    """Every requested combination that ``device`` can run."""
    every = (Variant(p, m, c, o, v) for p in precisions for m in memory_formats for c in compile_modes
             for o in optimizers for v in convolutions)
    return [variant for variant in every if variant.unsupported_on(device) is None]
