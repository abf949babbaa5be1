"""Command-line options, fixtures and pytest-benchmark hooks of the suite.

Logic lives in ``mnistbench``; this file only turns options into parameters and fixtures.
Without ``--benchmark-only`` the run is a smoke run: every benchmark executes once, untimed, on a
few hundred samples, so that ``pytest`` proves the whole suite works in minutes.
"""
import os

import pytest
import torch

import models
from mnistbench import data, devices, guards, machine, pipelines, ratio, scaling, variants

SMOKE_EPOCH_SAMPLES = 256
# A few hundred images teach these networks little: at smoke size the time-to-accuracy benchmark
# only proves its machinery (benchmarks/test_suite.py checks a real run to 50%).
SMOKE_TARGET_ACCURACY = 0.1
STEP_BATCH_SIZES = ("recipe", 512)  # the article's batch size, and one large batch


def pytest_addoption(parser):
    group = parser.getgroup("mnistbench")
    group.addoption("--devices", default="all",
                    help="'all' (default: cpu, every cuda:N, mps) or a comma list such as 'cpu,cuda:0'")
    group.addoption("--models", default=",".join(models.names()),
                    help=f"comma list of models to benchmark (default: {','.join(models.names())})")
    group.addoption("--mnist-root", default=None,
                    help=f"data root holding MNIST/raw/ (default: ${data.ROOT_ENV}, else {data.DEFAULT_ROOT})")
    group.addoption("--dataset", default="mnist", choices=data.DATASETS,
                    help="training data; 'synthetic' is random pixels for pure throughput, recorded as such")
    group.addoption("--epoch-samples", type=int, default=None,
                    help=f"time each epoch over the first N samples of the shuffled epoch "
                         f"(default: the full split with --benchmark-only, else {SMOKE_EPOCH_SAMPLES})")
    group.addoption("--epoch-rounds", type=int, default=3, help="timed epochs per epoch benchmark (default: 3)")
    group.addoption("--target-accuracy", type=float, default=None,
                    help=f"test accuracy the time-to-accuracy benchmark trains to "
                         f"(default: 0.99 with --benchmark-only, else {SMOKE_TARGET_ACCURACY})")
    group.addoption("--precisions", default=",".join(variants.PRECISIONS),
                    help="step benchmark precisions: fp32, tf32 (CUDA), bf16, fp16 (CUDA); default: all a device supports")
    group.addoption("--memory-formats", default=",".join(variants.MEMORY_FORMATS),
                    help="step benchmark memory formats: contiguous, channels_last (default: both)")
    group.addoption("--compile", default=None,
                    help="step benchmark compile modes: eager, compile, cudagraphs (CUDA) "
                         "(default: all with --benchmark-only, else eager; compilation is tested on its own)")


def _comma_list(value: str, valid, option: str) -> list[str]:
    chosen = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in valid]
    if unknown or not chosen:
        raise pytest.UsageError(f"{option}: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(valid)}")
    return chosen


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    try:
        config.mnistbench_devices = devices.parse(config.getoption("devices"))
    except ValueError as error:
        raise pytest.UsageError(f"--devices: {error}") from None
    config.mnistbench_models = _comma_list(config.getoption("models"), models.names(), "--models")
    config.mnistbench_full = bool(config.getoption("benchmark_only"))
    default_compile = ",".join(variants.COMPILE_MODES) if config.mnistbench_full else "eager"
    config.mnistbench_variant_choices = {
        "precisions": _comma_list(config.getoption("precisions"), variants.PRECISIONS, "--precisions"),
        "memory_formats": _comma_list(config.getoption("memory_formats"), variants.MEMORY_FORMATS, "--memory-formats"),
        "compile_modes": _comma_list(config.getoption("compile") or default_compile, variants.COMPILE_MODES, "--compile"),
    }
    for option in ("epoch_samples", "epoch_rounds"):
        value = config.getoption(option)
        if value is not None and value < 1:
            raise pytest.UsageError(f"--{option.replace('_', '-')} must be a positive integer, got {value}")
    target = config.getoption("target_accuracy")
    if target is None:
        target = 0.99 if config.mnistbench_full else SMOKE_TARGET_ACCURACY
    config.mnistbench_target_accuracy = target
    if not 0 < target <= 1:
        raise pytest.UsageError(f"--target-accuracy must be a fraction in (0, 1], got {target}")
    if not config.mnistbench_full and not config.getoption("benchmark_enable"):
        config.option.benchmark_disable = True
    devices.share_cpu_threads()


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (in pytest.ini) spreads tests over the cores, but timed benchmarks must own the machine."""
    return 0 if config.getoption("benchmark_only") else None


def pytest_generate_tests(metafunc):
    config = metafunc.config
    names = metafunc.fixturenames
    if "batch_size" in names:
        pairs = [(model, models.recipe(model).batch_size if size == "recipe" else size)
                 for model in config.mnistbench_models for size in STEP_BATCH_SIZES]
        metafunc.parametrize(("model_name", "batch_size"), pairs, ids=[f"{m}-b{b}" for m, b in pairs])
    elif "model_name" in names:
        metafunc.parametrize("model_name", config.mnistbench_models)
    if "compile_mode" in names:  # step variants: plain strings, so pytest-benchmark can store and group them
        cases = [(device, v.precision, v.memory_format, v.compile) for device in config.mnistbench_devices
                 for v in variants.matrix(device, **config.mnistbench_variant_choices)]
        metafunc.parametrize(("device", "precision", "memory_format", "compile_mode"), cases,
                             ids=["-".join(case) for case in cases])
    elif "device" in names:
        metafunc.parametrize("device", config.mnistbench_devices)
    if "pipeline_name" in names:
        metafunc.parametrize("pipeline_name", list(pipelines.PIPELINES))
    if "target_accuracy" in names:  # a parameter, so runs to different targets are different benchmarks
        target = config.mnistbench_target_accuracy
        metafunc.parametrize("target_accuracy", [target], ids=[f"to{target:g}"])


@pytest.fixture(scope="session")
def dataset_name(pytestconfig) -> str:
    return pytestconfig.getoption("dataset")


@pytest.fixture(scope="session")
def mnist_root(pytestconfig):
    return data.resolve_root(pytestconfig.getoption("mnist_root"))


def _load_or_fail(name, root, train):
    try:
        return data.load(name, root, train=train)
    except data.DataError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def train_set(dataset_name, mnist_root):
    """The training split chosen by ``--dataset``; untransformed, each pipeline adds its own."""
    return _load_or_fail(dataset_name, mnist_root, train=True)


@pytest.fixture(scope="session")
def test_set(dataset_name, mnist_root):
    """The test split of ``--dataset``, for accuracy targets; random pixels have no accuracy to reach."""
    if dataset_name == "synthetic":
        pytest.skip("synthetic data has no test accuracy to reach; use --dataset mnist or fashion-mnist")
    return _load_or_fail(dataset_name, mnist_root, train=False)


@pytest.fixture(scope="session")
def mnist_train(mnist_root):
    """Real MNIST, whatever ``--dataset`` says: the correctness tests check real digits."""
    return _load_or_fail("mnist", mnist_root, train=True)


@pytest.fixture(scope="session")
def mnist_test(mnist_root):
    return _load_or_fail("mnist", mnist_root, train=False)


@pytest.fixture(scope="session")
def epoch_samples(pytestconfig) -> int | None:
    """Samples per timed epoch: the option, else the full split (``None``) or the smoke size."""
    chosen = pytestconfig.getoption("epoch_samples")
    if chosen is None and not pytestconfig.mnistbench_full:
        return SMOKE_EPOCH_SAMPLES
    return chosen


@pytest.fixture(scope="session")
def epoch_rounds(pytestconfig) -> int:
    return pytestconfig.getoption("epoch_rounds")


@pytest.fixture(autouse=True)
def _release_accelerator_memory():
    """After each test, hand cached GPU memory back, so one case's out-of-memory cannot starve the next."""
    yield
    if torch.cuda.is_available():
        guards.free_accelerator_memory()


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["mnistbench"] = machine.info()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    config.mnistbench_output_json = output_json


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    """After a run on two or more devices, the GPU/CPU ratio table (the same code as ``mnistbench ratio``);
    after a data-parallel run, the scaling table."""
    document = getattr(config, "mnistbench_output_json", None)
    table = ratio.summary(document) if document else None
    if table:
        terminalreporter.section("speedup over the CPU (CPU median / accelerator median)")
        terminalreporter.write_line(table)
    table = scaling.summary(document) if document else None  # the same code as ``mnistbench scaling``
    if table:
        terminalreporter.section("data-parallel scaling (images/s by world size, efficiency against 1 rank)")
        terminalreporter.write_line(table)


def pytest_report_header(config):
    mode = "full benchmark" if config.mnistbench_full else "smoke run (benchmarks execute once, untimed)"
    return (f"mnistbench: {mode}; devices {','.join(config.mnistbench_devices)}; "
            f"models {','.join(config.mnistbench_models)}; {os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1')} worker(s)")
