"""Data-parallel training through torchrun: the article's network and recipe in DistributedDataParallel,
its batch size per rank (weak scaling), gloo on the CPU with 1 and 2 ranks and nccl on 1, 2, 4, ... GPUs.

torchrun runs as a subprocess of the test; the ranks time every step of one epoch of their shards and
rank 0 reports the slowest rank's time per step, which pytest-benchmark stores as the rounds through a
replaying timer (``ReplayClock``). Also here: two simulated nodes training one model with ``mnistbench
train``, the failures that must be reported with the rank and the cause, and the scaling report.
"""
import json
import os
import socket
import statistics
from types import SimpleNamespace

import pytest
import torch

import models
from mnistbench import cli, distributed, energy, launcher, pipelines, watch
from mnistbench.reports import history, ratio, results, scaling
from mnistbench.distributed import ReplayClock

from articles import article_model_class

STEP_CLOCK = ReplayClock()
# The data-parallel cases of the test command: each torchrun launch costs CI's two cores seconds of start-up;
# with a GPU among --devices, one nccl rank too, so that its first run is not a timed one.
SMOKE_CASES = {("vgg", "gloo", 2), ("vgg", "nccl", 1)}
# Enough images for this many timed steps per rank even at smoke size: the loss must have room to fall.
MIN_TIMED_STEPS = 6
COLLECTIVE_TIMEOUT_SECONDS = 120  # how long a rank waits for the others in one collective
# For the whole torchrun run: a smoke run, and a timed one (a full epoch of GoogLeNet on 2 gloo ranks took
# 75 s on a 2-core Zen 5; this leaves room for a first-generation EPYC three times slower, and more).
SMOKE_TIMEOUT_SECONDS, FULL_TIMEOUT_SECONDS = 300, 20 * 60
# Each backend's device parameter: rank 0's device, as its results record it (every benchmark has a `device`
# parameter, so that pytest-benchmark can group any run by it).
BACKEND_DEVICES = {"gloo": "cpu", "nccl": "cuda:0"}
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pytest_generate_tests(metafunc):
    """gloo with 1 and 2 ranks when the CPU is benchmarked; nccl with 1, 2, 4, ... ranks over the GPUs."""
    if "world_size" not in metafunc.fixturenames:
        return
    chosen = metafunc.config.mnistbench_devices
    gpus = sum(device.startswith("cuda") for device in chosen)
    cases = []
    if "cpu" in chosen:
        cases += [pytest.param("gloo", size, BACKEND_DEVICES["gloo"], id=f"gloo-{size}", marks=[pytest.mark.skip(
            reason=f"{size} gloo ranks need {size} cores; this machine has {CORES}")] if size > CORES else [])
            for size in (1, 2)]
    if gpus:
        cases += [pytest.param("nccl", size, BACKEND_DEVICES["nccl"], id=f"nccl-{size}")
                  for size in distributed.world_sizes(gpus)]
    else:
        cases.append(pytest.param("nccl", 1, BACKEND_DEVICES["nccl"], id="nccl-1", marks=pytest.mark.skip(
            reason="nccl ranks need CUDA GPUs; none is among --devices")))
    metafunc.parametrize(("backend", "world_size", "device"), cases)


@pytest.fixture(scope="module")
def one_rank_speeds() -> dict:
    """Images/s of each model and backend at one rank in this run, for the scaling efficiency of more."""
    return {}


@pytest.mark.benchmark(timer=STEP_CLOCK)
def test_distributed(benchmark, model_name, backend, world_size, device, dataset_name, mnist_root, epoch_samples,
                     pytestconfig, tmp_path, one_rank_speeds):
    if not pytestconfig.mnistbench_full and (model_name, backend, world_size) not in SMOKE_CASES:
        pytest.skip("the test command trains VGG on 2 gloo ranks (and 1 nccl rank on a GPU) only; "
                    "--benchmark-only runs every case")
    batch_size = models.recipe(model_name).batch_size
    samples = epoch_samples and max(epoch_samples, MIN_TIMED_STEPS * batch_size * world_size)
    try:  # the ranks are this process's children: the watchers count them in its process tree
        with watch.watching(device, leave_out={energy.watcher}) as watched:  # no energy: distributed.UNMEASURED_ENERGY
            report = distributed.launch_steps(
                model_name, device, world_size, workdir=tmp_path, dataset=dataset_name, root=mnist_root,
                samples=samples, threads_per_rank=max(1, torch.get_num_threads() // world_size),
                collective_timeout_seconds=COLLECTIVE_TIMEOUT_SECONDS,
                timeout_seconds=FULL_TIMEOUT_SECONDS if pytestconfig.mnistbench_full else SMOKE_TIMEOUT_SECONDS)
    except launcher.LaunchError as error:
        pytest.fail(str(error), pytrace=False)
    benchmark.group = f"distributed {model_name} {backend}"
    benchmark.pedantic(STEP_CLOCK.advance, rounds=STEP_CLOCK.load(report.step_seconds), iterations=1)
    info = report.extra_info(benchmark, dataset=dataset_name,
                             one_rank_images_per_second=one_rank_speeds.get((model_name, backend)))
    benchmark.extra_info.update(watched.info)
    benchmark.extra_info.update(info)
    if world_size == 1 and "images_per_second" in info:
        one_rank_speeds[(model_name, backend)] = info["images_per_second"]

    assert sorted(rank["rank"] for rank in report.ranks) == list(range(world_size))
    assert len(report.digests) == 1, "DistributedDataParallel must keep every rank's weights identical"
    first, last = report.losses[:3], report.losses[-3:]
    assert statistics.mean(last) < statistics.mean(first), f"the loss did not fall: {report.losses}"


def test_a_report_becomes_extra_info_with_the_slowest_ranks_speed_and_the_launch_kept_apart():
    rank = {"device": "cpu", "device_name": "a cpu", "threads": 1, "first_step_seconds": 0.5, "peak_memory_mib": 900.0,
            "step_seconds": [0.1, 0.1, 0.1], "weights_digest": "d"}
    report = distributed.StepReport(
        model="vgg", world_size=2, nodes=1, backend="gloo", batch_size=128, bucket_cap_mb=25,
        step_seconds=[0.125, 0.125, 0.125], losses=[2.3, 2.2, 2.1], launch_seconds=6.0,
        ranks=[{**rank, "rank": 0}, {**rank, "rank": 1, "peak_memory_mib": 1000.0, "step_seconds": [0.125] * 3}])
    timed = SimpleNamespace(stats=SimpleNamespace(stats=SimpleNamespace(median=0.125)))  # as pytest-benchmark's
    info = report.extra_info(timed, dataset="mnist", one_rank_images_per_second=1280.0)
    assert (info["kind"], info["samples"], info["global_batch_size"], info["world_size"]) == ("distributed", 256, 256, 2)
    assert info["images_per_second"] == 2048.0 and info["images_per_second_per_rank"] == 1024.0
    assert info["rank_images_per_second"] == [1280.0, 1024.0] and info["scaling_efficiency"] == pytest.approx(0.8)
    assert (info["threads_per_rank"], info["peak_memory_mib"], info["launch_seconds"]) == (1, 1000.0, 6.0)
    assert info["timing"] == distributed.TIMING  # why its rounds are single steps, unlike every other benchmark's
    assert (info["energy_source"], info["energy_unavailable_reason"]) == ("unavailable", distributed.UNMEASURED_ENERGY)
    untimed = report.extra_info(SimpleNamespace(stats=None), dataset="mnist")
    assert "images_per_second" not in untimed and "scaling_efficiency" not in untimed


def test_ranks_get_disjoint_slices_of_the_same_shuffled_epoch(mnist_train):
    def indices(shard):
        pipeline = pipelines.build("resident", mnist_train, 100, "cpu", samples=1000, seed=3, shard=shard)
        batches = list(pipeline)
        assert pipeline.samples == 1000 // shard[1] == sum(len(labels) for _, labels in batches)
        return [(image.numpy().tobytes(), int(label)) for images, labels in batches for image, label in zip(images, labels)]

    whole = indices((0, 1))
    first, second = indices((0, 2)), indices((1, 2))
    assert not set(first) & set(second)
    assert first == whole[0::2] and second == whole[1::2]


def test_an_epoch_too_short_to_give_every_rank_an_image_is_refused(mnist_train):
    """``train --samples 1`` on two ranks trained on nothing, printed a loss of nan and saved the untrained weights."""
    with pytest.raises(ValueError) as refused:
        pipelines.build("resident", mnist_train, 128, "cpu", samples=1, shard=(1, 2))
    assert str(refused.value) == "an epoch of 1 images leaves none to each of 2 ranks: train on 2 images an epoch at least"


def test_world_sizes_double_up_to_every_device():
    assert distributed.world_sizes(1) == [1]
    assert distributed.world_sizes(4) == [1, 2, 4]
    assert distributed.world_sizes(6) == [1, 2, 4, 6]


def test_the_replay_clock_gives_pytest_benchmark_exactly_the_recorded_times():
    clock = ReplayClock()
    assert clock.load([0.25, 0.5, 0.125]) == 3
    durations = []
    for _ in range(3):  # what pytest-benchmark's runner does for each round
        start = clock()
        clock.advance()
        durations.append(clock() - start)
    assert durations == [0.25, 0.5, 0.125]


@pytest.mark.skipif(CORES < 2, reason="two ranks need two cores")
def test_two_nodes_train_one_model_together(tmp_path, few_test_digits_root):
    """Two torchrun agents, one rank each, meeting at one c10d rendezvous: docs/data-parallel.md's multi-node command."""
    out = tmp_path / "mnist_vgg.pth"
    logs = launcher.run(["-m", "mnistbench", "train", "--model", "vgg", "--epochs", "1", "--samples", "768",
                         "--out", str(out), "--no-progress", "--mnist-root", str(few_test_digits_root)],
                        workdir=tmp_path / "logs", ranks_per_node=1, nodes=2, timeout_seconds=SMOKE_TIMEOUT_SECONDS)
    output = "\n".join(log.read_text() for log in logs)
    assert "data-parallel over 2 rank(s) on 2 node(s) (gloo)" in output and "of 768 mnist images, batch 128 per rank" \
        in output
    assert output.count("Epoch [1/1], Loss: ") == 1, "rank 0 alone reports"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["logs", out.name], "one model file, no partial"
    article = article_model_class("vgg")()
    article.load_state_dict(torch.load(out, weights_only=True), strict=True)


@pytest.mark.skipif(CORES < 2, reason="two ranks need two cores")
def test_a_rank_that_raises_mid_epoch_fails_the_run_with_its_rank_and_error(tmp_path, mnist_root):
    failing_rank = [os.path.join(os.path.dirname(__file__), "failing_rank.py")]
    with pytest.raises(launcher.LaunchError) as failure:
        distributed.launch_steps("vgg", "cpu", 2, workdir=tmp_path, root=mnist_root, samples=1024, entry=failing_rank,
                                 collective_timeout_seconds=COLLECTIVE_TIMEOUT_SECONDS,
                                 timeout_seconds=SMOKE_TIMEOUT_SECONDS)
    assert str(failure.value) == "rank 1 failed: RuntimeError: rank 1 fails after 2 steps of the timed epoch"
    assert not (tmp_path / "report.json").exists()


def test_a_rank_that_crashed_is_blamed_before_the_rank_that_lost_it(tmp_path):
    secondary = tmp_path / "error.json"  # rank 0's error, recorded when rank 1 vanished from the all-reduce
    secondary.write_text(json.dumps({"message": {"message": "RuntimeError: Connection closed by peer",
                                                 "extraInfo": {"timestamp": "0"}}}))
    # torchrun's report of the failed ranks, as it prints it
    output = f"""Failures:
[1]:
  time      : 2026-11-24_03:28:22
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 4256)
  error_file: {secondary}
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-24_03:28:22
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 4257)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4257"""
    assert launcher.failure(output, 1) == "rank 1 failed: killed by SIGKILL"
    assert launcher.failure(output.replace("-9 (pid", "-15 (pid"), 1) == (  # stopped by torchrun: not the cause
        "rank 0 failed: RuntimeError: Connection closed by peer")


def test_a_run_past_its_deadline_is_stopped_with_every_rank(tmp_path, monkeypatch):
    hung_rank = tmp_path / "hung_rank.py"
    hung_rank.write_text("import os, time\nopen(os.environ['HUNG_PID_FILE'], 'w').write(str(os.getpid()))\n"
                         "time.sleep(3600)\n")
    monkeypatch.setenv("HUNG_PID_FILE", str(tmp_path / "pid"))
    with pytest.raises(launcher.LaunchError, match="torchrun did not finish within 10 s and was stopped"):
        launcher.run([str(hung_rank)], workdir=tmp_path / "logs", ranks_per_node=1, timeout_seconds=10)
    with pytest.raises(ProcessLookupError):  # the hung rank is gone too
        os.kill(int((tmp_path / "pid").read_text()), 0)


def test_a_port_in_use_is_refused_naming_it(tmp_path):
    with socket.socket() as taken:
        taken.bind((launcher.HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(launcher.LaunchError, match=f"port {port} on 127.0.0.1 is already in use"):
            launcher.run(["-c", "pass"], workdir=tmp_path, ranks_per_node=1, port=port, timeout_seconds=60)
    assert not list(tmp_path.iterdir()), "nothing was started"


def test_more_ranks_than_gpus_are_refused(tmp_path):
    gpus = torch.cuda.device_count()
    with pytest.raises(launcher.LaunchError, match=f"{gpus + 1} ranks on cuda need one GPU each, and this machine has {gpus}"):
        launcher.run(["-c", "pass"], workdir=tmp_path, ranks_per_node=gpus + 1, device="cuda", timeout_seconds=60)


def stored(model="vgg", world_size=1, median=0.1, backend="gloo", **extra) -> dict:
    """A data-parallel result as pytest-benchmark stores it: ``median`` seconds per global step."""
    info = {"kind": "distributed", "model": model, "device": "cpu", "device_name": "a cpu", "batch_size": 128,
            "samples": 128 * world_size, "dataset": "mnist", "pipeline": "resident", "precision": "fp32",
            "memory_format": "contiguous", "compile": "eager", "world_size": world_size, "nodes": 1,
            "backend": backend, **extra}
    name = f"benchmarks/test_distributed.py::test_distributed[{model}-{backend}-{world_size}]"
    return {"name": name.split("::")[1], "fullname": name, "extra_info": info, "stats": {"median": median, "iqr": 0.0, "rounds": 20},
            "params": {"model_name": model, "backend": backend, "world_size": world_size}}


def write_run(path, *benchmarks):
    path.write_text(json.dumps({"datetime": "2026-11-24T10:00:00+00:00", "benchmarks": list(benchmarks),
                                "machine_info": {"mnistbench": {"torch": "2.14.1", "torchvision": "0.29.1"}}}))
    return path


def test_scaling_table_and_plot_measure_each_world_size_against_one_rank_of_the_same_run(tmp_path, capsys):
    # 1 rank: 128 images in 0.1 s, 1280 images/s; 2 ranks: 256 images in 0.125 s, 2048 images/s, 80% of 2 x 1280.
    write_run(tmp_path / "0001_run.json", stored(world_size=1, median=0.1), stored(world_size=2, median=0.125))
    write_run(tmp_path / "0002_run.json", stored(world_size=2, median=0.1))  # no one-rank result in this run
    [first, second] = scaling.curves(results.load([tmp_path]))
    assert [first.efficiency(point) for point in first.points] == [pytest.approx(1.0), pytest.approx(0.8)]
    assert second.efficiency(second.points[0]) is None
    plot = tmp_path / "scaling.png"
    assert cli.main(["scaling", str(tmp_path), "--format", "csv", "--plot", str(plot)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "benchmark,device_name,run,world_size,nodes,step_median_ms,images_per_second,per_rank,efficiency"
    assert rows[2].split(",")[3:] == ["2", "1", "125.0", "2048.0", "1024.0", "0.8"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert scaling.summary(json.loads((tmp_path / "0001_run.json").read_text())).count("\n") == 3


def test_world_size_and_backend_are_configuration_in_ratio_and_history(tmp_path):
    old = stored(median=2.0)
    for field in ("world_size", "backend", "nodes"):  # as stored before these fields existed
        del old["extra_info"][field]
    one_rank = stored(world_size=1, median=0.2, device="cuda:0")
    two_ranks = stored(world_size=2, median=0.1, device="cuda:0", samples=128)
    two_ranks["params"] = one_rank["params"]  # the same benchmark by name: only the configuration differs
    write_run(tmp_path / "0001_run.json", stored(median=2.0), two_ranks)
    [pair] = ratio.pairs(results.load([tmp_path]))
    assert pair.speedup is None and pair.mismatch == "world_size differs (cpu 1, cuda:0 2)"
    write_run(tmp_path / "0002_run.json", old, one_rank)
    loaded = results.load([tmp_path])
    assert (loaded[-1].extra_info["world_size"], loaded[-2].extra_info["backend"]) == (1, None)
    assert len(history.build(loaded)) == 4, "cpu and cuda, 1 and 2 ranks, gloo and no process group: apart"
