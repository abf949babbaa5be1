"""Correctness of the data: real digits, found or refused clearly, fed identically by both pipelines."""
import shutil

import pytest
import torch
from torchvision import datasets

from mnistbench import data, pipelines

MNIST_TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_sizes_and_label_counts(mnist_train, mnist_test):
    assert mnist_train.data.shape == (60_000, 28, 28) and mnist_train.data.dtype == torch.uint8
    assert mnist_test.data.shape == (10_000, 28, 28)
    assert torch.bincount(mnist_train.targets).tolist() == MNIST_TRAIN_LABEL_COUNTS
    assert torch.bincount(mnist_test.targets).tolist() == MNIST_TEST_LABEL_COUNTS


def test_fashion_mnist_is_balanced(mnist_root):
    train = data.load("fashion-mnist", mnist_root, train=True)
    test = data.load("fashion-mnist", mnist_root, train=False)
    assert torch.bincount(train.targets).tolist() == [6000] * 10
    assert torch.bincount(test.targets).tolist() == [1000] * 10


def test_synthetic_data_has_mnist_format():
    train = data.load("synthetic", train=True)
    assert isinstance(train, data.SyntheticMNIST)
    assert train.data.shape == (60_000, 28, 28) and train.data.dtype == torch.uint8
    assert len(data.load("synthetic", train=False)) == 10_000
    assert torch.equal(train.targets, data.load("synthetic").targets), "synthetic data must be reproducible"


def test_root_comes_from_option_then_environment_then_default(monkeypatch):
    monkeypatch.setenv(data.ROOT_ENV, "/from/env")
    assert str(data.resolve_root("/from/option")) == "/from/option"
    assert str(data.resolve_root(None)) == "/from/env"
    monkeypatch.delenv(data.ROOT_ENV)
    assert str(data.resolve_root(None)) == "data"


def test_archives_alone_are_extracted(mnist_root, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for archive in (mnist_root / "MNIST" / "raw").glob("*.gz"):
        shutil.copy(archive, raw)
    test_split = data.load("mnist", tmp_path, train=False)
    assert torch.bincount(test_split.targets).tolist() == MNIST_TEST_LABEL_COUNTS
    assert (raw / "t10k-images-idx3-ubyte").is_file()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """torchvision's mirrors replaced by an empty local folder: a download fails at once, as offline."""
    monkeypatch.setattr(datasets.MNIST, "mirrors", [(tmp_path / "no-mirror").as_uri() + "/"])


def test_missing_data_stops_with_one_clear_message(tmp_path, offline):
    with pytest.raises(data.DataError) as error:
        data.load("mnist", tmp_path / "empty")
    message = str(error.value)
    assert str((tmp_path / "empty" / "MNIST" / "raw").resolve()) in message
    assert "--mnist-root" in message and data.ROOT_ENV in message


def test_corrupt_files_stop_with_one_clear_message(tmp_path, offline):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"not an idx file")
    with pytest.raises(data.DataError, match="not usable under"):
        data.load("mnist", tmp_path)


def test_corrupt_archive_stops_clearly_and_leaves_nothing_half_written(tmp_path, offline):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, _md5 in datasets.MNIST.resources:
        (raw / name).write_bytes(b"\x1f\x8b truncated")
    with pytest.raises(data.DataError, match="not usable under"):
        data.load("mnist", tmp_path)
    assert sorted(p.name for p in raw.iterdir()) == sorted(name for name, _ in datasets.MNIST.resources)


def test_unknown_dataset_is_refused():
    with pytest.raises(data.DataError, match="choose from mnist, fashion-mnist, synthetic"):
        data.load("cifar10")


def test_resident_images_equal_the_articles_per_sample_transform(mnist_train):
    transform = data.article_transform()
    per_sample = torch.stack([transform(mnist_train[i][0]) for i in range(64)])
    assert torch.equal(pipelines.normalized_images(mnist_train.data[:64]), per_sample)


def test_both_pipelines_yield_the_same_samples_for_the_same_order(mnist_train):
    order = torch.randperm(len(mnist_train), generator=torch.Generator().manual_seed(3))[:300]
    reference = pipelines.build("reference", mnist_train, 128, "cpu")
    resident = pipelines.build("resident", mnist_train, 128, "cpu")
    pairs = list(zip(reference.batches(order), resident.batches(order), strict=True))
    assert [len(labels) for _, (_, labels) in pairs] == [128, 128, 44]
    for (ref_images, ref_labels), (res_images, res_labels) in pairs:
        assert torch.equal(ref_images, res_images)
        assert torch.equal(ref_labels, res_labels)
    assert torch.equal(torch.cat([labels for _, (_, labels) in pairs]), mnist_train.targets[order])


@pytest.mark.parametrize("name", list(pipelines.PIPELINES))
def test_an_epoch_covers_the_first_samples_of_a_fresh_order(name, mnist_train):
    pipeline = pipelines.build(name, mnist_train, 64, "cpu", samples=200, seed=1)
    first = torch.cat([labels for _, labels in pipeline])
    second = torch.cat([labels for _, labels in pipeline])
    assert len(pipeline) == 4 and len(first) == len(second) == 200
    assert not torch.equal(first, second), "each epoch must draw a new order"
