"""Peak TFLOP/s for utilisation figures: NVIDIA's data sheets for known GPUs, and a measured probe for any device.

Data-sheet peaks are dense (without 2:4 sparsity), tensor cores for tf32/bf16/fp16 and CUDA cores for
fp32. A CPU has no data sheet here, so its peak is measured: the best of a few square matrix products in
the precision at hand with the run's threads, through BLAS and through the convolution library, what
this CPU can achieve, emulated bf16 included. The same probe on a GPU shows how far its data sheet is
from what it reaches.
"""
import contextlib
import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import backends, devices

# (pattern matched as a whole word in torch.cuda.get_device_name, first match wins) -> precision -> TFLOP/s
PEAK_TFLOPS = (
    (r"H200 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    (r"H200", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),  # SXM
    (r"H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0}),
    (r"H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.0, "fp16": 835.0}),
    (r"H100", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),  # SXM5 (e.g. "H100 80GB HBM3")
    (r"A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    (r"L4", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0}),
)
_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PROBE_SIZES = {"cpu": 2048, "cuda": 8192, "mps": 4096}
PROBE_REPEATS = 5
MIN_PROBE_SIZE = 256
PROBE_SECONDS = 0.2


def datasheet_tflops(device_name: str, precision: str) -> float | None:
    """The dense data-sheet peak of ``device_name`` at ``precision``, or None when unknown. Names match as
    whole words, so "L4" is not an L40S and "H200" not a GH200."""
    for pattern, peaks in PEAK_TFLOPS:
        if re.search(rf"(?<![\w-]){pattern}(?!\w)", device_name):
            return peaks.get(precision)
    return None


def datasheet_lists(device: str) -> bool:
    """Whether ``device`` is a GPU the data sheets above list (every precision of it), whose utilisation is
    then against its data sheet, not a measured peak; False for a CPU and for a GPU this machine cannot reach."""
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return False
    return datasheet_tflops(devices.name(device), "fp32") is not None


@dataclass(frozen=True)
class Peak:
    """A measured peak and the product that gave it, which ``in_turns`` times again: its matrices' size, how
    many products one timing held, and its kernel (a name in ``_KERNELS``)."""

    tflops: float
    size: int
    products: int
    kernel: str


_MEASURED: dict[tuple[str, str, int], Peak] = {}
# The same product through each library the networks use: BLAS for linear layers (``torch.mm``), the
# convolution library for convolutions (a 1x1 convolution over n pixels, in both memory formats).
_KERNELS = {"mm": lambda a, b: torch.mm(a, b),
            "conv": lambda a, b: F.conv2d(_as_images(b), a[:, :, None, None]),
            "conv channels_last": lambda a, b: F.conv2d(
                _as_images(b).contiguous(memory_format=torch.channels_last),
                a[:, :, None, None].contiguous(memory_format=torch.channels_last))}


def measured_tflops(device: str, precision: str, threads: int) -> float:
    """TFLOP/s of the best of ``PROBE_REPEATS`` n x n matrix products on ``device`` after one warm-up,
    measured once per run (``threads`` is part of the key: a CPU's peak depends on it)."""
    key = (device, precision, threads)
    if key not in _MEASURED:
        _MEASURED[key] = _probe(device, precision)
    return _MEASURED[key].tflops


def measured() -> dict:
    """Every peak measured in this run, for the machine info: device -> precision -> TFLOP/s, and how."""
    table = {}
    for (device, precision, threads), peak in _MEASURED.items():
        entry = table.setdefault(device, {"method": f"{probe_description(device)}, {threads} threads"})
        entry[precision] = round(peak.tflops, 4)
    return table


def _probe(device: str, precision: str) -> Peak:
    """The best of the same product through each library the networks use (``_KERNELS``), with this process's
    threads. On an AMD CPU, MKL's fp32 GEMM reaches about half of what oneDNN's convolution does."""
    with _settings(device, precision):
        found = [Peak(*_tflops(kernel, device, precision), name) for name, kernel in _KERNELS.items()]
    return max(found, key=lambda peak: peak.tflops)


def in_turns(step: Callable[[], object], flop_per_step: float, device: str, precision: str, threads: int,
             turns: int) -> dict:
    """A step's share of the peak with the step and the product that gave the peak taken in ``turns`` turns (step,
    product, step, ...), so that both see the machine in the same state: on a shared VM whose speed drifts, a
    share of a peak measured at another moment is off by as much as the drift (on this project's 2-core Intel
    Xeon VM the bf16 peak read 0.72 to 1.85 TFLOP/s in processes minutes apart; in 15 s of turns of VGGNet's
    step and the product, the step read 0.37-0.42 of the product's speed in the same turns where its median
    over the best product of those runs read 0.15-0.16: docs/measured.md). ``step`` runs one step and waits for
    it; ``flop_per_step`` is its FLOP (``mnistbench.flops``). Each turn's product is timed as one of the peak's
    timings was (as many products between two synchronisations), but once, where the peak is the best of
    ``PROBE_REPEATS``: on a steady machine a turn's product reads a little under it.

    Returns the median share (``utilisation_in_turns``), its lowest and highest turn, and the product's median
    TFLOP/s in the turns; nothing where this run measured no peak for ``device``, ``precision`` and ``threads``;
    where the device ran out of memory for the product's operands, why (the timed rounds stand)."""
    peak = _MEASURED.get((device, precision, threads))
    if peak is None:
        return {}
    kernel = _KERNELS[peak.kernel]
    shares, products_tflops = [], []
    try:
        a, b = _operands(peak.size, device, precision, torch.Generator().manual_seed(0))
        with _settings(device, precision):
            _timed(kernel, a, b, device)  # warm-up: the operands' first use
        for _ in range(turns):
            start = time.perf_counter()
            step()
            step_seconds = time.perf_counter() - start
            with _settings(device, precision):  # the product's settings for the product only: the step keeps its own
                products_tflops.append(_tflops_of(peak.size, _timed(kernel, a, b, device, peak.products)))
            shares.append(flop_per_step / step_seconds / 1e12 / products_tflops[-1])
    except torch.OutOfMemoryError as error:  # the device is full: the step's memory and the product's operands
        return {"utilisation_in_turns_failed": f"{type(error).__name__}: {error}"}
    return {"utilisation_in_turns": statistics.median(shares),
            "utilisation_in_turns_range": [min(shares), max(shares)],
            "peak_in_turns_tflops": statistics.median(products_tflops),
            "peak_in_turns_method": f"{turns} turns of one step and {peak.products} {peak.kernel} product(s) of "
                                    f"two {peak.size}x{peak.size} matrices between two synchronisations"}


@contextlib.contextmanager
def _settings(device: str, precision: str):
    """The backend settings a peak is measured with, for the block only."""
    with backends.preserved():
        backends.tune(device, tf32=precision == "tf32")
        yield


def _operands(size: int, device: str, precision: str, generator: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(size, size, generator=generator).to(device, _DTYPES[precision]) for _ in range(2)]


def _timed(kernel, a: torch.Tensor, b: torch.Tensor, device: str, products: int = 1) -> float:
    """Seconds per product of ``products`` back to back between two synchronisations."""
    devices.synchronize(device)
    start = time.perf_counter()
    for _ in range(products):
        kernel(a, b)
    devices.synchronize(device)
    return (time.perf_counter() - start) / products


def _tflops_of(size: int, seconds: float) -> float:
    """TFLOP/s of one product of two ``size`` x ``size`` matrices in ``seconds``."""
    return 2 * size**3 / seconds / 1e12


def _as_images(matrix: torch.Tensor) -> torch.Tensor:
    return matrix.reshape(1, matrix.shape[0], -1, 32)


def _tflops(kernel, device: str, precision: str) -> tuple[float, int, int]:
    """TFLOP/s, the size they were reached at, and the products a timing held: the best of ``PROBE_REPEATS``
    timings after a warm-up, at the largest size up to the device's that takes about ``PROBE_SECONDS`` a
    timing: an emulated bf16 product of 2048x2048 takes a minute on an AVX2 CPU, so its size is chosen from a
    first product of 256x256. A product shorter than that (a GPU's few milliseconds, where launching and
    synchronising would count) is repeated between two synchronisations until a timing lasts about
    ``PROBE_SECONDS``."""
    generator = torch.Generator().manual_seed(0)
    small = _operands(MIN_PROBE_SIZE, device, precision, generator)
    _timed(kernel, *small, device)  # warm-up: kernel selection, first allocations
    scaled = int(MIN_PROBE_SIZE * (PROBE_SECONDS / _timed(kernel, *small, device)) ** (1 / 3)) // 64 * 64
    size = max(MIN_PROBE_SIZE, min(PROBE_SIZES[torch.device(device).type], scaled))
    a, b = _operands(size, device, precision, generator)
    # the first product at this size also warms it up
    products = max(1, math.ceil(PROBE_SECONDS / _timed(kernel, a, b, device)))
    best = min(_timed(kernel, a, b, device, products) for _ in range(PROBE_REPEATS))
    return _tflops_of(size, best), size, products


def probe_description(device: str) -> str:
    size = PROBE_SIZES[torch.device(device).type]
    return (f"best of {PROBE_REPEATS} timings of products of two square matrices of up to {size} (about "
            f"{PROBE_SECONDS} s a timing, short products repeated between two synchronisations) after a warm-up, "
            f"through torch.mm and as a 1x1 convolution (contiguous and channels_last)")
