"""Which devices exist, how to name and synchronise them, and how many CPU threads to use."""
import os
import platform
import resource

import torch

DEVICE_KINDS = ("cpu", "cuda", "cuda:N", "mps")


def available() -> list[str]:
    """Every device this machine has: the CPU, each CUDA GPU, and Apple's MPS when present."""
    found = ["cpu"] + [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def parse(spec: str) -> list[str]:
    """``all`` or a comma list such as ``cpu,cuda:0``, checked against this machine.

    An unknown name, or a known device this machine lacks, is a ``ValueError``: asking for a GPU
    and silently benchmarking nothing would report a clean run that measured nothing.
    """
    present = available()
    if spec.strip() == "all":
        return present
    chosen = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        try:
            device = torch.device(item)
        except RuntimeError:
            raise ValueError(f"unknown device {item!r}; use 'all' or a comma list of {', '.join(DEVICE_KINDS)}") from None
        if device.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"unsupported device {item!r}; use 'all' or a comma list of {', '.join(DEVICE_KINDS)}")
        name = f"cuda:{device.index or 0}" if device.type == "cuda" else device.type
        if name not in present:
            raise ValueError(f"device {item!r} was requested but this machine has only: {', '.join(present)}")
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ValueError("--devices is empty; use 'all' or a comma list such as 'cpu,cuda:0'")
    return chosen


def synchronize(device: str) -> None:
    """Wait for all queued work on ``device``; a GPU timed without this measures only the launch."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def name(device: str) -> str:
    """The hardware's own name: the CPU model, or the GPU's product name."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.get_device_name(device)
    if kind == "mps":
        return "Apple MPS"
    return cpu_name()


def reset_peak_memory(device: str) -> None:
    """Start a new peak: the CUDA allocator's, or on Linux the process's resident high-water mark
    (writing 5 to ``/proc/self/clear_refs`` resets ``VmHWM``)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
        except OSError:
            pass  # peak_memory then says it read the lifetime maximum


def _resident_high_water_mib() -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_memory(device: str) -> tuple[float, str]:
    """Peak memory in MiB since ``reset_peak_memory``, and what was read. Call the reset at the start of a
    case, before its warm-up, so that compilation and CUDA-graph capture count for every variant alike
    (graph replays allocate nothing, so a peak taken over the timed rounds alone flatters them). On a GPU
    it is the CUDA allocator's peak; on a CPU the process's resident peak (dataset and libraries included,
    the same for every case), or, where it cannot be reset, the lifetime maximum, which only grows."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_memory_allocated_since_case_start"
    high_water = _resident_high_water_mib()
    if high_water is not None and os.access("/proc/self/clear_refs", os.W_OK):  # as reset_peak_memory needs
        return high_water, "process_peak_rss_since_case_start"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_lifetime_max_rss"


def share_cpu_threads() -> int:
    """Under pytest-xdist give each worker an equal share of the cores, so workers never oversubscribe."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // workers))
    return torch.get_num_threads()
