"""What a result must carry to be compared across machines and upgrades: software versions, and what decides
the hardware's speed.

A model name is not enough: on virtual machines a Zen 4 EPYC (AVX-512, native bf16) and a first-generation
EPYC (AVX2 only, bf16 emulated several times slower than fp32) both read "AMD EPYC". A CPU is therefore
identified by vendor, family/model/stepping, the ISA features that decide training speed, the kernel level
torch dispatches to, and the threads used; a GPU by its name, memory, compute capability and driver.
pytest-benchmark already stores py-cpuinfo's description of the CPU in ``machine_info["cpu"]``; ``info``
adds what only torch knows. The identities are built from the stored JSON, so files written before they
existed still load, their unknown parts said to be unknown.
"""
import functools
import re
from pathlib import Path

import cpuinfo
import torch
import torchvision

from . import devices

# CPU flags (py-cpuinfo's names, as in /proc/cpuinfo) that change how fast the training kernels run.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16", "sve", "bf16")
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")
# The JSON type of each stored machine_info field that ``host``, ``identity`` and the reports read, in the
# specs of ``mnistbench.reports.results.check``: py-cpuinfo's CPU description as pytest-benchmark stores it,
# and ours from ``info`` (GPUs stored by name alone before their properties were).
GPU_TYPES = {"name": str, "memory_gib": float, "compute_capability": str, "driver": (str, None)}
STORED_TYPES = {
    "cpu": {"vendor_id_raw": str, "brand_raw": str, "family": int, "model": int, "stepping": int, "flags": [str],
            "count": int},
    "mnistbench": {"torch": str, "torchvision": str, "cpu_name": str, "cpu_threads": int, "cpu_capability": (str, None),
                   "gpus": [(GPU_TYPES, str)]},
}


def info() -> dict:
    """Versions of torch, torchvision, CUDA and cuDNN; the CPU's name and torch's kernel level; each GPU."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "cpu_name": devices.cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpus": [gpu(index) for index in range(torch.cuda.device_count())],
    }


def gpu(index: int) -> dict:
    properties = torch.cuda.get_device_properties(index)
    return {
        "name": properties.name,
        "memory_gib": round(properties.total_memory / 2**30, 1),
        "compute_capability": f"{properties.major}.{properties.minor}",
        "driver": nvidia_driver(),
    }


def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version (torch does not expose it), or None without one."""
    try:
        text = NVIDIA_DRIVER.read_text()
    except OSError:
        return None
    found = re.search(r"Kernel Module.*?\s(\d+\.\d+(?:\.\d+)?)\s", text)
    return found.group(1) if found else None


def host(machine_info: dict, threads=None) -> str:
    """The CPU of the machine that wrote a result file, e.g. ``AMD EPYC (AuthenticAMD 25/17/1; avx2 avx512f
    avx512_bf16; torch AVX512; 2 cpus)``, with ``; 2 threads`` appended when ``threads`` is given. ``machine_info``
    is in the stored layout, its fields of the types ``STORED_TYPES`` names (the reports check stored files)."""
    cpu = machine_info.get("cpu") or {}  # py-cpuinfo, stored by pytest-benchmark
    ours = machine_info.get("mnistbench") or {}
    parts = []
    if "family" in cpu:
        vendor, model, stepping = (cpu.get(key, "?") for key in ("vendor_id_raw", "model", "stepping"))
        parts.append(f"{vendor} {cpu['family']}/{model}/{stepping}")
    flags = cpu.get("flags")
    if flags is None:
        parts.append("unknown ISA")
    else:
        parts.append(" ".join(flag for flag in SPEED_FLAGS if flag in flags) or "baseline ISA")
    parts.append(f"torch {ours['cpu_capability']}" if ours.get("cpu_capability") else "torch ISA unknown")
    if "count" in cpu:
        parts.append(f"{cpu['count']} cpus")
    if threads is not None:
        parts.append(f"{threads} threads")
    name = cpu.get("brand_raw") or ours.get("cpu_name") or "unknown CPU"
    return f"{name} ({'; '.join(parts)})"


def identity(machine_info: dict, extra_info: dict, with_driver: bool = True) -> str:
    """Which device produced a stored benchmark, in the terms that decide its speed: the CPU with the threads
    it used, or the GPU with its memory, compute capability and driver (``with_driver=False`` leaves the driver
    out: the same hardware before and after a driver upgrade, ``driver`` says which)."""
    device = extra_info["device"]
    if device == "cpu":
        threads = extra_info.get("threads") or (machine_info.get("mnistbench") or {}).get("cpu_threads") or "?"
        return host(machine_info, threads)
    properties = _gpu_properties(machine_info, device)
    if properties is None:
        return f"{extra_info['device_name']} ({'memory and driver' if with_driver else 'memory'} unknown)"
    driver = f"; driver {properties.get('driver') or 'unknown'}" if with_driver else ""
    return f"{properties['name']} ({properties['memory_gib']} GiB; sm {properties['compute_capability']}{driver})"


def driver(machine_info: dict, extra_info: dict) -> str | None:
    """The driver of the GPU that produced a stored benchmark; None for a CPU, or where it was not stored."""
    if extra_info["device"] == "cpu":
        return None
    properties = _gpu_properties(machine_info, extra_info["device"])
    return properties.get("driver") if properties is not None else None


def _gpu_properties(machine_info: dict, device: str) -> dict | None:
    """The stored properties of ``device`` (``cuda:N``); None for another kind, and for files written before
    GPU properties were stored, which hold names only."""
    gpus = (machine_info.get("mnistbench") or {}).get("gpus") or []
    kind, _, number = device.partition(":")
    index = int(number) if number.isdigit() else 0
    properties = gpus[index] if kind == "cuda" and index < len(gpus) else None
    if not isinstance(properties, dict) or not {"name", "memory_gib", "compute_capability"} <= properties.keys():
        return None
    return properties


@functools.cache
def _this_machine_info() -> dict:
    """This machine's info in the stored layout: py-cpuinfo's CPU description (as pytest-benchmark stores it)
    and ours."""
    return {"cpu": cpuinfo.get_cpu_info(), "mnistbench": info()}


def identity_here(device: str) -> str:
    """``identity`` of ``device`` on this machine now, with this run's threads (e.g. to key a cached
    measurement to the hardware that made it)."""
    return identity(_this_machine_info(), {"device": device, "device_name": devices.name(device),
                                           "threads": torch.get_num_threads()})
