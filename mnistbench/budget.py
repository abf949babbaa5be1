"""A time budget for a run (``--time-budget SECONDS``), and what each case costs (a pytest plugin).

A GPU rented by the minute, or a CI job with a limit, needs the results that fit, not a run cut off with
nothing saved. With a budget the run
- puts the headline cases first (conftest, ``matrix.order``);
- starts a case only if its estimate (``mnistbench.estimate``: this machine's stored runs, else a
  conservative model) fits in the time left, and skips it otherwise with both numbers;
- at the deadline stops the running case as Ctrl-C does (the benchmarks that finished are saved, the
  interrupted one is not: ``mnistbench.storage``), lists the cases it never reached, and exits 0 when
  nothing failed (2 when the deadline fell before the first case: nothing ran).
The budget counts from pytest's configuration to the deadline; saving the results comes after it. Every
timed run prints its estimate before the first case, and every case records its whole cost as
``case_seconds``, which later runs' estimates read.
"""
import _thread
import contextlib
import dataclasses
import math
import signal
import threading
import time
from dataclasses import dataclass, field

import pytest

import models

from . import cases, data, estimate, peaks, storage, training
from .variants import Variant

# Untimed steps before a case's clock: the first, then the warm-up of each of up to two batch shapes.
WARM_UP_STEPS = 1 + 2 * training.WARM_UP_STEPS


@dataclass
class Budget:
    """A run's time budget (``seconds`` from ``started``, on the monotonic clock) and what it decides by: each
    case's estimate, as corrected by the cases that finished, and which cases were reached, run and stopped."""

    seconds: float | None  # None: no budget, only the estimates and each case's recorded cost
    started: float = field(default_factory=time.monotonic)
    estimates: dict[str, float] = field(default_factory=dict)  # node id -> seconds
    # The modelled cases (node id -> what the model prices), priced again as each is about to start: a
    # compilation measured since then replaces the allowance (``estimate.StepSpeeds.observe_compilation``).
    modelled: dict[str, estimate.Case] = field(default_factory=dict)
    # The model learns from the cases that finished: node id -> what its modelled cost is corrected by, and
    # that key -> the actual over the modelled cost of the last finished case with it (``learn``).
    learning: dict[str, tuple] = field(default_factory=dict)
    corrections: dict[tuple, float] = field(default_factory=dict)
    speeds: estimate.StepSpeeds = field(default_factory=estimate.StepSpeeds)
    benchmarks: list[str] = field(default_factory=list)  # node ids, in the order they run
    reached: list[str] = field(default_factory=list)  # node ids whose setup began (a case skipped for time too)
    running: str | None = None  # the node id whose setup or test function runs now
    stopped: str | None = None  # the one that ran at the deadline; None if it fell between cases or before them
    expired: bool = False
    timer: threading.Timer | None = None

    def left(self) -> float:
        """Seconds left before the deadline, negative past it (a run with a budget only)."""
        return self.seconds - (time.monotonic() - self.started)

    def arm(self) -> None:
        """At the deadline, interrupt the main thread as Ctrl-C would."""
        self.timer = threading.Timer(max(0.0, self.left()), self._expire)
        self.timer.daemon = True
        self.timer.start()

    def _expire(self) -> None:
        """SIGINT sent to the main thread itself, so that a sleep or a wait there is woken as by Ctrl-C (a
        signal sent to the process may reach this thread instead); where threads cannot be signalled, the
        interpreter's simulation of one, seen when the main thread next runs Python."""
        self.expired, self.stopped = True, self.running
        if hasattr(signal, "pthread_kill"):
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        else:
            _thread.interrupt_main()

    def disarm(self) -> None:
        """No deadline from now on: the saving at the end of the run must not be interrupted."""
        if self.timer is not None:
            self.timer.cancel()

    def needed(self, node_id: str) -> float | None:
        """The estimate of a case as it is about to start: stored, or modelled with what the run has measured
        so far and corrected by what the cases before it cost against their model."""
        if node_id not in self.estimates:
            return None
        if node_id in self.modelled:
            self.estimates[node_id] = estimate.modelled(self.modelled[node_id], self.speeds)
        return self.estimates[node_id] * self.corrections.get(self.learning.get(node_id), 1.0)

    def learn(self, node_id: str, seconds: float) -> None:
        """A modelled case took ``seconds``: the later cases of its key are corrected by its actual over its
        modelled cost. The model's error is mostly its step (fp32 eager measured at the start, while a fast
        case trains in the variant its probe chooses) and the same for every case of one model, device and
        setup, so the last finished case says most about the next."""
        if node_id in self.learning and self.estimates.get(node_id):
            self.corrections[self.learning[node_id]] = seconds / self.estimates[node_id]


_BUDGET = pytest.StashKey[Budget]()


def interruptible() -> None:
    """SIGINT stops this process as Ctrl-C does, even where it started ignoring it: a shell starts a background
    job (``pytest ... &``, ``nohup``) with SIGINT ignored, and Python then installs no handler, so neither the
    budget's deadline nor ``timeout -s INT`` (the lease script's cap) could stop a case. Such a job's own
    terminal sends it no Ctrl-C, so this changes nothing else. Called in the main thread."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser):
    parser.getgroup("mnistbench").addoption(
        "--time-budget", type=float, default=None, metavar="SECONDS",
        help="stop within this many seconds, headline benchmarks first: a case is started only if its estimate "
             "fits in the time left, the one running at the deadline is stopped as Ctrl-C would, the finished "
             "ones are saved and the rest listed (exit 0 when nothing failed, 2 when nothing started)")


def pytest_configure(config):
    seconds = config.getoption("time_budget")
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise pytest.UsageError(f"--time-budget must be a positive number of seconds, got {seconds:g}")
    if seconds is not None and (config.getoption("numprocesses", None) or 0) > 0:
        raise pytest.UsageError("--time-budget stops one process at its deadline: run it without -n "
                                "(pytest-xdist's workers)")
    if hasattr(config, "workerinput"):
        return
    interruptible()
    budget = Budget(seconds)
    config.stash[_BUDGET] = budget
    if seconds is not None:
        budget.arm()


def _benchmarks(items) -> list:
    """The benchmarks that will run: not those marked to skip (the nccl case on a machine without a GPU)."""
    return [item for item in items if cases.is_benchmark(item) and not item.get_closest_marker("skip")]


def pytest_report_collectionfinish(config, items):
    """Before a timed run starts: how many benchmarks it holds and roughly how long they take here (and, under
    a budget, how many of them fit)."""
    budget = config.stash.get(_BUDGET, None)
    if budget is None or not cases.timed(config) or config.option.collectonly:
        return None
    timed = _benchmarks(items)
    budget.benchmarks = [item.nodeid for item in timed]
    folder = storage.folder(config)
    devices_by_id = {item.nodeid: cases.params(item).get("device", "cpu") for item in timed}
    probed: set[tuple] = set()
    modelled = {item.nodeid: case_of(item, config, probed) for item in timed}
    budget.estimates = estimate.newest_stored(folder, list(devices_by_id), devices_by_id,
                                              {node_id: case.agrees for node_id, case in modelled.items() if case})
    from_stored = len(budget.estimates)
    for item in timed:
        case = modelled[item.nodeid]
        if case is not None and item.nodeid not in budget.estimates:
            budget.modelled[item.nodeid] = case
            budget.estimates[item.nodeid] = estimate.modelled(case, budget.speeds)
            if key := learning_key(item):
                budget.learning[item.nodeid] = key
    lines = [str(estimate.Estimate(len(timed), from_stored, len(budget.estimates) - from_stored,
                                   sum(budget.estimates.values())))]
    if budget.seconds is not None:
        lines.append(_fitting(budget, [item.nodeid for item in timed]))
    return lines


def _fitting(budget: Budget, node_ids: list[str]) -> str:
    """How many of the cases ``node_ids`` fit in the budget by their estimates, as the run will decide (a case
    that does not fit is skipped, the next one tried), with the minutes of those that fit and of those left out:
    a total far over the budget beside most cases fitting is a few long cases."""
    fitting, left, left_out = [], budget.left(), []
    for node_id in node_ids:
        needed = budget.estimates.get(node_id, 0.0)
        if needed <= left:
            fitting.append(needed)
            left -= needed
        else:
            left_out.append(needed)
    line = (f"mnistbench: time budget {budget.seconds:g} s: by these estimates {len(fitting)} of {len(node_ids)} fit "
            f"(about {sum(fitting) / 60:.0f} min), headline benchmarks first")
    if left_out:
        line += f"; {len(left_out)} left out would need about {sum(left_out) / 60:.0f} min"
    return line + "; the deadline stops the one still running"


MODELLED_TESTS = ("test_epoch", "test_step", "test_time_to_accuracy", "test_distributed")


def case_of(item, config, probed: set[tuple]) -> estimate.Case | None:
    """What the benchmark ``item`` will do, for the model of its cost, or None for a test the model does not
    know. ``probed`` holds the keys of the fast probes an earlier case of the run pays (model, device, batch
    and candidates, as ``fast.choose`` keys them: one probe serves every case with the same key)."""
    params, test = cases.params(item), cases.test(item)
    if test not in MODELLED_TESTS or "model_name" not in params:
        return None
    model, device = params["model_name"], params.get("device", "cpu")
    if test == "test_step":
        batch, variant = params["batch_size"], params["step_variant"]
        # after the clock, against a measured peak (not a listed GPU's data sheet), as many turns with the peak's
        # product as the rounds' minimum (``peaks.in_turns``): a step and one of the peak's timings each (about
        # ``peaks.PROBE_SECONDS``)
        rounds = config.getoption("benchmark_min_rounds")
        turns = 0 if peaks.datasheet_lists(device) else rounds
        steps = rounds + WARM_UP_STEPS + turns
        compiled = variant != "fast" and Variant.parse(variant).compiles
        forward = params.get("mode") == "forward"  # inference: its images priced as evaluated ones
        case = estimate.Case(item.nodeid, model, device, batch, 0 if forward else steps,
                             images_evaluated=steps * batch if forward else 0, compilations=int(compiled),
                             timed_seconds=float(config.getoption("benchmark_max_time")) + turns * peaks.PROBE_SECONDS)
        return _with_probe(case, variant == "fast", config, probed, models.recipe(model).schedule)
    if test == "test_time_to_accuracy":
        recipe = models.recipe(model, params["recipe_name"])
        samples = config.mnistbench_accuracy_epoch_samples or recipe.epoch_samples(data.TRAIN_IMAGES)
        epochs = config.getoption("seeds") * recipe.epochs  # all of them: a seed may need every one
        evaluations = epochs if recipe.judged_by == "target" else config.getoption("seeds")  # a schedule's at its end
        case = estimate.Case(item.nodeid, model, device, recipe.batch_size,
                             epochs * math.ceil(samples / recipe.batch_size) + WARM_UP_STEPS,
                             images_decoded=epochs * samples if params["recipe_name"] == "article" else 0,
                             images_evaluated=evaluations * (config.mnistbench_test_samples or data.TEST_IMAGES),
                             agrees=(("samples", samples), ("seeds", config.getoption("seeds")),
                                     ("batch_size", recipe.batch_size), *recipe.stored_fields().items()))
        return _with_probe(case, params["recipe_name"] == "fast", config, probed, recipe.schedule)
    recipe = models.recipe(model)
    samples = config.mnistbench_epoch_samples or data.TRAIN_IMAGES
    per_epoch = math.ceil(samples / recipe.batch_size)
    if test == "test_distributed":
        return estimate.Case(item.nodeid, model, device, recipe.batch_size, per_epoch + WARM_UP_STEPS, launches=1)
    rounds = config.getoption("epoch_rounds")
    case = estimate.Case(item.nodeid, model, device, recipe.batch_size, rounds * per_epoch + WARM_UP_STEPS,
                         images_decoded=rounds * samples if params.get("setup") == "reference" else 0,
                         agrees=(("samples", samples), ("rounds", rounds)))
    return _with_probe(case, params.get("setup") == "fast", config, probed, recipe.schedule)


def learning_key(item) -> tuple | None:
    """The cases a modelled case learns from (``Budget.learn``): the epochs and times to accuracy of the same
    model and device, in the fast setup or not. Steps neither teach nor learn: their cost is mostly
    pytest-benchmark's calibration, not their steps."""
    params, test = cases.params(item), cases.test(item)
    if test not in ("test_epoch", "test_time_to_accuracy"):
        return None
    fast = "fast" in (params.get("setup"), params.get("recipe_name"))
    return params["model_name"], params.get("device", "cpu"), fast


def _with_probe(case: estimate.Case, fast_setup: bool, config, probed: set[tuple], schedule: str) -> estimate.Case:
    """``case`` plus the fast probe it pays, if it is the first of the run at its key and nothing pins the
    variant, and one compilation of the variant the probe may choose."""
    policy = config.mnistbench_fast_policy
    if not fast_setup or policy.pinned is not None:
        return case
    candidates = policy.candidates(case.device, schedule, case.model)  # the schedule's: compile-step needs a constant rate
    key = (case.model, case.device, policy.probe_batch_for(case.batch_size), frozenset(map(str, candidates)))
    compiled = len({variant.compile for variant in candidates if variant.compiles})
    if key in probed:
        return dataclasses.replace(case, compilations=case.compilations + bool(compiled))
    probed.add(key)
    # the native eager candidates, then the matmul twin of each (none for a model without small maps:
    # FastPolicy.candidates), and the captured step on each of them (it compiles nothing)
    eager = sum(variant.compile == "eager" for variant in candidates)
    eager *= 2 if any(variant.compile != "eager" and not variant.compiles for variant in candidates) else 1
    return dataclasses.replace(case, probe_candidates=(eager, compiled),
                                        compilations=case.compilations + bool(compiled))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Under a budget, a benchmark whose estimate does not fit in the time left is not started."""
    budget = item.config.stash.get(_BUDGET, None)
    if budget is None:
        return
    budget.reached.append(item.nodeid)
    needed = budget.needed(item.nodeid)
    if budget.seconds is not None and needed is not None and needed > (left := budget.left()):
        pytest.skip(f"time budget: {item.name} not started, about {needed:.0f} s needed and {max(left, 0):.0f} s "
                    f"left of {budget.seconds:g} s")
    budget.running = item.nodeid  # from its setup on: a deadline in a module's fixture stops this case


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """The whole cost of a case that returned, stored with its result (``case_seconds``) for later estimates and
    learnt from (one that failed, was skipped out of memory or was stopped says nothing of it); a compilation it
    measured replaces the model's allowance for the rest of the run. After its call, no case runs."""
    budget = item.config.stash.get(_BUDGET, None)
    if budget is None:
        return (yield)
    start, benchmark = time.perf_counter(), getattr(item, "funcargs", {}).get("benchmark")
    try:
        result = yield
    finally:
        budget.running = None  # set in its setup
    if benchmark is not None:
        seconds = time.perf_counter() - start
        benchmark.extra_info["case_seconds"] = seconds
        if (needed := budget.needed(item.nodeid)) is not None:
            benchmark.extra_info["estimated_seconds"] = needed  # as it was when the case started
        budget.learn(item.nodeid, seconds)
        info = benchmark.extra_info
        if Variant.from_info(info).compiles and info.get("first_step_seconds"):
            budget.speeds.observe_compilation(info["model"], info["device"], info["first_step_seconds"])
    return result


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item):
    """A case's teardown, as the time between cases, stops no case (one skipped in its setup ends here too)."""
    budget = item.config.stash.get(_BUDGET, None)
    if budget is not None:
        budget.running = None


@contextlib.contextmanager
def _one_line_at_the_deadline(session):
    """The deadline's interruption ends the run with one line (``pytest.exit``) saying when it fell, before the
    first case or while the cases ran (as the summary says), not Ctrl-C's banner and the frame it stopped in; a
    user's Ctrl-C stays as it is."""
    try:
        yield
    except KeyboardInterrupt:
        budget = session.config.stash.get(_BUDGET, None)
        if budget is None or not budget.expired:
            raise
        when = "while the cases ran" if budget.reached else "before the first case"
        pytest.exit(f"mnistbench: time budget of {budget.seconds:g} s reached {when}: the run stopped as Ctrl-C "
                    f"would")


@pytest.hookimpl(wrapper=True)
def pytest_collection(session):
    """A deadline while collecting (nothing ran)."""
    with _one_line_at_the_deadline(session):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session):
    """A deadline before the first case's setup (the look at the machine, the peaks: nothing ran), in a case, its
    setup, or between two."""
    with _one_line_at_the_deadline(session):
        return (yield)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    """After the deadline stopped a run: which case it stopped and which it never reached."""
    budget = config.stash.get(_BUDGET, None)
    if budget is None or not budget.expired:
        return
    terminalreporter.section(f"time budget of {budget.seconds:g} s reached")
    if budget.stopped:
        terminalreporter.write_line(f"mnistbench: stopped {budget.stopped} at the deadline, as Ctrl-C would: the "
                                    f"benchmarks that finished before it are saved")
    elif not budget.reached:
        terminalreporter.write_line("mnistbench: the deadline fell before the first case (while collecting, looking "
                                    "at the machine or estimating): nothing ran; give the run a longer budget")
    else:
        terminalreporter.write_line("mnistbench: the deadline fell while no case ran (between two) and stopped the "
                                    "run as Ctrl-C would: the benchmarks that finished are saved")
    for node_id in budget.benchmarks:
        if node_id not in budget.reached:
            terminalreporter.write_line(f"mnistbench: not run (time budget): {node_id}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session):
    """The deadline cannot interrupt the saving; a run stopped by its budget with nothing failed exits 0, but one
    stopped before its first case stays interrupted: nothing ran."""
    budget = session.config.stash.get(_BUDGET, None)
    if budget is not None:
        budget.disarm()
        if budget.expired and session.exitstatus == pytest.ExitCode.INTERRUPTED and not session.testsfailed \
                and budget.reached:
            session.exitstatus = pytest.ExitCode.OK
    return (yield)
