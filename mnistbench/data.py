"""The datasets: real MNIST or Fashion-MNIST through torchvision, or explicitly labelled synthetic digits.

The data root comes from ``--mnist-root``, else ``$MNISTBENCH_DATA``, else ``./data``. Before torchvision
reads anything, ``prepare`` makes sure the four idx files are there and sound: extracted from their
``.gz`` archives when only those are present (whatever their compression header, which torchvision's
MD5 check of the archive would refuse), otherwise downloaded by torchvision, then checked against their
headers. Any fault stops the caller with one ``DataError`` naming the dataset, the file, the fault and
the fix; a failed attempt leaves the data root as it found it. We never substitute other data.
"""
import copy
import gzip
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import torch
from torchvision import datasets, transforms

from . import atomic, idx

ROOT_ENV = "MNISTBENCH_DATA"
DEFAULT_ROOT = "./data"
DATASETS = ("mnist", "fashion-mnist", "synthetic")
_TORCHVISION_CLASSES = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}
SPLITS = ("train", "t10k")
TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000  # the images of each split, MNIST's and Fashion-MNIST's alike
IMAGE_SHAPE = (1, 28, 28)  # channels, height, width of one image, as the models take it


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
        size = TRAIN_IMAGES if train else TEST_IMAGES
        self.data = torch.randint(0, 256, (size, 28, 28), dtype=torch.uint8, generator=generator)
        self.targets = torch.randint(0, 10, (size,), generator=generator)


def load(name: str, root: str | os.PathLike | None = None, *, train: bool = True, transform=None):
    """The train or test split of ``name`` (one of ``DATASETS``) as a torchvision dataset."""
    if name == "synthetic":
        return SyntheticMNIST(train=train, transform=transform)
    root = resolve_root(root)
    prepare(name, root)
    return _TORCHVISION_CLASSES[name](str(root), train=train, transform=transform)


def prepare(name: str, root: str | os.PathLike | None = None) -> Path:
    """The raw folder of ``name`` under ``root``, holding its four idx files, present and sound.

    Missing files are extracted from their ``.gz`` beside them, else downloaded by torchvision; each
    is checked before it is put in place, so a failure leaves the root untouched. ``DataError`` otherwise.
    """
    if name not in _TORCHVISION_CLASSES:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    root = resolve_root(root)
    dataset_class = _TORCHVISION_CLASSES[name]
    raw = root.absolute() / dataset_class.__name__ / "raw"
    if root.exists() and not root.is_dir():
        raise DataError(f"{name} data not usable: the data root {root.absolute()} is a file, not a folder\n"
                        f"Fix: {_where_to_put(dataset_class)}")
    files = [archive.removesuffix(".gz") for archive, _md5 in dataset_class.resources]
    for file in files:
        if not (raw / file).exists() and (raw / f"{file}.gz").exists():
            _extract(name, raw / f"{file}.gz", raw / file)
    missing = [file for file in files if not (raw / file).exists()]
    if missing:
        _download(name, dataset_class, raw, missing)
    counts = {}
    for file in files:
        try:
            counts[file] = idx.check(raw / file, idx.kind_of(file))
        except (idx.IdxError, OSError) as error:
            archive = raw / f"{file}.gz"
            fix = (f"delete it; the next run extracts it again from {archive.name} beside it" if archive.exists()
                   else "replace it with a sound copy")
            raise DataError(f"{name} data not usable: {raw / file}: {_reason(error)}\nFix: {fix}") from None
    for split in SPLITS:
        images, labels = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
        if counts[images] != counts[labels]:
            raise DataError(f"{name} data not usable: {raw / images} holds {counts[images]:,} images but "
                            f"{labels} beside it holds {counts[labels]:,} labels\n"
                            f"Fix: replace both with the files of one {dataset_class.__name__} release")
    return raw


def _extract(name: str, archive: Path, target: Path) -> None:
    """Decompress ``archive`` to ``target`` through a temporary file of its own, checked before it is
    renamed into place: an interrupted, concurrent or corrupt extraction never leaves a bad file."""
    fix = f"replace {archive.name} with a sound copy (or put the extracted {target.name} beside it)"
    try:
        with atomic.replacing(target) as partial:
            with gzip.open(archive) as source, open(partial, "wb") as output:
                shutil.copyfileobj(source, output)
            idx.check(partial, idx.kind_of(target.name))
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        with open(archive, "rb") as file:
            start = file.read(2)
        problem = (f"not a gzip archive (it starts with {start!r})" if start != idx.GZIP_MAGIC else
                   f"truncated gzip archive ({_reason(error)})" if isinstance(error, EOFError) else
                   f"corrupt gzip archive ({_reason(error)})")
        raise DataError(f"{name} data not usable: {archive}: {problem}\nFix: {fix}") from None
    except idx.IdxError as error:
        raise DataError(f"{name} data not usable: {archive}: decompresses to a bad idx file: {error}\n"
                        f"Fix: {fix}") from None
    except OSError as error:
        raise DataError(f"{name} data not usable: cannot extract {archive} into its folder: {_reason(error)}\n"
                        f"Fix: extract it there yourself, or make {target.parent} writable") from None


def _download(name: str, dataset_class, raw: Path, missing: list[str]) -> None:
    """Have torchvision download the dataset into a scratch folder, then move the ``missing`` files into
    ``raw`` once checked; nothing is written under the data root unless the download succeeded."""
    with tempfile.TemporaryDirectory(prefix="mnistbench-download-") as scratch:
        try:
            dataset_class(scratch, train=False, download=True)
        except Exception as error:  # torchvision raises RuntimeError, URLError, OSError, ValueError...
            where = f"{raw} lacks {', '.join(missing)}" if raw.is_dir() else f"no folder {raw}"
            raise DataError(f"{name} data not found: {where}\n"
                            f"torchvision could not download it either: {_reason(error)}\n"
                            f"Fix: {_where_to_put(dataset_class)}") from None
        downloaded = Path(scratch) / dataset_class.__name__ / "raw"
        try:
            raw.mkdir(parents=True, exist_ok=True)
            for file in missing:
                idx.check(downloaded / file, idx.kind_of(file))
                with atomic.replacing(raw / file) as partial:
                    shutil.copyfile(downloaded / file, partial)
        except (idx.IdxError, OSError) as error:
            raise DataError(f"{name} data not usable: the downloaded files could not be put in {raw}: "
                            f"{_reason(error)}\nFix: {_where_to_put(dataset_class)}") from None


def _where_to_put(dataset_class) -> str:
    folder = dataset_class.__name__
    return (f"put the four {folder} files (train/t10k images/labels, '*-ubyte' or '*-ubyte.gz') in that folder, "
            f"or point --mnist-root or ${ROOT_ENV} at a root that holds '{folder}/raw/'")


def _reason(error: BaseException) -> str:
    """An exception in one line: its first line, and its last when torchvision lists one per mirror."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    return lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')} ... {lines[-1]}"


def first(dataset, count: int):
    """The first ``count`` items of an MNIST-style dataset, as a dataset of the same class."""
    subset = copy.copy(dataset)
    subset.data, subset.targets = dataset.data[:count], dataset.targets[:count]
    return subset
