"""The articles' job as a command, end to end at smoke size: train, save, reload, evaluate, interrupt."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models

from mnistbench import checkpoints, launcher, train_job, training

from articles import article_model_class
from conftest import FEW_TEST_DIGITS, command_env
from stored import report

REPO = Path(__file__).resolve().parents[1]


def mnistbench(*args, root, env=None):
    """``python -m mnistbench ARGS`` with ``env`` added to ``conftest.command_env()`` (this worker's share of
    the cores, no pytest-xdist variables)."""
    return subprocess.run([sys.executable, "-m", "mnistbench", *map(str, args), "--mnist-root", str(root)],
                          cwd=REPO, env=command_env(env), capture_output=True, text=True, timeout=300)


# A console that cannot encode the model path (a redirected Windows console), in a shell that a torchrun or
# SLURM job left its variables in: the job trains alone, says so, and prints its result lines escaped.
PLAIN_SHELL = {"PYTHONIOENCODING": "cp1252", "RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}


def test_train_saves_a_model_the_articles_code_loads(tmp_path, few_test_digits_root):
    out = tmp_path / "mnist_vgg.pth"
    lines = []
    summary = train_job.train("vgg", "cpu", epochs=2, samples=384, out=out, root=few_test_digits_root,
                              progress=False, log=lines.append)
    assert (summary.epochs_done, summary.images, summary.interrupted) == (2, 768, False)
    assert lines[1].startswith("Epoch [1/2], Loss: ") and "test accuracy" in lines[1]
    assert lines[-1].startswith("done: 2 epochs") and str(out) in lines[-1]
    article = article_model_class("vgg")()
    article.load_state_dict(torch.load(out, weights_only=True), strict=True)
    ours = checkpoints.load("vgg", out)
    images = torch.randn(2, 1, 28, 28)
    assert torch.equal(article.eval()(images), ours(images))
    assert list(tmp_path.iterdir()) == [out], "no temporary file may be left behind"


def test_train_command_end_to_end_with_the_fast_recipe(tmp_path, few_test_digits_root):
    out = tmp_path / "模型 vgg.pth"
    port = launcher.free_port()
    run = mnistbench("train", "--model", "vgg", "--recipe", "fast", "--epochs", "1", "--samples", "512",
                     "--fast-variant", "fp32-channels_last-eager-fused", "--out", out, root=few_test_digits_root,
                     env={**PLAIN_SHELL, "MASTER_PORT": str(port)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("training vgg on cpu, a single process (torchrun did not start it: RANK=0 WORLD_SIZE=2 "
                                 f"MASTER_ADDR=127.0.0.1 MASTER_PORT={port} ignored), fast recipe")
    assert ("fast recipe (fast: fp32-channels_last-eager-fused, pinned), 1 epochs of 512 mnist images, batch 64, "
            "Adam lr 0.006 onecycle, label smoothing 0.1\n") in run.stdout
    assert f"saved to {tmp_path}/\\u6a21\\u578b vgg.pth\n" in run.stdout
    assert "Epoch [1/1], Loss: " in run.stdout
    assert "epoch 1/1" not in run.stderr and "\r" not in run.stderr, "no progress bar when output is not a terminal"
    checkpoints.load("vgg", out)


def test_the_progress_bar_is_drawn_when_asked(tmp_path, few_test_digits_root, capsys):
    train_job.train("vgg", "cpu", epochs=1, samples=256, out=tmp_path / "m.pth", root=few_test_digits_root,
                    progress=True, log=lambda line: None)
    assert "epoch 1/1" in capsys.readouterr().err


def test_evaluate_reports_the_accuracy_of_an_article_file(tmp_path, few_test_digits_root):
    torch.manual_seed(0)
    path = tmp_path / "文章 mnist_vggnet.pth"
    torch.save(article_model_class("vgg")().state_dict(), path)  # what the article's script saves
    run = mnistbench("evaluate", "--model", "vgg", "--weights", path, root=few_test_digits_root, env=PLAIN_SHELL)
    assert run.returncode == 0, run.stderr
    assert f"{tmp_path}/\\u6587\\u7ae0 mnist_vggnet.pth: vgg on {FEW_TEST_DIGITS} mnist test images: accuracy " in run.stdout


@pytest.mark.parametrize("content, message", [
    (b"not a model", "not a PyTorch state_dict file"),
    (None, "not vgg weights (12 missing keys such as ['classifier.0.bias', 'classifier.0.weight']"),
    ("nan", "12 tensors hold NaN or infinite values, such as ['features.0.weight', 'features.0.bias']: the "
            "training that saved them diverged"),  # evaluated, they read as chance accuracy and a loss of nan
])
def test_evaluate_refuses_a_wrong_or_corrupt_file_in_one_line(tmp_path, mnist_root, content, message, capsys):
    path = tmp_path / "model.pth"
    if content is None:
        torch.save(article_model_class("googlenet")().state_dict(), path)
    elif content == "nan":
        torch.save({name: tensor * float("nan") for name, tensor in models.build("vgg").state_dict().items()}, path)
    else:
        path.write_bytes(content)
    status, _, err = report(capsys, "evaluate", "--model", "vgg", "--weights", path, "--mnist-root", mnist_root)
    assert status == 2
    assert err.count("\n") == 1 and message in err
    if content is None:  # the article's GoogLeNet file: the model to name instead
        assert err.endswith("): they are googlenet's, --model googlenet\n"), err


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_an_interrupted_run_keeps_the_last_complete_epoch(stop, tmp_path, few_test_digits_root, monkeypatch):
    """Ctrl-C, or SIGTERM (a job scheduler's stop; torchrun's to its ranks after a Ctrl-C), which ended the run
    with nothing said: the run keeps its last complete epoch, and says so."""
    original_epoch = training.TrainingRun.epoch
    calls = []

    def interrupted_second_epoch(self, batches=None):
        calls.append(1)
        if len(calls) == 2:
            if stop == "ctrl-c":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # its handler raises in this thread, at once
        return original_epoch(self, batches)

    monkeypatch.setattr(training.TrainingRun, "epoch", interrupted_second_epoch)
    out, lines = tmp_path / "model.pth", []
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in a fresh process, not this test's worker
    try:
        summary = train_job.train("vgg", "cpu", epochs=3, samples=256, out=out, root=few_test_digits_root,
                                  progress=False, log=lines.append)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "the handler is put back"
    finally:
        signal.signal(signal.SIGTERM, before)
    assert summary.interrupted and summary.epochs_done == 1
    assert lines[-1] == f"interrupted during epoch 2: {out} holds the weights after epoch 1"
    checkpoints.load("vgg", out)
    assert list(tmp_path.iterdir()) == [out]


def test_a_run_interrupted_before_its_first_epoch_says_the_file_there_is_the_earlier_one(tmp_path, few_test_digits_root,
                                                                                         monkeypatch):
    """With --overwrite, the file a run replaces is replaced by its first epoch: stopped before, it is the old one."""
    def interrupted(self, batches=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.TrainingRun, "epoch", interrupted)
    out, lines = tmp_path / "model.pth", []
    out.write_bytes(b"an earlier model")
    summary = train_job.train("vgg", "cpu", epochs=1, samples=256, out=out, root=few_test_digits_root,
                              progress=False, log=lines.append)
    assert summary.interrupted and out.read_bytes() == b"an earlier model"
    assert lines[-1] == f"interrupted during epoch 1: nothing was saved: {out} is the file that was there before"


def test_saving_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    model = torch.nn.Linear(2, 2)
    checkpoints.save(model, path)
    before = path.read_bytes()

    def failing_save(obj, target):
        Path(target).write_bytes(b"half a fi")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save(model, path)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]
