"""NVIDIA's management library (NVML, through the nvidia-ml-py package) for what torch does not tell about a
GPU: its energy counter, clocks and throttle reasons. Where there is no NVIDIA driver (this project's CPU
machines) or no package, every reader says why it has nothing (``Unavailable``) instead of failing."""
import functools

import torch


class Unavailable(RuntimeError):
    """NVML cannot answer here; the message says why."""


@functools.cache
def _library():
    """pynvml, initialised once per process (a failure is not cached: its reason is raised each time)."""
    try:
        import pynvml  # noqa: PLC0415 (an optional dependency, imported where it is needed)
    except ImportError:
        raise Unavailable("the nvidia-ml-py package (pynvml) is not installed") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        raise Unavailable(f"NVML could not start: {error}") from None
    return pynvml


def handle(device: str):
    """``(pynvml, handle)`` of the CUDA device torch calls ``device``, found by its PCI address, so that the
    numbering CUDA_VISIBLE_DEVICES changes for torch and not for NVML cannot pick the wrong GPU."""
    if torch.device(device).type != "cuda":
        raise Unavailable(f"{device} is not an NVIDIA GPU")
    nvml = _library()
    properties = torch.cuda.get_device_properties(device)
    address = f"{properties.pci_domain_id:08x}:{properties.pci_bus_id:02x}:{properties.pci_device_id:02x}.0"
    try:
        return nvml, nvml.nvmlDeviceGetHandleByPciBusId(address)
    except nvml.NVMLError as error:
        raise Unavailable(f"NVML does not know the GPU at {address}: {error}") from None
