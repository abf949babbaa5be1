"""Command-line options, fixtures and pytest-benchmark hooks of the suite.

Logic lives in ``mnistbench``; this file only turns options into parameters and fixtures.
Without ``--benchmark-only`` the run is a smoke run: every benchmark executes once, untimed, on a
few hundred samples, so that ``pytest`` proves the whole suite works in minutes.
"""
import os
import tempfile
from pathlib import Path

import pytest
import torch
from torchvision import datasets

import models
from mnistbench import (backends, cases, data, devices, fast, guards, idx, machine, matrix, peaks, pipelines, setups,
                        variants)
from mnistbench.reports import ratio, results, scaling
from mnistbench.variants import Variant

# storage: saves only the benchmarks that finished, atomically, under the checkout's results/;
# gate: --benchmark-compare and --benchmark-compare-fail, each benchmark against its own stored result;
# budget: --time-budget, the estimates it decides by, and each case's whole cost;
# allocator: glibc's malloc pinned and trimmed before each case; quiet: the look at the machine, disturbed cases;
# energy: its watcher, registered last so that it watches the rounds alone (watch.watching nests them)
pytest_plugins = ("mnistbench.storage", "mnistbench.gate", "mnistbench.budget", "mnistbench.allocator",
                  "mnistbench.quiet", "mnistbench.energy")

SMOKE_EPOCH_SAMPLES = 256
# At smoke size the time-to-accuracy benchmark proves its machinery on a target that no model stuck on
# one class can reach (the most frequent digit is 11.7% of the smoke test images), on epochs long enough
# for both networks to pass it within their recipes' epochs: GoogLeNet's fast recipe (2 epochs at batch 64,
# without batch norm) stays near chance through its first epoch, and reached 13.4% (fp32) and 14.9% (bf16)
# after two of 2,048 images, 20.6% and 18.9% after two of 3,072 (seed 0, on the Intel Xeon).
SMOKE_TARGET_ACCURACY = 0.15
SMOKE_ACCURACY_TRAIN_SAMPLES = 3072
SMOKE_TEST_SAMPLES = 2000
FEW_TEST_DIGITS = 1000
# The data each data fixture reads: --dataset's for train_set and test_set, real MNIST for the rest.
DATASET_FIXTURES = ("train_set", "test_set")
MNIST_FIXTURES = ("mnist_train", "mnist_test", "mnist_root")
DATA_ERROR = "mnistbench_data_error"  # a worker's data problem, sent to the pytest-xdist controller
BROKEN = "mnistbench_broken_candidates"  # a worker's broken fast-probe candidates, sent to the controller
BROKEN_ON_WORKERS = pytest.StashKey[list]()


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
                    help=f"time each epoch over the first N samples of the shuffled epoch (default with "
                         f"--benchmark-only: the full split, {matrix.QUICK_EPOCH_SAMPLES} in the quick matrix; "
                         f"else {SMOKE_EPOCH_SAMPLES})")
    group.addoption("--epoch-rounds", type=int, default=2, help="timed epochs per epoch benchmark (default: 2)")
    group.addoption("--target-accuracy", type=float, default=None,
                    help=f"test accuracy the time-to-accuracy benchmark trains to "
                         f"(default: 0.99 with --benchmark-only, else {SMOKE_TARGET_ACCURACY})")
    group.addoption("--seeds", type=int, default=1,
                    help="time-to-accuracy runs per case, from seeds 0..N-1, one round each: the time's mean and "
                         "spread are pytest-benchmark's statistics, each seed's accuracy is in extra_info (default: 1)")
    group.addoption("--precisions", default=None,
                    help="step benchmark precisions: fp32, tf32 (CUDA), bf16, fp16 (CUDA); default: all a device "
                         "supports (quick matrix: fp32, bf16)")
    group.addoption("--memory-formats", default=None,
                    help="step benchmark memory formats: contiguous, channels_last (default: both)")
    group.addoption("--compile", default=None,
                    help="step benchmark compile modes: eager, compile, compile-step, cudagraphs (CUDA), "
                         "cudagraphs-step (CUDA: the whole step captured) (default: all with --benchmark-only, "
                         "eager, cudagraphs and cudagraphs-step in the quick matrix, else eager; compilation is tested "
                         "on its own)")
    group.addoption("--optimizers", default=None,
                    help="Adam implementations: default, foreach, fused (default: all three with --benchmark-only, "
                         "default and fused in the quick matrix, else default; the implementations are tested on "
                         "their own)")
    group.addoption("--convolutions", default=None,
                    help="how the convolutions compute: native (the backend's kernels; always among them), matmul "
                         "(those on maps of at most 4 pixels as matrix products; the fast probe tries it on every "
                         "eager variant that passed its screen where a model has such maps) (default: both)")
    group.addoption("--matrix", default="standard", choices=matrix.MATRICES,
                    help="quick: the headline results of each device in minutes (reference and fast epochs, fp32 "
                         "and fast training and inference steps, the fast recipe's time to accuracy); standard "
                         "(default): also the resident epochs, the article recipe's time to accuracy and the "
                         "data-parallel cases; exhaustive: the standard matrix with its steps replaced by every "
                         "precision x format x compile x optimizer at two batch sizes (no fast step), and the "
                         "time-to-accuracy runs known to miss their target")
    group.addoption("--fast-variant", default=None,
                    help="pin the fast setup's variant, e.g. bf16-channels_last-eager-fused, instead of measuring it")
    group.addoption("--no-fast-cache", action="store_true",
                    help="measure the fast variant again instead of reusing the choice cached for this machine")


def _comma_list(value: str, valid, option: str) -> list[str]:
    chosen = list(dict.fromkeys(item.strip() for item in value.split(",") if item.strip()))  # each once
    unknown = [item for item in chosen if item not in valid]
    if not chosen:
        raise pytest.UsageError(f"{option} is empty; choose from {', '.join(valid)}")
    if unknown:
        raise pytest.UsageError(f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(valid)}")
    return chosen


def _choices(config, option: str, default, valid) -> list[str]:
    """A comma list option's choices: ``default`` where it is not given; an empty one (an unset shell variable)
    refused, as every such option is."""
    value = config.getoption(option)
    return _comma_list(",".join(default) if value is None else value, valid, f"--{option.replace('_', '-')}")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    try:
        config.mnistbench_devices = devices.parse(config.getoption("devices"))
    except ValueError as error:  # its message names the option
        raise pytest.UsageError(str(error) if str(error).startswith("--devices") else f"--devices: {error}") from None
    config.mnistbench_models = _comma_list(config.getoption("models"), models.names(), "--models")
    config.mnistbench_full = bool(config.getoption("benchmark_only"))
    config.mnistbench_matrix = config.getoption("matrix")
    timing = next((option for option in ("benchmark_only", "benchmark_enable") if config.getoption(option)), None)
    if timing and config.getoption("dist", "no") != "no":  # pytest-benchmark's test of xdist, said with its fix
        raise pytest.UsageError(f"--{timing.replace('_', '-')} times benchmarks in one process, which pytest-xdist "
                                f"(-n {config.getoption('numprocesses')}) cannot: pytest-benchmark would time nothing; "
                                f"drop -n or give -n 0")
    defaults = matrix.probe_choices(config.mnistbench_matrix, full=config.mnistbench_full)
    config.mnistbench_variant_choices = {
        "precisions": _choices(config, "precisions", defaults["precisions"], variants.PRECISIONS),
        "memory_formats": _choices(config, "memory_formats", variants.MEMORY_FORMATS, variants.MEMORY_FORMATS),
        "compile_modes": _choices(config, "compile", defaults["compile_modes"], variants.COMPILE_MODES),
        "optimizers": _choices(config, "optimizers", defaults["optimizers"], variants.OPTIMIZERS),
        "convolutions": _choices(config, "convolutions", defaults["convolutions"], variants.CONVOLUTIONS),
    }
    if "native" not in config.mnistbench_variant_choices["convolutions"]:
        raise pytest.UsageError("--convolutions: matmul is tried on the native variants the probe times: give "
                                "native,matmul or native")
    try:
        pinned = None if config.getoption("fast_variant") is None else Variant.parse(config.getoption("fast_variant"))
    except ValueError as error:
        raise pytest.UsageError(f"--fast-variant: {error}") from None
    # A timed run caches only a probe that had the machine to itself, never one beside other xdist workers or
    # on a machine that was not quiet; a smoke run's choices go to its own temporary cache (below), shared by
    # its workers and subprocesses.
    timed = cases.timed(config)
    config.mnistbench_fast_policy = setups.FastPolicy(
        **{name: tuple(chosen) for name, chosen in config.mnistbench_variant_choices.items()},
        pinned=pinned, use_cache=not config.getoption("no_fast_cache"),
        save_cache=not config.mnistbench_full or "PYTEST_XDIST_WORKER" not in os.environ,
        save_disturbed=not config.mnistbench_full, turns=fast.Turns() if timed else setups.SMOKE.turns,
        probe_batch=None if timed else setups.SMOKE.probe_batch)  # a smoke run probes as setups.SMOKE says
    for option in ("epoch_samples", "epoch_rounds", "seeds"):
        value = config.getoption(option)
        if value is not None and value < 1:
            raise pytest.UsageError(f"--{option.replace('_', '-')} must be a positive integer, got {value}")
    # Samples per timed epoch and per epoch trained to an accuracy (None: the full split): the option, else in
    # a timed run the full split (a fifth of it for the quick matrix's epochs), in a smoke run the smoke sizes.
    chosen = config.getoption("epoch_samples")
    if config.mnistbench_full:
        quick = matrix.QUICK_EPOCH_SAMPLES if config.mnistbench_matrix == "quick" else None
        config.mnistbench_epoch_samples, config.mnistbench_accuracy_epoch_samples = chosen or quick, chosen
        config.mnistbench_test_samples = None
    else:
        config.mnistbench_epoch_samples = chosen or SMOKE_EPOCH_SAMPLES
        config.mnistbench_accuracy_epoch_samples = chosen or SMOKE_ACCURACY_TRAIN_SAMPLES
        config.mnistbench_test_samples = SMOKE_TEST_SAMPLES
    target = config.getoption("target_accuracy")
    if target is None:
        target = 0.99 if config.mnistbench_full else SMOKE_TARGET_ACCURACY
    config.mnistbench_target_accuracy = target
    if not 0 < target <= 1:
        raise pytest.UsageError(f"--target-accuracy must be a fraction in (0, 1], got {target}")
    if not timed:
        config.option.benchmark_disable = True
    if not config.mnistbench_full and not hasattr(config, "workerinput"):
        # Tests never read or write this machine's cache of fast choices. One temporary cache per test run,
        # which the xdist workers inherit: each model and batch is probed once, not once per worker.
        os.environ[fast.CACHE_ENV] = tempfile.mkdtemp(prefix="mnistbench-cache-")
    devices.share_cpu_threads()


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's: without it (-p no:xdist) an unknown hook would stop pytest
def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (in pytest.ini) spreads tests over the cores, but timed benchmarks must own the machine
    (and pytest-benchmark times nothing under xdist), and a time budget's deadline stops one process."""
    return 0 if cases.timed(config) or config.getoption("time_budget") else None


def pytest_generate_tests(metafunc):
    config = metafunc.config
    names = metafunc.fixturenames
    chosen_matrix = config.mnistbench_matrix
    if "batch_size" in names:
        pairs = [(model, models.recipe(model).batch_size if size == "recipe" else size)
                 for model in config.mnistbench_models for size in matrix.STEP_BATCH_SIZES[chosen_matrix]]
        metafunc.parametrize(("model_name", "batch_size"), pairs, ids=[f"{m}-b{b}" for m, b in pairs])
    elif "model_name" in names:
        metafunc.parametrize("model_name", config.mnistbench_models)
    if "step_variant" in names:  # plain strings, so pytest-benchmark can store and group them
        cases = [(device, name, mode) for device in config.mnistbench_devices
                 for name in matrix.step_variants(device, chosen_matrix, config.mnistbench_variant_choices)
                 for mode in matrix.step_modes(name, chosen_matrix)]
        cases = [pytest.param(*case, id="-".join(case)) for case in cases]
        if not cases:  # one skipped case that says why, not pytest's "empty parameter set"
            chosen = config.mnistbench_variant_choices
            cases = [pytest.param(None, None, None, id="no-step-variant", marks=pytest.mark.skip(
                reason=f"no step variant of --precisions {','.join(chosen['precisions'])} --compile "
                       f"{','.join(chosen['compile_modes'])} runs on {', '.join(config.mnistbench_devices)}"))]
        metafunc.parametrize(("device", "step_variant", "mode"), cases)
    elif "device" in names and "backend" not in names:  # test_distributed pairs each backend with its device
        metafunc.parametrize("device", config.mnistbench_devices)
    if "pipeline_name" in names:
        metafunc.parametrize("pipeline_name", list(pipelines.PIPELINES))
    if "target_accuracy" in names:  # a parameter, so runs to different targets are different benchmarks
        target = config.mnistbench_target_accuracy
        metafunc.parametrize("target_accuracy", [target], ids=[f"to{target:g}"])


def pytest_collection_modifyitems(config, items):
    """Under ``--benchmark-only`` the tests that are not benchmarks are deselected, not skipped one by one, and
    so are the cases outside the chosen matrix; a timed run puts the headline cases first
    (``matrix.order``), a smoke run the tests marked ``long``. Every case on an accelerator, and every test
    marked ``gpu``, is a GPU case (``-m gpu``)."""
    kept, dropped = [], []
    for item in items:
        params = cases.params(item)
        if params.get("device", "cpu") != "cpu":
            item.add_marker(pytest.mark.gpu)
        if cases.is_benchmark(item):
            wanted = matrix.in_matrix(cases.test(item), params, config.mnistbench_matrix)
            if reason := _pinned_cannot_serve(config.mnistbench_fast_policy.pinned, params):
                item.add_marker(pytest.mark.skip(reason=reason))
        else:
            wanted = not config.mnistbench_full
        (kept if wanted else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    if cases.timed(config):
        kept.sort(key=lambda item: matrix.order(cases.test(item), cases.params(item)))
    else:  # the longest tests first: one started last keeps the run going on one worker while the others idle
        kept.sort(key=lambda item: item.get_closest_marker("long") is None)
    items[:] = kept


def _pinned_cannot_serve(pinned, params: dict) -> str | None:
    """Why the ``--fast-variant`` cannot serve the fast case of ``params``, or None: a device it cannot run on
    (a GPU part's choice pinned for the CPU too), a schedule it cannot train, a ``matmul`` VGGNet."""
    if pinned is None or not results.is_fast(params):
        return None
    model_name = params["model_name"]
    schedule = models.recipe(model_name, params.get("recipe_name", "article")).schedule  # the recipe each test resolves
    return setups.pinned_cannot_serve(pinned, params.get("device", "cpu"), model_name, schedule)


@pytest.fixture(scope="session")
def fast_policy(pytestconfig) -> setups.FastPolicy:
    return pytestconfig.mnistbench_fast_policy


@pytest.fixture(scope="session")
def dataset_name(pytestconfig) -> str:
    return pytestconfig.getoption("dataset")


@pytest.fixture(scope="session")
def mnist_root(pytestconfig):
    return data.resolve_root(pytestconfig.getoption("mnist_root"))


XDIST_WORKER_VARIABLES = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


def command_env(extra: dict | None = None) -> dict:
    """The environment of a command a test starts, plus ``extra``: this worker's share of the cores
    (``OMP_NUM_THREADS``; torch in a fresh process takes every core, and beside the other pytest-xdist
    workers its threads would wait on each other's cores) and none of pytest-xdist's variables naming a worker
    (the command is not one)."""
    env = {key: value for key, value in os.environ.items() if key not in XDIST_WORKER_VARIABLES}
    return {**env, "OMP_NUM_THREADS": str(torch.get_num_threads()), **(extra or {})}


def mnist_root_with(folder: Path, good: Path, changes: dict) -> Path:
    """A data root under ``folder`` whose MNIST files link to the sound ones in ``good`` (a ``MNIST/raw``
    folder), but for ``changes``: a file name mapped to the bytes written there (a function of ``good``),
    to None to leave the file out, or to "folder" to put a folder in its place."""
    raw = folder / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for archive, _md5 in datasets.MNIST.resources:
        name = archive.removesuffix(".gz")
        (raw / name).symlink_to(good / name)
    for name, change in changes.items():
        (raw / name).unlink(missing_ok=True)
        if change == "folder":
            (raw / name).mkdir()
        elif change is not None:
            (raw / name).write_bytes(change(good))
    return folder / "data"


def first_items(path: Path, count: int) -> bytes:
    """The idx file at ``path`` cut to its first ``count`` images or labels, its header saying so."""
    kind = idx.kind_of(path.name)
    header_size, item_size = idx.HEADER_SIZE[kind], idx.ITEM_SIZE[kind]
    content = path.read_bytes()
    return (content[:4] + count.to_bytes(4, "big") + content[8:header_size]
            + content[header_size:header_size + count * item_size])


@pytest.fixture(scope="session")
def few_test_digits_root(mnist_root, tmp_path_factory):
    """A data root with MNIST's training files and only its first ``FEW_TEST_DIGITS`` test digits, for the
    tests of the jobs: they check what a job prints and saves, and evaluating on all 10,000 digits costs
    seconds of a core per epoch (6 s for VGG on this Zen 5, several times that on an AVX2 EPYC)."""
    cut = {name: lambda good, name=name: first_items(good / name, FEW_TEST_DIGITS)
           for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    return mnist_root_with(tmp_path_factory.mktemp("few-test-digits"), data.prepare("mnist", mnist_root), cut)


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
def test_set(pytestconfig, dataset_name, mnist_root):
    """The test split of ``--dataset``, for accuracy targets (its first images in a smoke run); random
    pixels have no accuracy to reach."""
    if dataset_name == "synthetic":
        pytest.skip("synthetic data has no test accuracy to reach; use --dataset mnist or fashion-mnist")
    test_split = _load_or_fail(dataset_name, mnist_root, train=False)
    count = pytestconfig.mnistbench_test_samples
    return test_split if count is None else data.first(test_split, count)


@pytest.fixture(scope="session")
def mnist_train(mnist_root):
    """Real MNIST, whatever ``--dataset`` says: the correctness tests check real digits."""
    return _load_or_fail("mnist", mnist_root, train=True)


@pytest.fixture(scope="session")
def mnist_test(mnist_root):
    return _load_or_fail("mnist", mnist_root, train=False)


@pytest.hookimpl(tryfirst=True)  # on a pytest-xdist worker, before it reports its collection
def pytest_collection_finish(session):
    """Check the data the selected tests read, once, before the first test: a data problem stops the run
    with one message (exit status 4, pytest's usage error) instead of an error per test."""
    config = session.config
    if config.option.collectonly:
        return
    fixtures = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    needed = {config.getoption("dataset")} if fixtures.intersection(DATASET_FIXTURES) else set()
    needed |= {"mnist"} if fixtures.intersection(MNIST_FIXTURES) else set()
    try:
        for name in sorted(needed - {"synthetic"}):
            data.prepare(name, config.getoption("mnist_root"))
    except data.DataError as error:
        if hasattr(config, "workeroutput"):
            config.workeroutput[DATA_ERROR] = str(error)
        if benchmark_session := getattr(config, "_benchmarksession", None):
            benchmark_session.disabled = True  # nothing will run: no "Not saving anything" note after the message
        pytest.exit(str(error), returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    """A timed run measures each device's achievable peak before its first test, while nothing else runs, for
    fp32 (the articles' precision) and each precision the run's variants may use (utilisation figures divide
    by it); after every check of the collection (data, baselines to compare with), so that a run that cannot
    start says so at once, seconds sooner."""
    config = session.config
    if (not config.mnistbench_full or hasattr(config, "workerinput") or config.option.collectonly
            or not session.items or session.testsfailed):
        return
    for device in config.mnistbench_devices:
        for precision in dict.fromkeys(["fp32", *config.mnistbench_variant_choices["precisions"]]):
            if variants.Variant(precision).unsupported_on(device) is None:
                peaks.measured_tflops(device, precision, torch.get_num_threads())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """The pytest-xdist controller stops with the data problem the first worker found, said once, and
    gathers the fast-probe candidates each worker found broken (the controller probes nothing itself)."""
    output = getattr(node, "workeroutput", {})
    if message := output.get(DATA_ERROR):
        pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)
    node.config.stash.setdefault(BROKEN_ON_WORKERS, []).extend(output.get(BROKEN, ()))


def _broken(config) -> list[str]:
    """The fast-probe candidates that raised in this process and, on the pytest-xdist controller, its workers."""
    return fast.broken() + config.stash.get(BROKEN_ON_WORKERS, [])


@pytest.fixture(scope="session")
def epoch_samples(pytestconfig) -> int | None:
    """Samples per timed epoch (``None``: the full split); see ``pytest_configure``."""
    return pytestconfig.mnistbench_epoch_samples


@pytest.fixture(scope="session")
def accuracy_epoch_samples(pytestconfig) -> int | None:
    """Samples per epoch when training to an accuracy (``None``: the full split)."""
    return pytestconfig.mnistbench_accuracy_epoch_samples


@pytest.fixture(scope="session")
def epoch_rounds(pytestconfig) -> int:
    return pytestconfig.getoption("epoch_rounds")


@pytest.fixture(autouse=True)
def _isolate_cases():
    """After each test, the backend switches as they were before it (a test's cuDNN autotuning or TF32 must
    not leak into the next) and cached GPU memory handed back, so one case's out-of-memory cannot starve the
    next."""
    with backends.preserved():
        yield
    if torch.cuda.is_available():
        guards.free_accelerator_memory()


def pytest_benchmark_update_machine_info(config, machine_info):
    """What this machine is, the same all run long (pytest-benchmark compares it with stored runs)."""
    machine_info["mnistbench"] = machine.info()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """The run's measured peaks beside the machine info: they are measured after pytest starts."""
    output_json["mnistbench"] = {"measured_peak_tflops": peaks.measured()}
    config.mnistbench_output_json = output_json


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """A fast-probe candidate that raised is a fault of a mode the device supports: the run fails. A
    pytest-xdist worker sends its own to the controller (``pytest_testnodedown``)."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput[BROKEN] = fast.broken()
    if _broken(session.config) and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    """Candidates of the fast probe that broke; after a run on two or more devices, the GPU/CPU ratio table
    (the same code as ``mnistbench ratio``); after a data-parallel run, the scaling table."""
    if broken := _broken(config):
        terminalreporter.section("broken fast-probe candidates (the probe chose among the rest; the run fails)",
                                 red=True)
        for line in broken:
            terminalreporter.write_line(line)
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
    if not cases.timed(config):
        mode = "smoke run (benchmarks execute once, untimed)"
    elif config.mnistbench_full:
        mode = "full benchmark"
    else:
        mode = "tests and timed benchmarks (--benchmark-enable)"
    return [f"mnistbench: {mode}; devices {','.join(config.mnistbench_devices)}; "
            f"models {','.join(config.mnistbench_models)}; {config.mnistbench_matrix} matrix; "
            f"{_workers(config)} worker(s)", *_baseline_only(config)]


def _baseline_only(config) -> list[str]:
    """A line per device where the chosen variants leave the fast probe nothing but the fp32 baseline it always
    times (``--precisions tf32`` on a CPU; ``--compile compile-step`` for a one-cycle recipe), naming the cases:
    there the fast cases time that baseline. None where a variant is pinned."""
    policy = config.mnistbench_fast_policy
    if policy.pinned is not None:
        return []
    lines = []
    for device in config.mnistbench_devices:
        # the fast epochs and steps train under the article's recipe, the fast time to accuracy under its own
        bare = [f"{model} {'epochs and steps' if name == 'article' else 'time to accuracy'}"
                for model in config.mnistbench_models for name in models.RECIPES
                if not [variant for variant in policy.candidates(device, models.recipe(model, name).schedule, model)
                        if variant != Variant()]]
        if bare:
            lines.append(f"mnistbench: on {device} the chosen --precisions, --memory-formats, --compile, --optimizers "
                         f"leave the fast probe only the fp32 baseline for {', '.join(bare)}: those fast cases time it")
    return lines


def _workers(config) -> int:
    """The processes that run the tests: on a pytest-xdist worker, their count; on its controller, the workers it
    starts (none for --collect-only); else this one."""
    if hasattr(config, "workerinput"):
        return int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    if config.getoption("dist", "no") == "no" or config.getoption("collectonly", False):
        return 1
    return max(1, len(config.getoption("tx", None) or ()))  # -n N started as N, after --maxprocesses
