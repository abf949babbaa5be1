"""What a result must carry to be compared across machines and upgrades: software versions and hardware names."""
import torch
import torchvision

from . import devices


def info() -> dict:
    """Versions of torch, torchvision, CUDA and cuDNN, and the CPU and GPU model names."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "cpu_name": devices.cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "gpus": [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())],
    }


def identity(device: str) -> str:
    """What decides ``device``'s speed, in one line: the GPU's name, or the CPU's name, ISA level and threads."""
    if torch.device(device).type == "cpu":
        return f"{devices.cpu_name()} {torch.backends.cpu.get_cpu_capability()} x{torch.get_num_threads()}"
    return devices.name(device)
