"""Correctness of the data: real digits, found, extracted or downloaded, fed identically by both pipelines.

Data that cannot be used (missing offline, truncated, corrupt...) is swept in test_bad_input.py.
"""
import functools
import hashlib
import http.server
import shutil
import threading

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
def local_mirror(monkeypatch, mnist_root):
    """torchvision's MNIST mirrors replaced by a local HTTP server of our archives (told their MD5s, as
    they were recompressed): a download that works offline. The bad-input sweep covers failed ones."""
    raw = mnist_root / "MNIST" / "raw"

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(raw)))
    server.handle_error = lambda request, address: None  # torchvision drops its first connection early
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(datasets.MNIST, "mirrors", [f"http://127.0.0.1:{server.server_port}/"])
    monkeypatch.setattr(datasets.MNIST, "resources", [(name, hashlib.md5((raw / name).read_bytes()).hexdigest())
                                                      for name, _md5 in datasets.MNIST.resources])
    yield
    server.shutdown()
    server.server_close()


def test_missing_files_are_downloaded_into_place_and_the_others_left_alone(tmp_path, local_mirror):
    raw = data.prepare("mnist", tmp_path)
    files = sorted(archive.removesuffix(".gz") for archive, _md5 in datasets.MNIST.resources)
    assert sorted(path.name for path in raw.iterdir()) == files
    (raw / "t10k-labels-idx1-ubyte").unlink()
    kept = {path: path.stat().st_mtime_ns for path in raw.iterdir()}
    test_split = data.load("mnist", tmp_path, train=False)
    assert torch.bincount(test_split.targets).tolist() == MNIST_TEST_LABEL_COUNTS
    assert {path: path.stat().st_mtime_ns for path in raw.iterdir() if path in kept} == kept
    assert len(list(raw.iterdir())) == 4, "only the four files, no archive or scratch file"


def test_unknown_dataset_is_refused():
    with pytest.raises(data.DataError, match="choose from mnist, fashion-mnist, synthetic"):
        data.load("cifar10")


def test_resident_images_equal_the_articles_per_sample_transform(mnist_train):
    transform = data.article_transform()
    per_sample = torch.stack([transform(mnist_train[i][0]) for i in range(64)])
    assert torch.equal(pipelines.normalized_images(mnist_train.data[:64]), per_sample)
    pixels = mnist_train.data[:64].float()  # normalised in place, but never in the caller's tensor
    pipelines.normalized_images(pixels)
    assert torch.equal(pixels, mnist_train.data[:64].float())


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
