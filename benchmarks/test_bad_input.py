"""Bad input, tried as a new user would: each command, each kind of bad input, one clear message.

For every case the exit status and the first line of the message are asserted: non-zero where the input
is unusable, the cause named in the first line, at most 15 lines for a data problem, never a Python
traceback, and nothing in the data root or the results folder changed by a failed attempt. The
``mnistbench`` commands run in-process through ``cli.main``, which is all ``python -m mnistbench`` runs
(an exception escaping it fails the test, as a traceback would); pytest itself runs in a subprocess,
where its own exit path is what is tested.
"""
import gzip
import io
import json
import os
import re
import subprocess
import sys
import types
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pytest_benchmark.logger import Logger
from pytest_benchmark.storage.file import FileStorage
from pytest_benchmark.utils import parse_compare_fail
from torchvision import datasets

import conftest
import models
from conftest import command_env, mnist_root_with
from mnistbench import checkpoints, cli, data, distributed, gate, launcher, storage
from mnistbench.reports import ratio
from test_suite import OptionsOnly

REPO = Path(__file__).resolve().parents[1]
FILES = [archive.removesuffix(".gz") for archive, _md5 in datasets.MNIST.resources]
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = FILES
MAX_DATA_ERROR_LINES = 15
# A pytest plugin for the subprocesses: torchvision's mirrors replaced by a folder that does not
# exist, so that a download fails at once, as offline, whatever the network.
OFFLINE_PLUGIN = 'from torchvision import datasets\ndatasets.MNIST.mirrors = ["file:///nonexistent-mirror/"]\n'


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(datasets.MNIST, "mirrors", ["file:///nonexistent-mirror/"])


def snapshot(folder: Path):
    """Every path under ``folder``, with each file's size and modification time; None if there is no folder."""
    if not folder.exists():
        return None
    return {path: None if path.is_dir() else (path.stat().st_size, path.stat().st_mtime_ns)
            for path in folder.rglob("*")}


def head(path: Path, size: int) -> bytes:
    with open(path, "rb") as file:
        return file.read(size)


# name -> (changes to a sound MNIST folder, the fault the message names after the file's path). A change
# maps a file name to bytes written there (from the sound folder ``good``), None to leave it out, or
# "folder" to put a folder in its place.
DATA_FAULTS = {
    "truncated images": ({TRAIN_IMAGES: lambda good: head(good / TRAIN_IMAGES, 999_984)},
                         f"{TRAIN_IMAGES}: truncated at 999,984 of 47,040,016 bytes "
                         f"(its header announces 60,000 images)"),
    "empty labels": ({TEST_LABELS: lambda good: b""}, f"{TEST_LABELS}: empty (0 bytes)"),
    "too long": ({TEST_LABELS: lambda good: (good / TEST_LABELS).read_bytes() + b"\0\0"},
                 f"{TEST_LABELS}: 2 bytes longer than its header's 10,000 labels (10,008 bytes)"),
    "images under a labels name": ({TEST_LABELS: lambda good: head(good / TEST_IMAGES, 10_008)},
                                   f"{TEST_LABELS}: bad magic number 0x00000803 (an idx images file); "
                                   f"idx labels start with 0x00000801"),
    "not idx": ({TEST_IMAGES: lambda good: b"<html>404 Not Found</html>" * 4},
                f"{TEST_IMAGES}: bad magic number 0x3c68746d (not idx); idx images start with 0x00000803"),
    "archive under the extracted name": ({TEST_IMAGES: lambda good: gzip.compress(head(good / TEST_IMAGES, 4000))},
                                         f"{TEST_IMAGES}: gzip-compressed, though this name is the extracted file's"),
    "count mismatch": ({TRAIN_LABELS: lambda good: bytes.fromhex("00000801") + (59_999).to_bytes(4, "big")
                        + bytes(59_999)},
                       f"{TRAIN_IMAGES} holds 60,000 images but {TRAIN_LABELS} beside it holds 59,999 labels"),
    "letters' labels": ({TEST_LABELS: lambda good: head(good / TEST_LABELS, 8) + bytes(i % 26 + 1 for i in range(10_000))},
                        f"{TEST_LABELS}: label 26 at item 25: MNIST's labels are 0 to 9 (another dataset's file?)"),
    "a folder for a file": ({TEST_LABELS: "folder"}, f"{TEST_LABELS}: [Errno 21] Is a directory"),
    "not gzip": ({TRAIN_IMAGES: None, f"{TRAIN_IMAGES}.gz": lambda good: b"PK\3\4 a zip file"},
                 f"{TRAIN_IMAGES}.gz: not a gzip archive (it starts with b'PK')"),
    "truncated gzip": ({TRAIN_LABELS: None, f"{TRAIN_LABELS}.gz": lambda good: gzip.compress(
        (good / TRAIN_LABELS).read_bytes())[:5000]}, f"{TRAIN_LABELS}.gz: truncated gzip archive"),
    "gzip of another file": ({TEST_LABELS: None, f"{TEST_LABELS}.gz": lambda good: gzip.compress(b"hello")},
                             f"{TEST_LABELS}.gz: decompresses to a bad idx file: truncated: 5 bytes"),
}


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``mnistbench ARGS`` in this process: exit status, standard output and standard error."""
    try:
        status = cli.main([str(arg) for arg in args])
    except SystemExit as stop:  # argparse's usage errors
        status = stop.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


@pytest.fixture
def weights(tmp_path) -> Path:
    """A sound VGGNet model file, so that ``evaluate`` gets as far as the data."""
    path = tmp_path / "vgg.pth"
    checkpoints.save(models.build("vgg"), path)
    return path


def job(command, root, weights, tmp_path):
    """The arguments of ``train`` or ``evaluate`` on ``root``."""
    extra = ["--weights", weights] if command == "evaluate" else ["--out", tmp_path / "out.pth", "--no-progress"]
    return [command, "--model", "vgg", "--mnist-root", root, *extra]


# --- the data, through mnistbench train and evaluate --------------------------------------------------

@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize("fault", list(DATA_FAULTS))
def test_a_data_fault_stops_the_job_with_one_message_naming_file_and_fault(fault, command, mnist_root, tmp_path,
                                                                           weights, capsys, offline):
    changes, named = DATA_FAULTS[fault]
    root = mnist_root_with(tmp_path, mnist_root / "MNIST" / "raw", changes)
    before = snapshot(root)
    status, out, err = run_cli(capsys, *job(command, root, weights, tmp_path))
    assert status == 2 and out == ""
    raw = (root / "MNIST" / "raw").absolute()
    assert first_line(err).startswith(f"mnistbench: error: mnist data not usable: {raw / named}"), err
    assert err.splitlines()[-1].startswith("Fix: ") and len(err.splitlines()) <= MAX_DATA_ERROR_LINES
    assert snapshot(root) == before, "a failed attempt must leave the data root as it was"


@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize("where, named", [
    ("no root", "mnist data not found: no folder {raw}"),
    ("empty raw folder", "mnist data not found: {raw} lacks " + ", ".join(FILES)),
    ("one file missing", f"mnist data not found: {{raw}} lacks {TEST_LABELS}"),
])
def test_missing_data_offline_says_where_it_looked_and_what_to_do(where, named, command, tmp_path, weights, mnist_root,
                                                                  capsys, offline):
    root = tmp_path / "data"
    if where == "empty raw folder":
        (root / "MNIST" / "raw").mkdir(parents=True)
    elif where == "one file missing":
        root = mnist_root_with(tmp_path, mnist_root / "MNIST" / "raw", {TEST_LABELS: None})
    before = snapshot(root)
    status, out, err = run_cli(capsys, *job(command, root, weights, tmp_path))
    assert status == 2 and out == ""
    lines = err.splitlines()
    assert lines[0] == "mnistbench: error: " + named.format(raw=(root / "MNIST" / "raw").absolute())
    assert lines[1].startswith("torchvision could not download it either: ")
    assert lines[2].startswith("Fix: put the four MNIST files") and "--mnist-root or $MNISTBENCH_DATA" in lines[2]
    assert len(lines) == 3 and snapshot(root) == before


def test_the_root_from_the_environment_is_the_one_named(tmp_path, capsys, offline, monkeypatch):
    monkeypatch.setenv("MNISTBENCH_DATA", str(tmp_path / "from-env"))
    status, _, err = run_cli(capsys, "train", "--model", "vgg", "--out", tmp_path / "m.pth")
    assert status == 2
    raw = tmp_path / "from-env" / "MNIST" / "raw"
    assert first_line(err) == f"mnistbench: error: mnist data not found: no folder {raw}"


def test_a_file_given_as_the_data_root_is_named(tmp_path, capsys):
    (tmp_path / "data.tar").write_bytes(b"an archive, not a folder")
    status, _, err = run_cli(capsys, "train", "--model", "vgg", "--mnist-root", tmp_path / "data.tar",
                             "--out", tmp_path / "m.pth")
    assert status == 2
    assert first_line(err) == (f"mnistbench: error: mnist data not usable: the data root {tmp_path / 'data.tar'} "
                               f"is a file, not a folder")


# --- the other inputs of mnistbench train and evaluate ---------------------------------------------------

@pytest.mark.parametrize("args, status, message", [
    (["--device", "tpu"], 2, "mnistbench: error: --device 'tpu': unknown device 'tpu'"),
    (["--device", f"cuda:{torch.cuda.device_count()}"], 2,
     f"mnistbench: error: --device 'cuda:{torch.cuda.device_count()}': device 'cuda:{torch.cuda.device_count()}' was "
     f"requested but this machine has only: "),
    (["--device", "cpu,cpu"], 2, "mnistbench: error: --device takes one device, not 'cpu,cpu': such as cpu or cuda:0"),
    (["--device", "all"], 2, "mnistbench: error: --device takes one device, not 'all': such as cpu or cuda:0"),
    (["--out", "{tmp}/no-such-folder/m.pth"], 2,
     "mnistbench: error: --out: folder {tmp}/no-such-folder does not exist"),
    (["--out", "{tmp}/a-file/m.pth"], 2, "mnistbench: error: --out: {tmp}/a-file is not a folder"),
    (["--epochs", "0"], 2, "mnistbench train: error: argument --epochs: must be a positive integer, got 0"),
    (["--samples", "-5"], 2, "mnistbench train: error: argument --samples: must be a positive integer, got -5"),
    (["--epochs", "ten"], 2, "mnistbench train: error: argument --epochs: must be a positive integer, got 'ten'"),
    (["--recipe", "slow"], 2, "mnistbench train: error: argument --recipe: invalid choice: 'slow'"),
    (["--out", "{tmp}"], 2, "mnistbench: error: --out: {tmp} is a folder: name the model file, e.g. {tmp}/mnist_vgg.pth"),
    (["--out", "{tmp}/a-file"], 2,
     "mnistbench: error: --out: {tmp}/a-file exists: name another file, or add --overwrite to replace it"),
    (["--seed", str(10**24)], 2,
     f"mnistbench train: error: argument --seed: must be an integer from 0 to 2**64 - 1, got {10**24}"),
    (["--seed", "-1"], 2, "mnistbench train: error: argument --seed: must be an integer from 0 to 2**64 - 1, got -1"),
    (["--seed", "one"], 2, "mnistbench train: error: argument --seed: must be an integer from 0 to 2**64 - 1, got 'one'"),
    (["--fast-variant", ""], 2, "mnistbench: error: unknown variant '': write PRECISION-FORMAT-COMPILE-OPTIMIZER"),
    (["--recipe", "fast", "--fast-variant", "fp32-contiguous-eager-default", "--samples", "64"], 2,
     "mnistbench: error: the fast recipe's one-cycle schedule over 1 step trains at its final rate, near zero, and "
     "learns nothing: give it 2 steps at least (--samples over 64, or --epochs 2)"),
    (["--device", " "], 2, "mnistbench: error: --device is empty: name one device, such as cpu or cuda:0"),
    (["--fast-variant", "bf16-channels_last-eager-fused"], 2,
     "mnistbench: error: --fast-variant pins the fast setup's variant, and the reference setup runs its own: add "
     "--pipeline fast, or leave --fast-variant out"),
    (["--recipe", "fast", "--pipeline", "resident", "--fast-variant", "bf16-channels_last-eager-fused"], 2,
     "mnistbench: error: --fast-variant pins the fast setup's variant, and the resident setup runs its own"),
    (["--recipe", "fast", "--fast-variant", "fp32-contiguous-eager-default-matmul"], 2,
     "mnistbench: error: --fast-variant fp32-contiguous-eager-default-matmul: vgg has no convolution on maps of at "
     "most 4 pixels: fp32-contiguous-eager-default-matmul "
     "would run fp32-contiguous-eager-default's kernels"),
])
def test_bad_train_arguments_are_refused_before_training(args, status, message, tmp_path, mnist_root, capsys):
    (tmp_path / "a-file").write_text("")
    args = [arg.format(tmp=tmp_path) for arg in args]
    code, out, err = run_cli(capsys, "train", "--model", "vgg", "--mnist-root", mnist_root, *args)
    assert code == status and out == ""
    assert first_line(err).startswith(message.format(tmp=tmp_path)), err


def test_a_model_file_already_there_is_kept_unless_overwrite_is_given(tmp_path, monkeypatch, capsys):
    """The articles' scripts replace mnist_vgg.pth on every run; a model trained for hours is not replaced by
    the next command unless asked, and the refusal comes before any training."""
    monkeypatch.chdir(tmp_path)
    earlier = tmp_path / "mnist_vgg.pth"
    earlier.write_bytes(b"hours of training")
    code, out, err = run_cli(capsys, "train", "--model", "vgg", "--dataset", "synthetic")
    assert (code, out) == (2, "") and err == ("mnistbench: error: --out: mnist_vgg.pth exists: name another file, or "
                                              "add --overwrite to replace it\n")
    assert earlier.read_bytes() == b"hours of training"
    cli._new_model_file(earlier, overwrite=True, model_name="vgg")  # accepted: replaced after the first epoch
    # under torchrun only rank 0 writes: another rank, maybe on a machine with a file of that name, checks nothing
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("TORCHELASTIC_RUN_ID", "run")):
        monkeypatch.setenv(name, value)
    cli._new_model_file(earlier, overwrite=False, model_name="vgg")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="exists: name another file"):
        cli._new_model_file(earlier, overwrite=False, model_name="vgg")


def test_an_unknown_model_is_refused_naming_the_choices(capsys):
    code, _, err = run_cli(capsys, "evaluate", "--model", "resnet", "--weights", "x.pth")
    assert code == 2
    assert first_line(err).startswith("mnistbench evaluate: error: argument --model: invalid choice: 'resnet'")


def pickled_model(path):
    torch.save(models.build("vgg"), path)  # the whole module, which weights_only loading refuses


@pytest.mark.parametrize("make, fault", [
    (None, "no such file"),
    (lambda path: path.mkdir(), "a folder, not a model file"),
    (lambda path: path.write_bytes(b""), "not a PyTorch state_dict file (EOFError while reading it)"),
    (lambda path: path.write_text("hello"), "not a PyTorch state_dict file (KeyError while reading it)"),
    ("truncated", "not a PyTorch state_dict file ("),
    (lambda path: torch.save(torch.zeros(3), path), "holds a Tensor, not a state_dict"),
    (pickled_model, "holds pickled objects beyond tensors (a whole model saved with torch.save(model)?), which are "
                    "not loaded: save model.state_dict() instead"),
    (lambda path: torch.save({"model": models.build("vgg").state_dict(), "epoch": 3}, path),
     "a checkpoint holding the vgg weights under 'model' beside 1 other entries, not a state_dict: save that entry "
     "alone"),
])
def test_a_bad_model_file_is_refused_in_one_line(make, fault, tmp_path, weights, mnist_root, capsys):
    path = tmp_path / "model.pth"
    if make == "truncated":
        path.write_bytes(weights.read_bytes()[:5000])
    elif make is not None:
        make(path)
    code, out, err = run_cli(capsys, "evaluate", "--model", "vgg", "--weights", path, "--mnist-root", mnist_root)
    assert code == 2 and out == ""
    assert err.startswith(f"mnistbench: error: {path}: {fault}") and err.count("\n") == 1, err


def test_weights_saved_from_a_data_parallel_model_load(tmp_path):
    """DistributedDataParallel and DataParallel keep the network as ``module``: its keys start with ``module.``."""
    torch.manual_seed(0)
    model = models.build("vgg")
    torch.save({f"module.{name}": tensor for name, tensor in model.state_dict().items()}, tmp_path / "ddp.pth")
    loaded = checkpoints.load("vgg", tmp_path / "ddp.pth")
    assert all(torch.equal(loaded.state_dict()[name], tensor) for name, tensor in model.state_dict().items())


# --- stored results, through mnistbench ratio and history ------------------------------------------------

def bench(device="cpu", median=1.0, **changes):
    info = {"kind": "epoch", "model": "vgg", "device": device, "device_name": f"{device} model", "batch_size": 128,
            "samples": 60_000, "dataset": "mnist", "pipeline": "resident", "precision": "fp32",
            "memory_format": "contiguous", "compile": "eager"}
    name = f"test_epoch[vgg-{device}-resident]"
    entry = {"name": name, "fullname": f"benchmarks/test_epoch.py::{name}",
             "params": {"model_name": "vgg", "device": device, "pipeline_name": "resident"}, "extra_info": info,
             "stats": {"median": median, "iqr": 0.01, "rounds": 3}}
    for key, value in changes.items():  # "extra_info.device" or "stats.median" edit one nested field
        if "." in key:
            outer, inner = key.split(".")
            entry[outer][inner] = value
        else:
            entry[key] = value
    return entry


def run_file(benchmarks, when="2026-11-01T10:00:00+00:00", version="5.3.1") -> dict:
    return {"machine_info": {"mnistbench": {"torch": "2.14.1", "torchvision": "0.29.1"}}, "commit_info": {},
            "benchmarks": benchmarks, "datetime": when, "version": version}


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_results_of_pytest_benchmark_3_without_a_time_zone_are_read_as_utc(tmp_path, capsys):
    # 3.x wrote UTC without an offset; 10:00 UTC comes after 10:30+01:00 (09:30 UTC).
    write(tmp_path / "0001_new.json",
          run_file([bench(median=2.0), bench("cuda:0", median=1.0)], "2026-11-01T10:30:00+01:00"))
    write(tmp_path / "0002_old.json",
          run_file([bench(median=3.0), bench("cuda:0", median=1.0)], "2026-11-01T10:00:00", "3.4.1"))
    for command in ("ratio", "history"):
        status, out, err = run_cli(capsys, command, tmp_path, "--format", "json")
        assert status == 0 and "warning" not in err, err
        rows = json.loads(out)
        if command == "ratio":
            assert [row["speedup"] for row in rows] == [3.0], "the naive run is the newer one"
        else:
            assert [row["median_s"] for row in rows if "(cpu)" in row["benchmark"]] == [2.0, 3.0]


GOOD = run_file([bench(median=2.0), bench("cuda:0", median=0.5)])
BENCH = "benchmarks/test_epoch.py::test_epoch[vgg-cpu-resident]"
# name -> (content of one more file beside a sound run, the warning after "mnistbench: warning: PATH: ")
RESULT_FAULTS = {
    "truncated json": (json.dumps(GOOD)[:300], "skipped, not readable JSON ("),
    "empty file": ("", "skipped, not readable JSON (Expecting value: line 1 column 1 (char 0))"),
    "binary": (b"\x89PNG\r\n\x1a\n\xff\xfe", "skipped, not readable JSON ('utf-8' codec can't decode"),
    "a json list": ([1, 2, 3], "skipped, not a pytest-benchmark result file"),
    "another tool's json": ({"name": "eslint report", "results": []}, "skipped, not a pytest-benchmark result file"),
    "no datetime": ({"benchmarks": []}, "skipped, not a pytest-benchmark result file"),
    "bad datetime": (run_file([bench()], "yesterday"), 'skipped, datetime is "yesterday", not an ISO 8601 date and time'),
    "numeric datetime": (run_file([bench()], 1700000000), "skipped, datetime is 1700000000, not a string"),
    "no benchmarks": (run_file([]), "skipped, it holds no benchmarks"),
    "median of zero": (run_file([bench(**{"stats.median": 0})]), f"skipped benchmark {BENCH}: stats.median is 0, "
                       "not above zero"),
    "negative rounds": (run_file([bench(**{"stats.rounds": -1})]), f"skipped benchmark {BENCH}: stats.rounds is -1, "
                        "not one or more"),
    "no energy per image": (run_file([bench(**{"extra_info.joules_per_image": 0})]), f"skipped benchmark {BENCH}: "
                            "extra_info.joules_per_image is 0, not above zero"),
    "median as text": (run_file([bench(**{"stats.median": "fast"})]), f"skipped benchmark {BENCH}: stats.median is "
                       '"fast", not a number'),
    "NaN median": (json.dumps(run_file([bench(**{"stats.median": float("nan")})])),  # Python's json writes NaN
                   f"skipped benchmark {BENCH}: stats.median is NaN, not a finite number"),
    "no stats": (run_file([{k: v for k, v in bench().items() if k != "stats"}]),
                 f"skipped benchmark {BENCH}: stats is missing"),
    "no samples": (run_file([bench(extra_info={k: v for k, v in bench()["extra_info"].items() if k != "samples"})]),
                   f"skipped benchmark {BENCH}: extra_info.samples is missing"),
    "extra_info as text": (run_file([bench(extra_info="vgg on cpu")]), f"skipped benchmark {BENCH}: extra_info is "
                           '"vgg on cpu", not an object'),
    "benchmark not an object": (run_file(["test_epoch"]), 'skipped benchmark number 1: the benchmark is "test_epoch", '
                                "not an object"),
    "machine_info as a list": ({**run_file([bench(median=9.0)], "2026-10-01T00:00:00+00:00"), "machine_info": []},
                               "skipped, machine_info is [], not an object"),
    "no epochs": (run_file([bench(**{"extra_info.epochs": [2, 0]})]), f"skipped benchmark {BENCH}: extra_info.epochs[1] "
                  "is 0, not one or more"),
    "an empty list of epochs": (run_file([bench(**{"extra_info.epochs": []})]), f"skipped benchmark {BENCH}: "
                                "extra_info.epochs is [], not a non-empty array"),
    "a negative round": (run_file([bench(**{"stats.data": [1.0, -13.0]})]), f"skipped benchmark {BENCH}: "
                         "stats.data[1] is -13.0, not above zero"),
    "NaN rounds": (json.dumps(run_file([bench(**{"stats.data": [float("nan")]})])),
                   f"skipped benchmark {BENCH}: stats.data[0] is NaN, not a finite number"),
    "no ranks": (run_file([bench(**{"extra_info.world_size": 0})]), f"skipped benchmark {BENCH}: extra_info.world_size "
                 "is 0, not one or more"),
    "negative samples": (run_file([bench(**{"extra_info.samples": -128})]), f"skipped benchmark {BENCH}: "
                         "extra_info.samples is -128, not one or more"),
    "a canary of zero": (run_file([bench(**{"extra_info.quiet": {"canary_ms": [0.0, 0.0],
                                                                 "limits": {"canary_drift": 0.5}}})]),
                         f"skipped benchmark {BENCH}: extra_info.quiet.canary_ms[0] is 0.0, not above zero"),
    "another suite's file": (run_file([{"name": f"test_{n}", "fullname": f"tests/test_x.py::test_{n}", "params": {},
                                        "extra_info": {}, "stats": {"median": 1.0, "iqr": 0.1, "rounds": 5}}
                                       for n in range(30)]),
                             "skipped, not an mnistbench result file (no benchmark holds extra_info.kind)"),
    "a folder named .json": ("folder", "skipped, not readable JSON ([Errno 21] Is a directory"),
    "a FIFO named .json": ("fifo", "skipped, not a regular file"),
    "a leftover partial save": (json.dumps(GOOD)[:100], None),
}


@pytest.mark.parametrize("command", ["ratio", "history"])
@pytest.mark.parametrize("fault", list(RESULT_FAULTS))
def test_a_bad_results_file_is_one_warning_and_the_rest_is_reported(fault, command, tmp_path, capsys):
    content, warning = RESULT_FAULTS[fault]
    write(tmp_path / "0001_good.json", GOOD)
    name = ".0002_run.json.partial" if fault == "a leftover partial save" else "0002_run.json"
    if content == "folder":
        (tmp_path / name).mkdir()
    elif content == "fifo":  # reading it would wait for a writer forever
        os.mkfifo(tmp_path / name)
    else:
        write(tmp_path / name, content)
    before = snapshot(tmp_path)
    status, out, err = run_cli(capsys, command, tmp_path, "--format", "csv")
    assert status == 0 and out.startswith("benchmark,")
    if warning is None:
        assert err == ""
    else:
        assert len(err.splitlines()) == 1 and err.startswith(f"mnistbench: warning: {tmp_path / name}: {warning}"), err
    assert snapshot(tmp_path) == before


def test_a_run_is_read_once_however_many_paths_lead_to_it(tmp_path, capsys):
    """A folder named twice, or with its subfolder, or a copy of a run under another name, would otherwise put a
    run beside itself: no change, and --fail-on-regression passing the run that regressed."""
    runs = tmp_path / "results" / "Linux"
    write(runs / "0001_a.json", run_file([bench(median=1.0)], "2026-11-01T10:00:00+00:00"))
    write(runs / "0002_b.json", run_file([bench(median=2.0)], "2026-11-02T10:00:00+00:00"))
    once = run_cli(capsys, "history", tmp_path / "results", "--format", "json")
    for paths in ([tmp_path / "results"] * 2, [tmp_path / "results", runs], [runs / "0002_b.json", runs]):
        assert run_cli(capsys, "history", *paths, "--format", "json") == once
    copy = write(runs / "0002_b copy.json", (runs / "0002_b.json").read_text())
    status, out, err = run_cli(capsys, "history", runs, "--format", "json")
    assert (status, out) == once[:2] and json.loads(out)[-1]["change"] == "+100.0%"
    assert err.splitlines()[1:] == once[2].splitlines()  # the copy sorts first: the original is the one skipped
    assert err.splitlines()[0] == f"mnistbench: warning: {runs / '0002_b.json'}: skipped, the same run as {copy} (its time, machine and medians)"


# One value of each JSON type, named as the warnings name what belongs in a field.
JSON_VALUES = {"a number": 1.5, "null": None, "a string": "x", "an array": [], "an object": {"a": 1}, "a boolean": True}
# Fields the reports read, as dotted paths in a stored file, and what belongs there; a bad machine_info field
# skips the file, a bad benchmark field the benchmark.
STORED_FIELDS = {
    "fullname": "a string", "params": "an object or null", "extra_info.device": "a string",
    "extra_info.samples": "an integer", "extra_info.seeds": "an integer", "extra_info.threads": "an integer or null",
    "extra_info.pipeline": "a string or null", "stats.median": "a number", "stats.rounds": "an integer",
    "machine_info.cpu": "an object", "machine_info.cpu.family": "an integer", "machine_info.cpu.flags": "an array",
    "machine_info.cpu.flags.0": "a string", "machine_info.mnistbench": "an object",
    "machine_info.mnistbench.gpus": "an array", "machine_info.mnistbench.gpus.0": "an object or a string",
    "machine_info.mnistbench.gpus.0.memory_gib": "a number", "machine_info.mnistbench.torch": "a string",
}


def with_field(document: dict, field: str, value) -> dict:
    """``document`` with ``field`` (``machine_info.…`` of the file, anything else of its first benchmark; a
    number stands for an array's item) set."""
    *outer, last = [int(name) if name.isdigit() else name for name in field.split(".")]
    where = document if outer and outer[0] == "machine_info" else document["benchmarks"][0]
    for name in outer:
        where = where[name]
    where[last] = value
    return document


@pytest.mark.parametrize("command", ["ratio", "history"])
@pytest.mark.parametrize("kind", list(JSON_VALUES))
@pytest.mark.parametrize("field", list(STORED_FIELDS))
def test_any_json_type_in_any_stored_field_is_one_warning_and_the_rest_is_reported(field, kind, command, tmp_path,
                                                                                    capsys):
    write(tmp_path / "0001_good.json", GOOD)
    other = {**run_file([bench(median=9.0)], "2026-10-01T00:00:00+00:00"), "machine_info": {
        "cpu": {"brand_raw": "AMD EPYC", "family": 25, "flags": ["avx2"]},
        "mnistbench": {"torch": "2.14.1", "torchvision": "0.29.1",
                       "gpus": [{"name": "NVIDIA H100", "memory_gib": 79.2, "compute_capability": "9.0"}]}}}
    path = write(tmp_path / "0002_run.json", with_field(other, field, JSON_VALUES[kind]))
    status, out, err = run_cli(capsys, command, tmp_path, "--format", "json")
    assert status == 0, err
    rows = json.loads(out)
    sound = [row for row in rows if row.get("speedup") == 4.0 or row.get("median_s") in (2.0, 0.5)]
    assert len(sound) == (1 if command == "ratio" else 2), "the sound file is reported whole"
    expected, value, where = STORED_FIELDS[field], json.dumps(JSON_VALUES[kind]), field.replace(".0", "[0]")
    if kind in expected.split(" or "):
        assert err == ""
    elif field.startswith("machine_info"):
        assert err == f"mnistbench: warning: {path}: skipped, {where} is {value}, not {expected}\n"
    else:
        name = "number 1" if field == "fullname" else "benchmarks/test_epoch.py::test_epoch[vgg-cpu-resident]"
        assert err == f"mnistbench: warning: {path}: skipped benchmark {name}: {field} is {value}, not {expected}\n"


@pytest.mark.parametrize("command", ["ratio", "history"])
@pytest.mark.parametrize("paths, warning", [
    (["{tmp}/missing"], "mnistbench: warning: {tmp}/missing: no such file or folder"),
    (["{tmp}/empty"], "mnistbench: warning: {tmp}/empty: no JSON files in this folder"),
    (["{tmp}/foreign.json"], "mnistbench: warning: {tmp}/foreign.json: skipped, not a pytest-benchmark result file"),
])
def test_nothing_usable_is_an_error_after_the_warnings(command, paths, warning, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    write(tmp_path / "foreign.json", {"name": "other"})
    status, out, err = run_cli(capsys, command, *[path.format(tmp=tmp_path) for path in paths])
    assert status == 2 and out == ""
    path = paths[0].format(tmp=tmp_path)
    assert err.splitlines() == [warning.format(tmp=tmp_path),
                                f"mnistbench: error: no usable pytest-benchmark results in {path}"]


@pytest.mark.parametrize("command", ["ratio", "history", "scaling"])
@pytest.mark.parametrize("options, message", [
    (["--plot", "{tmp}/plot.xyz"], "argument --plot: must name a .png, .svg, .pdf file, got '{tmp}/plot.xyz'"),
    (["--plot", "{tmp}/plot"], "argument --plot: must name a .png, .svg, .pdf file, got '{tmp}/plot'"),
    (["--plot", "{tmp}/no-such-folder/plot.png"], "argument --plot: folder {tmp}/no-such-folder does not exist"),
    (["--plot", "{tmp}/a-file/plot.png"], "argument --plot: {tmp}/a-file is not a folder"),
])
def test_a_report_option_that_cannot_work_is_refused_before_the_report(command, options, message, tmp_path, capsys):
    """Before reading a results file: matplotlib would write a name without a suffix as PNG under another name
    than the one said, and refuse an unknown format after the table."""
    write(tmp_path / "a-file", "")
    status, out, err = run_cli(capsys, command, "{tmp}/no-results".format(tmp=tmp_path),
                               *[option.format(tmp=tmp_path) for option in options])
    assert (status, out) == (2, "") and first_line(err) == f"mnistbench {command}: error: {message.format(tmp=tmp_path)}"


def test_a_line_break_in_a_stored_name_stays_within_its_row(tmp_path, capsys):
    document = run_file([bench(median=2.0)])
    document["machine_info"]["cpu"] = {"brand_raw": "AMD\nEPYC", "family": 25, "model": 17, "stepping": 1}
    write(tmp_path / "0001_run.json", document)
    status, out, err = run_cli(capsys, "history", tmp_path)
    assert status == 0 and err == ""
    legend, blank, *table = out.splitlines()
    assert legend.startswith("- m1: AMD EPYC (") and blank == "" and len(table) == 3, out
    assert all(line.startswith("| ") and line.endswith(" |") for line in table[:1] + table[2:]), out


def test_ctrl_c_while_torch_imports_is_one_line(monkeypatch, capsys):
    """The first seconds of every command import torch: Ctrl-C there says what it says later, not a traceback."""
    import mnistbench.__main__ as command

    class Importing(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "mnistbench.cli", Importing("mnistbench.cli"))
    assert command.run() == 130 and capsys.readouterr().err == "mnistbench: interrupted\n"


def test_a_page_in_a_missing_folder_is_refused_before_the_report(tmp_path, capsys):
    status, out, err = run_cli(capsys, "report", tmp_path / "no-results", "--html", tmp_path / "no" / "page.html")
    assert (status, out) == (2, "")
    assert first_line(err) == f"mnistbench report: error: argument --html: folder {tmp_path / 'no'} does not exist"


@pytest.mark.parametrize("threshold, message", [
    ("7", "must be a fraction between 0 and 1 such as 0.07 (7%), got 7"),
    ("0", "must be a fraction between 0 and 1 such as 0.07 (7%), got 0"),
    ("nan", "must be a fraction between 0 and 1 such as 0.07 (7%), got nan"),
    ("7%", "must be a fraction between 0 and 1 such as 0.07 (7%), got '7%'"),
])
def test_a_history_threshold_is_a_fraction(threshold, message, tmp_path, capsys):
    status, out, err = run_cli(capsys, "history", tmp_path, "--threshold", threshold)
    assert (status, out) == (2, "") and first_line(err) == f"mnistbench history: error: argument --threshold: {message}"


def test_a_results_folder_with_thousands_of_files_is_read_whole(tmp_path, capsys):
    runs, start = 2000, datetime(2026, 1, 1, tzinfo=timezone.utc)
    for index in range(runs):
        write(tmp_path / "machine" / f"{index:04d}_run.json",
              run_file([bench(median=1.0 + index % 7 / 100)], (start + timedelta(hours=index)).isoformat()))
    write(tmp_path / "machine" / "junk.json", "{")
    status, out, err = run_cli(capsys, "history", tmp_path, "--format", "csv")
    assert status == 0 and len(out.strip().splitlines()) == 1 + runs
    junk = tmp_path / "machine" / "junk.json"
    assert err.splitlines() == [f"mnistbench: warning: {junk}: skipped, not readable JSON "
                                "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"]


def test_the_summary_after_a_run_skips_a_benchmark_it_cannot_use():
    document = run_file([bench(median=2.0), bench("cuda:0", median=0.5), bench("mps", **{"stats.median": None})])
    skipped = r"this run: skipped benchmark .*\[vgg-mps-resident\]: stats.median is null, not a number"
    with pytest.warns(UserWarning, match=skipped):
        table = ratio.summary(document)
    assert "| 4.00x " in table


# --- the pytest run: the data it needs, checked once at the start ---------------------------------

@pytest.fixture
def suite_hooks(pytestconfig):
    """The suite's conftest.py, whose start-of-run data check these tests call directly."""
    return pytestconfig.pluginmanager.get_plugin(str(REPO / "conftest.py"))


def collected(fixtures_per_test, dataset="mnist", workeroutput=None):
    """A pytest session as the hook sees it: the selected tests (their fixtures) and the options."""
    options = {"dataset": dataset, "mnist_root": "data-root"}
    config = SimpleNamespace(option=SimpleNamespace(collectonly=False), getoption=options.__getitem__,
                             mnistbench_full=False)  # a smoke run: no peaks to measure
    if workeroutput is not None:
        config.workeroutput = workeroutput  # what pytest-xdist gives a worker
    return SimpleNamespace(config=config, items=[SimpleNamespace(fixturenames=names) for names in fixtures_per_test])


@pytest.mark.parametrize("fixtures, dataset, checked", [
    ([["tmp_path"], ["capsys"]], "mnist", []),  # tests that read no data run without it
    ([["train_set"]], "synthetic", []),
    ([["train_set", "test_set"], ["mnist_train"]], "synthetic", ["mnist"]),
    ([["test_set"]], "fashion-mnist", ["fashion-mnist"]),
    ([["train_set"], ["tmp_path", "mnist_root"]], "fashion-mnist", ["fashion-mnist", "mnist"]),
])
def test_the_run_checks_once_the_data_its_selected_tests_read(fixtures, dataset, checked, suite_hooks, monkeypatch):
    calls = []
    monkeypatch.setattr(data, "prepare", lambda name, root: calls.append((name, root)))
    suite_hooks.pytest_collection_finish(collected(fixtures, dataset))
    assert calls == [(name, "data-root") for name in checked]


def test_a_worker_hands_its_data_problem_to_the_controller_which_stops_the_run(suite_hooks, monkeypatch):
    message = "mnist data not usable: FILE: truncated at 1 of 2 bytes\nFix: replace it"

    def truncated(name, root):
        raise data.DataError(message)

    monkeypatch.setattr(data, "prepare", truncated)
    workeroutput = {}
    with pytest.raises(pytest.exit.Exception) as worker:
        suite_hooks.pytest_collection_finish(collected([["mnist_train"]], workeroutput=workeroutput))
    assert (worker.value.msg, worker.value.returncode) == (message, 4)
    controller_config = SimpleNamespace(stash=pytest.Stash())
    suite_hooks.pytest_testnodedown(SimpleNamespace(workeroutput={}, config=controller_config), None)  # no problem
    with pytest.raises(pytest.exit.Exception) as controller:
        suite_hooks.pytest_testnodedown(SimpleNamespace(workeroutput=workeroutput, config=controller_config), None)
    assert (controller.value.msg, controller.value.returncode) == (message, 4)


def run_pytest(*args, tmp_path, plugin=None, cwd=REPO):
    """``python -m pytest ARGS`` started in ``cwd`` (the repository), with ``plugin`` (module source) loaded if
    given."""
    env, extra = command_env({"PYTHONPATH": str(REPO)}), []
    if plugin:
        write(tmp_path / "plugins" / "bad_input_plugin.py", plugin)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "plugins"), str(REPO)])
        extra = ["-p", "bad_input_plugin"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *extra, *map(str, args)],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return result, (result.stdout + result.stderr).splitlines()


def test_the_main_job_on_an_empty_data_root_stops_once_before_any_test(tmp_path):
    """... and before it measures the peaks (seconds of a timed run's start)."""
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    measuring_fails = "from mnistbench import peaks\npeaks._probe = lambda *args: 1 / 0\n"
    result, lines = run_pytest("benchmarks/test_epoch.py", "--benchmark-only", "--mnist-root", empty, "--devices=cpu",
                               tmp_path=tmp_path, plugin=OFFLINE_PLUGIN + measuring_fails)
    assert result.returncode == 4, "\n".join(lines)
    [message] = [line for line in lines if "mnist data not found" in line]
    assert message.startswith(f"! _pytest.outcomes.Exit: mnist data not found: no folder {empty / 'MNIST' / 'raw'}")
    assert len(lines) <= MAX_DATA_ERROR_LINES and "Traceback" not in result.stderr, "\n".join(lines)
    assert "Not saving anything" not in result.stderr, "nothing ran, and the message says why"
    assert list(empty.iterdir()) == []


def test_the_test_command_under_xdist_reports_a_truncated_file_once(tmp_path, mnist_root):
    root = mnist_root_with(tmp_path, mnist_root / "MNIST" / "raw", DATA_FAULTS["truncated images"][0])
    result, lines = run_pytest("benchmarks/test_data.py", "-n", "2", "--mnist-root", root, tmp_path=tmp_path)
    assert result.returncode == 4, "\n".join(lines)
    [message] = [line for line in lines if "mnist data not usable" in line]
    assert message.startswith(f"! _pytest.outcomes.Exit: mnist data not usable: {root / 'MNIST' / 'raw' / TRAIN_IMAGES}"
                              ": truncated at 999,984 of 47,040,016 bytes")
    assert len(lines) <= MAX_DATA_ERROR_LINES and "Traceback" not in result.stderr, "\n".join(lines)


# --- saving a run: finished benchmarks only, and never half a file -------------------------------------

def test_a_failed_save_leaves_no_file_behind(tmp_path, monkeypatch):
    store = storage.AtomicFileStorage(tmp_path, Logger(), "machine")
    store.save(GOOD, "first")
    [first] = (tmp_path / "machine").iterdir()

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.save(GOOD, "second")
    assert list((tmp_path / "machine").iterdir()) == [first]


def test_only_the_benchmarks_of_tests_that_passed_are_kept():
    benchmarks = [SimpleNamespace(name=name, fullname=f"benchmarks/test_epoch.py::{name}") for name in "abc"]
    dropped = storage.keep_finished(benchmarks, {"benchmarks/test_epoch.py::a", "benchmarks/test_epoch.py::c"})
    assert dropped == ["b"] and [bench.name for bench in benchmarks] == ["a", "c"]


@pytest.mark.parametrize("disabled, refused", [(False, True), (True, False)])
def test_an_unwritable_results_folder_is_refused_when_the_run_would_save(tmp_path, disabled, refused):
    (tmp_path / "results").write_text("a file where the results folder should be")
    run = SimpleNamespace(storage=FileStorage(tmp_path / "results", Logger()), save=None, autosave=True,
                          disabled=disabled, json=None, histogram=None)
    storage.make_atomic(run)
    assert isinstance(run.storage, storage.AtomicFileStorage)
    if refused:
        refusal = f"^--benchmark-storage: {re.escape(str(tmp_path / 'results'))} is not a writable folder"
        with pytest.raises(pytest.UsageError, match=refusal):
            storage.check_writable(run)
    else:  # a smoke run saves nothing, so its storage does not matter
        storage.check_writable(run)


@pytest.mark.parametrize("options, refusal", [
    ({"json": "{tmp}/no-such-folder/run.json"}, "--benchmark-json: {tmp}/no-such-folder/run.json is not a file this run "
                                                "could write (a folder, or in a folder that is missing or not writable)"),
    ({"json": "{tmp}"}, "--benchmark-json: {tmp} is not a file this run could write"),
    ({"histogram": "{tmp}/histogram"}, "--benchmark-histogram draws with pygal, which is not installed"),
])
def test_where_results_go_is_checked_before_the_first_benchmark(options, refusal, tmp_path, monkeypatch):
    """pytest-benchmark writes --benchmark-json before the storage's file and fails on a bad path after the last
    benchmark, losing both; a histogram without pygal fails there too."""
    monkeypatch.setattr(storage.importlib.util, "find_spec", lambda name: None)  # pygal absent, as here
    run = SimpleNamespace(**{"storage": FileStorage(tmp_path, Logger()), "save": None, "autosave": True,
                             "disabled": False, "json": None, "histogram": None,
                             **{name: value.format(tmp=tmp_path) for name, value in options.items()}})
    with pytest.raises(pytest.UsageError, match=f"^{re.escape(refusal.format(tmp=tmp_path))}"):
        storage.check_writable(run)


@pytest.mark.parametrize("option, value, does", [
    ("benchmark_json", "run.json", "writes timings"),
    ("benchmark_save", "baseline", "saves timings"),
    ("benchmark_histogram", ["histogram"], "draws timings"),
])
def test_an_option_that_writes_timings_is_refused_in_a_smoke_run(option, value, does):
    """A smoke run times nothing, so pytest-benchmark writes none of these files, and says nothing."""
    options = {"benchmark_storage": "results", "benchmark_only": False, "benchmark_enable": False,
               "benchmark_json": None, "benchmark_save": None, "benchmark_histogram": []}
    def config(**given):
        return SimpleNamespace(getoption=lambda name, default=None: {**options, option: value, **given}[name],
                               option=SimpleNamespace(), stash=pytest.Stash(), rootpath=REPO,
                               invocation_params=SimpleNamespace(args=()), getini=lambda name: [])

    with pytest.raises(pytest.UsageError) as refused:
        storage.pytest_configure(config())
    assert str(refused.value) == (f"--{option.replace('_', '-')} {does}, and this run times nothing (a smoke run: "
                                  "benchmarks execute once, untimed): add --benchmark-only")
    timed = config(benchmark_only=True)
    storage.pytest_configure(timed)  # a timed run writes it
    storage.pytest_unconfigure(timed)


def test_an_empty_results_folder_option_is_refused():
    """An unset shell variable (--benchmark-storage=$DIR) would start a second history in the working folder."""
    config = SimpleNamespace(getoption=lambda name: {"benchmark_storage": ""}[name])
    with pytest.raises(pytest.UsageError, match="^--benchmark-storage is empty: name a folder"):
        storage.pytest_configure(config)


def test_an_elasticsearch_storage_without_its_package_is_refused(monkeypatch):
    """pytest-benchmark imports the package when it opens the storage: an INTERNALERROR without it."""
    monkeypatch.setattr(storage.importlib.util, "find_spec", lambda name: None)  # elasticsearch absent, as here
    config = SimpleNamespace(getoption=lambda name: {"benchmark_storage": "elasticsearch+http://host:9200/b/b"}[name])
    with pytest.raises(pytest.UsageError) as refused:
        storage.pytest_configure(config)
    assert str(refused.value) == ("--benchmark-storage: an Elasticsearch storage needs the elasticsearch package, "
                                  "which is not installed: pip install 'pytest-benchmark[elasticsearch]', or name a "
                                  "folder")


INTERRUPT_PLUGIN = """
import os, signal
from mnistbench import training
run_epoch, calls = training.TrainingRun.epoch, []

def epoch(self, batches=None):  # SIGTERM in the second benchmark, before its first timed epoch ends
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
    return run_epoch(self, batches)

training.TrainingRun.epoch = epoch
"""


@pytest.mark.parametrize("raising, skipped", [(KeyboardInterrupt(), True), (RuntimeError("a fault"), False)])
def test_a_case_stopped_before_its_rounds_is_not_warned_of_as_unused(raising, skipped):
    """pytest-benchmark warns of a fixture "not used at all" unless its test was skipped: a case Ctrl-C, SIGTERM or
    a deadline stops in its probe or warm-up is marked as it marks a skipped one; one that failed is not."""
    benchmark = SimpleNamespace(skipped=False)
    wrapper = storage.pytest_runtest_call(SimpleNamespace(funcargs={"benchmark": benchmark}))
    next(wrapper)
    with pytest.raises(type(raising)):
        wrapper.throw(raising)
    assert benchmark.skipped is skipped


def test_an_interrupt_midway_keeps_the_finished_benchmarks_and_no_partial_one(tmp_path, mnist_root):
    """SIGTERM (timeout's default signal, a cancelled CI job) would kill the run with nothing saved; it stops the
    run as Ctrl-C does, with the KeyboardInterrupt Ctrl-C raises. pytest-benchmark alone would then crash on the
    interrupted benchmark's empty rounds and save nothing."""
    result, lines = run_pytest("benchmarks/test_epoch.py", "--benchmark-only", "--devices=cpu", "--models=vgg",
                               "--precisions=fp32", "--epoch-samples=128", "--epoch-rounds=2", "-k", "reference or resident",
                               f"--mnist-root={mnist_root}", f"--benchmark-storage={tmp_path / 'results'}",
                               tmp_path=tmp_path, plugin=INTERRUPT_PLUGIN)
    assert result.returncode == 2, "\n".join(lines)
    assert ("mnistbench: not saved: test_epoch[vgg-cpu-resident]: its test did not pass "
            "(interrupted, failed or skipped)") in lines
    [saved] = [path for path in (tmp_path / "results").rglob("*") if path.is_file()]
    assert saved.name.startswith("0001_") and saved.suffix == ".json"
    stored = json.loads(saved.read_text())
    assert [(b["name"], b["stats"]["rounds"]) for b in stored["benchmarks"]] == [("test_epoch[vgg-cpu-reference]", 2)]
    assert "Traceback" not in result.stderr


# --- launcher variables without a launcher ---------------------------------------------------------------

# What a SLURM job or an exported torchrun environment leaves in a plain shell.
LEFTOVERS = {
    "one rank": {"RANK": "0", "WORLD_SIZE": "1"},
    "two ranks with a rendezvous": {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "{port}"},
    "a local rank": {"LOCAL_RANK": "1", "WORLD_SIZE": "4"},
}


def leave_over(monkeypatch, leftovers: dict) -> str:
    """Set ``leftovers`` (no torchrun variable of its own); returns them as the job names what it ignores."""
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    values = {name: value.format(port=launcher.free_port()) for name, value in leftovers.items()}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return " ".join(f"{name}={values[name]}" for name in distributed.RANK_VARIABLES if name in values)


@pytest.mark.parametrize("leftovers", list(LEFTOVERS))
def test_launcher_variables_without_torchrun_make_a_single_process_that_says_so(leftovers, monkeypatch):
    ignored = leave_over(monkeypatch, LEFTOVERS[leftovers])
    member = distributed.join("cpu", timeout_seconds=5)  # a regression waits 5 s for the missing rank, then fails
    assert (member.backend, member.rank, member.world_size) == (None, 0, 1)
    assert str(member) == f"a single process (torchrun did not start it: {ignored} ignored)"


@pytest.mark.filterwarnings("error")  # and no warning: torchelastic's @record, alone, warned on a captured stream
def test_a_job_with_leftover_rank_variables_reports_its_error_as_a_single_process(tmp_path, monkeypatch, capsys,
                                                                                   offline):
    leave_over(monkeypatch, {"RANK": "3", "WORLD_SIZE": "4"})
    status, out, err = run_cli(capsys, "train", "--model", "vgg", "--mnist-root", tmp_path / "none",
                               "--out", tmp_path / "vgg.pth")
    assert status == 2 and first_line(err).startswith("mnistbench: error: mnist data not found: "), err


# --- any output encoding -----------------------------------------------------------------------------------

def written(stream: io.TextIOWrapper) -> str:
    stream.flush()
    return stream.buffer.getvalue().decode(stream.encoding)


@pytest.mark.parametrize("encoding", ["cp1252", "ascii"])
def test_a_finished_job_prints_its_result_whatever_the_streams_encoding(encoding, weights, few_test_digits_root,
                                                                        monkeypatch):
    """A model path in Chinese characters, printed to a console that cannot show them: escaped, not a crash."""
    path = weights.rename(weights.with_name("模型 vgg.pth"))
    out, err = (io.TextIOWrapper(io.BytesIO(), encoding=encoding) for _ in range(2))
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    status = cli.main(["evaluate", "--model", "vgg", "--weights", str(path), "--mnist-root", str(few_test_digits_root)])
    missing = cli.main(["evaluate", "--model", "vgg", "--weights", str(path.with_name("缺失.pth"))])
    folder = path.parent
    assert status == 0, written(err)
    assert written(out).startswith(f"{folder}/\\u6a21\\u578b vgg.pth: vgg on 1000 mnist test images: accuracy ")
    assert missing == 2 and written(err).startswith(f"mnistbench: error: {folder}/\\u7f3a\\u5931.pth: no such file")


# --- any starting folder --------------------------------------------------------------------------------------

def storage_config(option: str, addopts: list[str], command_line: list[str]):
    return SimpleNamespace(getoption={"benchmark_storage": option}.__getitem__, getini={"addopts": addopts}.__getitem__,
                           invocation_params=SimpleNamespace(args=tuple(command_line)), rootpath=REPO)


INI = ["-n", "auto", "--benchmark-storage=results"]


@pytest.mark.parametrize("option, addopts, command_line, environment, storage_path", [
    ("results", INI, ["-q"], "", str(REPO / "results")),  # pytest.ini's
    ("file://results", ["--benchmark-storage", "file://results"], [], "", str(REPO / "results")),
    ("mine", INI, ["--benchmark-storage=mine"], "", "mine"),  # the command line's: relative to the working folder
    ("results", INI, ["--benchmark-storage", "results"], "", "results"),  # the command line's, though pytest.ini's too
    ("results", INI, [], "-q --benchmark-storage=results", "results"),  # PYTEST_ADDOPTS's: the command line's
    ("/tmp/results", ["--benchmark-storage=/tmp/results"], [], "", "/tmp/results"),
    ("elasticsearch+https://host/index", ["--benchmark-storage=elasticsearch+https://host/index"], [], "",
     "elasticsearch+https://host/index"),
])
def test_the_results_folder_of_pytest_ini_is_the_checkouts_wherever_pytest_starts(
        option, addopts, command_line, environment, storage_path, monkeypatch):
    monkeypatch.setenv("PYTEST_ADDOPTS", environment)
    assert storage.in_checkout(storage_config(option, addopts, command_line)) == storage_path


PARAMS_PLUGIN = """
def pytest_collection_finish(session):
    print("STORAGE", session.config.getoption("benchmark_storage"))
    for item in session.items:
        if "benchmark" in item.fixturenames:
            print("PARAMS", item.name, *sorted(item.callspec.params))
"""


def test_collecting_from_the_benchmarks_folder_creates_nothing_and_finds_every_grouping_parameter(tmp_path):
    """Started from benchmarks/, the gate of docs/reading-results.md collected with -W error: the checkout's
    results/, no new folder, no warning (pytest-benchmark's about the compared machine, or about saving
    nothing); and every benchmark has the parameters runs are grouped by (``--benchmark-group-by=param:device``)."""
    result, lines = run_pytest("--collect-only", "-q", "--benchmark-only", "-W", "error", "--benchmark-compare",
                               "--benchmark-compare-fail=median:10%", tmp_path=tmp_path,
                               plugin=PARAMS_PLUGIN, cwd=REPO / "benchmarks")
    assert result.returncode == 0, "\n".join(lines)
    assert f"STORAGE {REPO / 'results'}" in lines and not (REPO / "benchmarks" / "results").exists()
    params = {line.split()[1]: set(line.split()[2:]) for line in lines if line.startswith("PARAMS ")}
    assert {name.partition("[")[0] for name in params} == {"test_epoch", "test_step", "test_time_to_accuracy",
                                                           "test_distributed"}
    assert [name for name, names in params.items() if not {"model_name", "device"} <= names] == []
    assert not [line for line in lines if "Warning" in line or "warnings summary" in line], "\n".join(lines)


# --- contradicting options ----------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["benchmark_only", "benchmark_enable"])
def test_timing_under_pytest_xdist_is_refused_naming_the_fix(option):
    """pytest-benchmark refuses --benchmark-only with -n N itself ("Can't have both --benchmark-only and
    --benchmark-disable"), without the fix, and would time nothing with --benchmark-enable."""
    with pytest.raises(pytest.UsageError) as refused:
        conftest.pytest_configure(OptionsOnly(**{option: True}, dist="worksteal", numprocesses=2))
    assert str(refused.value) == (f"--{option.replace('_', '-')} times benchmarks in one process, which pytest-xdist "
                                  "(-n 2) cannot: pytest-benchmark would time nothing; drop -n or give -n 0")


@pytest.mark.parametrize("options, message", [
    ({"benchmark_only": True, "benchmark_compare_fail": ["median:10%"]},
     "--benchmark-compare-fail gates this run against stored results: add --benchmark-compare"),
    ({"benchmark_compare": True}, "--benchmark-compare compares timings, and this run times nothing (a smoke run"),
    ({"benchmark_compare": True, "benchmark_compare_fail": ["median:10%"]},
     "--benchmark-compare compares timings, and this run times nothing (a smoke run"),
])
def test_a_comparison_that_cannot_compare_is_refused_at_the_start(options, message):
    with pytest.raises(pytest.UsageError) as refused:
        gate.pytest_configure(OptionsOnly(**options))
    assert str(refused.value).startswith(message)


# --- the gate without a baseline, or with a partial newest run ----------------------------------------------

HERE = {"cpu": {"brand_raw": "Test CPU", "flags": ["avx2", "avx512f"], "count": 2},
        "mnistbench": {"cpu_capability": "AVX512", "cpu_threads": 2}}
OTHER_MACHINE = {**HERE, "mnistbench": {"cpu_capability": "AVX2", "cpu_threads": 2}}  # the same name, AVX-512 off
STEPS = [f"test_step[vgg-b128-cpu-{variant}-train]" for variant in ("fp32-contiguous-eager-default", "fast")]


def stored(name: str, median: float, **changes) -> dict:
    """A stored benchmark ``name`` with every statistic pytest-benchmark's table and checks read."""
    stats = {**dict.fromkeys(gate.STATS_FIELDS, median), "stddev": 0.0, "iqr": 0.0, "rounds": 5}
    return bench(**{"name": name, "fullname": f"benchmarks/test_step.py::{name}", "stats": stats, **changes})


class Finished(SimpleNamespace):
    """A benchmark that ran, as pytest-benchmark's ``Metadata`` shows it to the gate."""

    def __getitem__(self, field):
        return self.stats[field]


def finished(name: str, median: float, params: dict | None = None) -> Finished:
    return Finished(name=name, fullname=f"benchmarks/test_step.py::{name}", extra_info=bench()["extra_info"],
                    params=params or {}, stats=dict.fromkeys(gate.STATS_FIELDS, median))


def run_gate_hooks(tmp_path, runs: dict, finishing: dict, limit="median:10%", params: dict | None = None,
                   compare: bool | str = True):
    """The gate's hooks as pytest calls them, over ``runs`` (file name -> machine info and stored benchmarks) in
    a results folder, for a run of ``STEPS`` where ``finishing`` (name -> median) pass: the lines it writes, the
    exit status and pytest-benchmark's ``compared_mapping``; ``params`` gives the test parameters of some (name ->),
    ``compare`` the run named by ``--benchmark-compare=NUM``."""
    for name, (machine_info, benchmarks) in runs.items():
        write(tmp_path / "results" / "machine" / f"{name}.json", {**run_file(benchmarks), "machine_info": machine_info})
    lines = []
    config = OptionsOnly(benchmark_only=True, benchmark_compare=compare,
                         benchmark_compare_fail=[parse_compare_fail(limit)])
    config.option.collectonly = False
    config.pluginmanager = SimpleNamespace(get_plugin=lambda name: SimpleNamespace(
        write_line=lambda line, **style: lines.append(line)))
    gate.pytest_configure(config)
    config._benchmarksession = SimpleNamespace(storage=FileStorage(tmp_path / "results", Logger(), "machine"),
                                               disabled=False, get_machine_info=lambda: HERE, benchmarks=[],
                                               compared_mapping={})
    session = SimpleNamespace(config=config, exitstatus=pytest.ExitCode.OK, items=[SimpleNamespace(
        nodeid=f"benchmarks/test_step.py::{name}", name=name, fixturenames=["benchmark"]) for name in STEPS])
    gate.pytest_collection_finish(session)
    config._benchmarksession.benchmarks = [finished(name, median, (params or {}).get(name))
                                           for name, median in finishing.items()]
    finish = gate.pytest_sessionfinish(session)
    next(finish)  # pytest-benchmark's tables and the terminal summary come here
    gate.pytest_terminal_summary(None, config)
    with pytest.raises(StopIteration):
        finish.send(None)
    return lines, session.exitstatus, config._benchmarksession.compared_mapping


@pytest.mark.parametrize("runs", [{}, {"0001_other": (OTHER_MACHINE, [stored(name, 1.0) for name in STEPS])}],
                         ids=["no stored run", "only another machine's runs"])
def test_a_gate_with_nothing_stored_of_this_machine_is_refused_before_the_first_benchmark(runs, tmp_path):
    with pytest.raises(pytest.UsageError) as refused:
        run_gate_hooks(tmp_path, runs, {})
    assert str(refused.value) == (
        f"--benchmark-compare-fail: nothing stored of this machine in {tmp_path / 'results'} to compare the 2 "
        "selected benchmark(s) with; store a baseline first: the same command without --benchmark-compare and "
        "--benchmark-compare-fail")


@pytest.mark.parametrize("stored_runs, compare, message", [
    (7, "9999", "--benchmark-compare=9999: no stored run in {results}/machine matches it; the stored runs are 0003, "
                "0004, 0005, 0006, 0007 (of 7)"),
    (0, "0001", "--benchmark-compare=0001: no stored run in {results}/machine matches it; none is stored"),
    (1, "other/0001", "--benchmark-compare=other/0001: no stored run in {results}/other matches it; the stored runs "
                      "are 0002"),  # another machine id's folder, its own runs named
    (1, "0009_broken", "--benchmark-compare=0009_broken: no stored run it names could be read: Failed to load "
                       "{results}/machine/0009_broken.json: "),  # stored, unreadable: not "no stored run"
    (1, "a/b/c", "--benchmark-compare=a/b/c: 'a/b/c' isn't an existing file or acceptable glob. Expected "
                 "'platform-glob/filename-glob' or 'filename-glob'."),
])
def test_a_gate_against_a_run_that_cannot_be_read_is_refused_saying_why(stored_runs, compare, message, tmp_path):
    """pytest-benchmark's storage finds no file for a number it does not hold, skips one it cannot read, and the
    gate said "nothing stored" for both; a name of three parts was a traceback."""
    runs = {f"{number:04d}_run": (HERE, [stored(name, 1.0) for name in STEPS]) for number in range(1, stored_runs + 1)}
    write(tmp_path / "results" / "other" / "0002_run.json", run_file([stored(name, 1.0) for name in STEPS]))
    if compare == "0009_broken":
        (tmp_path / "results" / "machine").mkdir(parents=True, exist_ok=True)
        (tmp_path / "results" / "machine" / "0009_broken.json").write_text('{"benchmarks": [')
    with pytest.raises(pytest.UsageError) as refused:
        run_gate_hooks(tmp_path, runs, {}, compare=compare)
    assert str(refused.value).startswith(message.format(results=tmp_path / "results"))


def test_an_empty_run_to_compare_with_is_refused():
    """An unset shell variable (--benchmark-compare=$RUN) compared with nothing, and gated nothing, silently."""
    with pytest.raises(pytest.UsageError) as refused:
        gate.pytest_configure(OptionsOnly(benchmark_only=True, benchmark_compare=""))
    assert str(refused.value) == ("--benchmark-compare= is empty: name a run (NUM), or give the option without a "
                                  "value to compare each benchmark with this machine's newest stored result")


def test_each_benchmark_is_compared_with_its_own_newest_result_of_this_machine(tmp_path):
    """The newest file holds one of the two (as a time-to-accuracy run holds none), the next another machine's."""
    fp32, fast = STEPS
    runs = {"0001_full": (HERE, [stored(fp32, 1.0), stored(fast, 1.0)]),
            "0002_one": (HERE, [stored(fp32, 2.0)]),
            "0003_other": (OTHER_MACHINE, [stored(fp32, 9.0), stored(fast, 9.0)]),
            "0004_tta": (HERE, [stored("test_time_to_accuracy[vgg-cpu-to0.99-fast]", 50.0)])}
    lines, status, mapping = run_gate_hooks(tmp_path, runs, {fp32: 2.1, fast: 1.05})
    assert {path.name: list(names) for path, names in mapping.items()} == {
        "0002_one.json": [f"benchmarks/test_step.py::{fp32}"], "0001_full.json": [f"benchmarks/test_step.py::{fast}"]}
    assert lines == ["mnistbench: gate passed (median:10%): 2 benchmark(s) compared"] and status == 0


def test_a_gpu_baseline_stored_before_a_driver_upgrade_is_what_the_gate_compares_with():
    """The gate judges an upgrade against the run before it: a GPU's newest stored result with another driver is
    its baseline; one of another GPU is not."""
    def on(name, driver):
        return {"mnistbench": {"gpus": [{"name": name, "memory_gib": 79.2, "compute_capability": "9.0",
                                         "driver": driver}]}}
    gpu_step = stored("test_step[vgg-b128-cuda:0-fast-train]", 1.0, **{"extra_info.device": "cuda:0"})
    runs = [(Path("0001_before.json"), {"machine_info": on("NVIDIA H100", "570.86.15"), "benchmarks": [gpu_step]}),
            (Path("0002_other.json"), {"machine_info": on("NVIDIA H200", "580.159.04"), "benchmarks": [gpu_step]})]
    now = gate.identity(on("NVIDIA H100", "580.159.04"), gpu_step["extra_info"])
    finished_step = SimpleNamespace(extra_info=gpu_step["extra_info"], params=gpu_step["params"])
    path, _, _ = gate.baseline(runs, gpu_step["fullname"], gate.comparable(finished_step, now, gate.Request(True)))
    assert path.name == "0001_before.json"


def test_a_regression_is_one_line_naming_it_and_fails_the_run(tmp_path):
    fp32, fast = STEPS
    lines, status, _ = run_gate_hooks(tmp_path, {"0001_full": (HERE, [stored(fp32, 1.0), stored(fast, 1.0)])},
                                {fp32: 1.25, fast: 1.0})
    assert lines == [f"mnistbench: gate failed (median:10%): {fp32} median 1.25 s against 1 s in run 0001, +25.0% "
                     "(limit 10%)"]
    assert status == pytest.ExitCode.TESTS_FAILED


def test_benchmarks_with_nothing_stored_are_named_and_a_gate_that_compared_nothing_fails(tmp_path):
    fp32, fast = STEPS
    lines, status, _ = run_gate_hooks(tmp_path, {"0001_fp32": (HERE, [stored(fp32, 1.0)])}, {fast: 1.0})  # fp32 failed
    assert lines == [
        f"mnistbench: compare: nothing stored of this machine in {tmp_path / 'results'} for 1 of 2 benchmark(s), "
        f"which run uncompared: {fast}",
        f"mnistbench: compare: not compared, nothing stored of this machine and configuration (images per round, "
        f"dataset, seeds...) to compare with: {fast}",
        "mnistbench: gate failed (median:10%): no benchmark of this run was compared with a stored result"]
    assert status == pytest.ExitCode.TESTS_FAILED


def test_a_stored_result_of_another_configuration_is_no_baseline(tmp_path):
    """A quick matrix's 12,800-image epoch after a full one, or 1,024 images after 256: not a change of speed. A fast
    case whose probe chose another variant is still the fast case."""
    fp32, fast = STEPS
    fast_params = {"model_name": "vgg", "batch_size": 128, "device": "cpu", "step_variant": "fast", "mode": "train"}
    runs = {"0001_sizes": (HERE, [stored(fp32, 1.0, **{"extra_info.samples": 1024}),
                                  stored(fast, 1.0, params=fast_params, **{"extra_info.precision": "bf16"})])}
    lines, status, mapping = run_gate_hooks(tmp_path, runs, {fp32: 1.25, fast: 1.0}, params={fast: fast_params})
    assert lines == [f"mnistbench: compare: not compared, nothing stored of this machine and configuration (images per "
                     f"round, dataset, seeds...) to compare with: {fp32}",
                     "mnistbench: gate passed (median:10%): 1 benchmark(s) compared"], lines
    assert status == 0


def test_a_stored_benchmark_or_file_with_fields_of_any_type_is_no_baseline(tmp_path):
    fp32, fast = STEPS
    runs = {"0001_good": (HERE, [stored(fp32, 1.0), stored(fast, 1.0)]),
            "0002_bad_fields": (HERE, [stored(fp32, 0.1, extra_info=None),
                                       stored(fast, 0.1, stats={**stored(fast, 0.1)["stats"], "median": "fast"})]),
            "0003_bad_machine": ([], [stored(fp32, 0.1)]),
            "0004_unreadable": (HERE, ["a string"])}
    lines, status, mapping = run_gate_hooks(tmp_path, runs, {fp32: 1.0, fast: 1.0})
    assert [path.name for path in mapping] == ["0001_good.json"] and status == 0, lines
    unreadable = tmp_path / "results" / "machine" / "0004_unreadable.json"
    # Python's own words: 3.11 adds ", not 'str'", 3.10 ends at "integers"
    assert lines[0].startswith(f"mnistbench: compare: Failed to load {unreadable}: string indices must be integers")
    assert lines[1:] == ["mnistbench: gate passed (median:10%): 2 benchmark(s) compared"]
