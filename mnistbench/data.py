"""The datasets: real MNIST or Fashion-MNIST through torchvision, or explicitly labelled synthetic digits.

The data root comes from ``--mnist-root``, else ``$MNISTBENCH_DATA``, else ``./data``. Extracted files
are used as they are; ``.gz`` archives alone are extracted beside them (whatever their compression
header, which torchvision's MD5 check of the archive would refuse); otherwise torchvision downloads.
When all three fail we stop with one message; we never substitute other data.
"""
import copy
import gzip
import os
import shutil
from pathlib import Path

import torch
from torchvision import datasets, transforms

ROOT_ENV = "MNISTBENCH_DATA"
DEFAULT_ROOT = "./data"
DATASETS = ("mnist", "fashion-mnist", "synthetic")
_TORCHVISION_CLASSES = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}


class DataError(RuntimeError):
    """The requested dataset could not be found, extracted, downloaded or read."""


def resolve_root(option: str | None = None) -> Path:
    """The data root: the command-line option, else ``$MNISTBENCH_DATA``, else ``./data``."""
    return Path(option or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def article_transform(mean: float = 0.5, std: float = 0.5) -> transforms.Compose:
    """The articles' per-sample preprocessing: ``ToTensor`` then ``Normalize((mean,), (std,))``."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])


class SyntheticMNIST(datasets.MNIST):
    """Uniform random 28x28 uint8 images with random labels, in MNIST's exact format.

    It inherits MNIST's ``__getitem__`` so both pipelines pay the same per-sample costs as on real
    data. Only for pure-throughput runs: nothing trained on it means anything.
    """

    def __init__(self, train: bool = True, transform=None, seed: int = 0):
        # Deliberately skips MNIST.__init__, which would look for files on disk.
        datasets.VisionDataset.__init__(self, root="", transform=transform)
        self.train = train
        generator = torch.Generator().manual_seed(seed + (0 if train else 1))
        size = 60_000 if train else 10_000
        self.data = torch.randint(0, 256, (size, 28, 28), dtype=torch.uint8, generator=generator)
        self.targets = torch.randint(0, 10, (size,), generator=generator)


def load(name: str, root: str | os.PathLike | None = None, *, train: bool = True, transform=None):
    """The train or test split of ``name`` (one of ``DATASETS``) as a torchvision dataset."""
    if name == "synthetic":
        return SyntheticMNIST(train=train, transform=transform)
    if name not in _TORCHVISION_CLASSES:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    root = resolve_root(root)
    dataset_class = _TORCHVISION_CLASSES[name]
    raw_folder = root / dataset_class.__name__ / "raw"
    try:
        _extract_archives(raw_folder, dataset_class)
        return dataset_class(str(root), train=train, transform=transform, download=True)
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError, ValueError...
        raise DataError(
            f"{name} not usable under {raw_folder.resolve()}: {_first_line(error)}\n"
            f"Put the four {dataset_class.__name__} files (train/t10k images/labels, '*-ubyte' or '*-ubyte.gz') "
            f"in that folder, or point --mnist-root or ${ROOT_ENV} at a root that holds "
            f"'{dataset_class.__name__}/raw/', or run once with internet access so torchvision can download them."
        ) from error


def _extract_archives(raw_folder: Path, dataset_class) -> None:
    """Decompress each ``*-ubyte.gz`` whose ``*-ubyte`` is missing, through a temporary file so an
    interrupted or corrupt extraction never leaves a half-written file behind."""
    for archive_name, _md5 in dataset_class.resources:
        archive = raw_folder / archive_name
        extracted = archive.with_suffix("")
        if extracted.exists() or not archive.exists():
            continue
        partial = extracted.with_suffix(".partial")
        try:
            with gzip.open(archive) as source, open(partial, "wb") as target:
                shutil.copyfileobj(source, target)
            os.replace(partial, extracted)
        finally:
            partial.unlink(missing_ok=True)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def first(dataset, count: int):
    """The first ``count`` items of an MNIST-style dataset, as a dataset of the same class."""
    subset = copy.copy(dataset)
    subset.data, subset.targets = dataset.data[:count], dataset.targets[:count]
    return subset
