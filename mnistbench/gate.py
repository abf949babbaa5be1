"""The gate: a timed run compared with this machine's stored runs, each benchmark with its own newest result.

pytest-benchmark's ``--benchmark-compare`` loads, while pytest configures, one stored file (the newest of the
machine-id folder, such as ``Linux-CPython-3.11-64bit``, which every machine with that OS and Python shares,
or the run named) and compares every benchmark with that file alone. On this suite's histories that goes
wrong in several ways: a newest file holding other benchmarks (a time-to-accuracy run) compares nothing,
says nothing, and ``--benchmark-compare-fail`` then passes; with nothing stored the gate fails only after
the whole run; its machine check prints both machine infos on one line of 5,000 characters whenever any
field differs (on one machine too: the current CPU clock py-cpuinfo reads), a warning that ``-W error`` turns
into a crash, as does a storage outside the working folder; and a regression ends in a traceback.

Here pytest-benchmark gets neither option, so it loads nothing, and its ``compared_mapping`` is filled
before it prepares its tables: each benchmark that ran with its newest stored result of the same machine
identity (``machine.identity``: the CPU with its threads, or the GPU whatever its driver: a baseline stored
before a driver upgrade is what the gate judges the upgrade against, as one before a torch upgrade), or with
``--benchmark-compare=NUM``
with its result in that run (another machine said on one line). Its tables show those pairs, its
``--benchmark-compare-fail`` checks judge them here, and the verdict is one line. A gate with nothing
stored for any selected benchmark is refused before the first one runs; the benchmarks without a stored
result are named then, and again in the verdict.
"""
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pytest_benchmark.storage.file import FileStorage
from pytest_benchmark.utils import PercentageRegressionCheck

from . import cases, machine
from .reports import pairs, results

# The statistics pytest-benchmark's tables and --benchmark-compare-fail read from a stored result.
STATS_FIELDS = ("min", "max", "mean", "median", "stddev", "iqr")


@dataclass(frozen=True)
class Request:
    """What the command line asked: ``compare`` True (each benchmark's newest stored result of this machine)
    or the run to compare with (pytest-benchmark's NUM or glob); ``checks``, pytest-benchmark's parsed
    ``--benchmark-compare-fail`` expressions (none: compare without gating)."""

    compare: bool | str
    checks: tuple = ()

    @property
    def named(self) -> bool:
        return self.compare is not True

    def stored_where(self, storage) -> str:
        """Where the results compared with are, for the messages: the run named in ``storage``, or ``storage``."""
        return f"run {self.compare} in {storage}" if self.named else f"{storage}"


@dataclass
class Verdict:
    """The gate's outcome over the benchmarks that finished: those compared, those with nothing stored to
    compare with, and one line per regression."""

    compared: list[str]
    uncompared: list[str]
    regressions: list[str] = field(default_factory=list)

    def lines(self, request: Request) -> list[str]:
        """What the run says of ``request``: the benchmarks not compared, then, where it gates
        (``--benchmark-compare-fail``), the verdict on one line: every regression, or failed for comparing
        nothing, or passed with how many were compared."""
        lines = []
        if self.uncompared:
            lines.append(f"mnistbench: compare: not compared, nothing stored of this machine and configuration (images "
                         f"per round, dataset, seeds...) to compare with: {', '.join(self.uncompared)}")
        if not request.checks:
            return lines
        limits = " ".join(_expression(check) for check in request.checks)
        if self.regressions:
            lines.append(f"mnistbench: gate failed ({limits}): {'; '.join(self.regressions)}")
        elif not self.compared:
            lines.append(f"mnistbench: gate failed ({limits}): no benchmark of this run was compared with a stored result")
        else:
            lines.append(f"mnistbench: gate passed ({limits}): {len(self.compared)} benchmark(s) compared")
        return lines

    @property
    def failed(self) -> bool:
        return bool(self.regressions or not self.compared)


def _expression(check) -> str:
    """A pytest-benchmark check as written on the command line, e.g. ``median:10%``."""
    unit = "%" if isinstance(check, PercentageRegressionCheck) else ""
    return f"{check.field}:{check.threshold:g}{unit}"


def identity(machine_info, extra_info) -> str | None:
    """``machine.identity`` of a stored or current result less a GPU's driver, or None where its fields cannot
    say (a hand-edited or foreign file: any field may hold any JSON type)."""
    try:
        return machine.identity(machine_info, extra_info, with_driver=False)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):
        return None


def usable(stored) -> bool:
    """Whether a stored benchmark has the statistics pytest-benchmark's table and checks read, as numbers."""
    stats = stored.get("stats") if isinstance(stored, dict) else None
    return isinstance(stats, dict) and all(
        isinstance(stats.get(name), (int, float)) and math.isfinite(stats[name]) for name in STATS_FIELDS)


def stored_runs(storage, request: Request) -> tuple[list[tuple[Path, dict]], list[str]]:
    """pytest-benchmark's stored runs of this machine id through its own storage, oldest first (its order, by
    file name): all of them, or those ``request`` names; and one line per file it could not read.

    ``pytest.UsageError`` for a run named that cannot be compared with: a name pytest-benchmark cannot read as
    one (a path of three parts), a run stored but unreadable (with why), or none stored (naming the runs of its
    folder that are)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            runs = list(storage.load(request.compare) if request.named else storage.load())
        except ValueError as error:  # pytest-benchmark's FileStorage.query, on a name it cannot read
            raise pytest.UsageError(f"--benchmark-compare={request.compare}: {error}") from None
    unread = [str(warning.message) for warning in caught]
    if request.named and not runs:
        if unread:
            raise pytest.UsageError(f"--benchmark-compare={request.compare}: no stored run it names could be read: "
                                    f"{'; '.join(unread)}")
        raise pytest.UsageError(f"--benchmark-compare={request.compare}: {_not_stored(storage, request.compare)}")
    return runs, [f"mnistbench: compare: {line}" for line in unread]


def _not_stored(storage, name: str) -> str:
    """Why the run ``name`` (NUM, or FOLDER/NUM for another machine id's folder) found nothing, with the runs of
    that folder that are stored; a storage other than files (Elasticsearch) is only said to hold none."""
    if not isinstance(storage, FileStorage):
        return "no stored run matches it"
    folder, _, _ = name.rpartition("/")
    where = storage.path / (folder or storage.default_machine_id or "")
    runs = storage.query(f"{folder}/" * bool(folder) + "[0-9][0-9][0-9][0-9]_")
    numbers = [path.name.partition("_")[0] for path in runs]
    stored = (f"the stored runs are {', '.join(numbers[-5:])}" + (f" (of {len(numbers)})" if len(numbers) > 5 else "")
              if numbers else "none is stored")
    return f"no stored run in {where} matches it; {stored}"


def baseline(runs, fullname: str, wanted) -> tuple[Path, dict, dict] | None:
    """The newest stored result of ``fullname`` in ``runs`` (oldest first) with usable statistics that
    ``wanted(machine_info, stored_benchmark)`` accepts, as (file, its machine info, the stored benchmark);
    None if there is none."""
    for path, run in reversed(runs):
        for stored in run.get("benchmarks") or ():
            if isinstance(stored, dict) and stored.get("fullname") == fullname and usable(stored) \
                    and wanted(run.get("machine_info"), stored):
                return path, run.get("machine_info"), stored
    return None


def same_hardware(here: dict, request: Request):
    """Before the run: a stored result is this machine's if it would have the same identity had it been made
    here (its own threads on both sides: the threads a benchmark uses are known once it ran)."""
    def wanted(machine_info, stored):
        if request.named:
            return True
        ours = identity(here, stored.get("extra_info"))
        return ours is not None and identity(machine_info, stored.get("extra_info")) == ours
    return wanted


def same_configuration(bench, stored) -> bool:
    """Whether a stored benchmark ran the configuration of the finished ``bench``: as the reports pair runs
    (``reports.pairs.differing``: images per round, dataset, seeds, recipe...; in a fast case the variant its
    probe chose may differ). A 1,024-image epoch is no regression of a 256-image one. The library
    versions may differ: an upgrade is what the gate judges."""
    theirs = {**results.STORED_DEFAULTS, **(stored.get("extra_info") or {})}
    ours = {**results.STORED_DEFAULTS, **bench.extra_info}
    stored_params = results.current_params(results.test_function(stored["fullname"]), stored.get("params") or {}, theirs)
    fast = results.is_fast(getattr(bench, "params", None) or {}) and results.is_fast(stored_params)
    return not pairs.differing(ours, theirs, fast)


def comparable(bench, now: str | None, request: Request):
    """After the run: a stored result is comparable with the finished ``bench`` if it ran its configuration, and
    on the machine ``now`` (its identity) unless the run compared with was named."""
    def wanted(machine_info, stored):
        return same_configuration(bench, stored) and (
            request.named or (now is not None and identity(machine_info, stored.get("extra_info")) == now))
    return wanted


def compared_mapping(runs, benchmarks, here: dict, request: Request) -> dict[Path, dict[str, dict]]:
    """pytest-benchmark's ``compared_mapping`` (stored file -> fullname -> stored benchmark) pairing each of
    ``benchmarks`` (its finished ``Metadata``) with its baseline; benchmarks without one are left out."""
    mapping = {}
    for bench in benchmarks:
        found = baseline(runs, bench.fullname, comparable(bench, identity(here, bench.extra_info), request))
        if found:
            path, _machine_info, stored = found
            mapping.setdefault(path, {})[bench.fullname] = stored
    return mapping


def other_machines(runs, nodeids, here: dict, request: Request) -> list[str]:
    """With a named run: one line per other machine whose results it would be compared with."""
    seen = {}
    for nodeid in nodeids:
        if found := baseline(runs, nodeid, same_hardware(here, request)):
            path, machine_info, stored = found
            theirs, ours = identity(machine_info, stored.get("extra_info")), identity(here, stored.get("extra_info"))
            if theirs != ours:
                seen[(run_number(path), theirs, ours)] = None
    return [f"mnistbench: compare: run {run} is from another machine: {theirs} (this one: {ours})"
            for run, theirs, ours in seen]


def run_number(path) -> str:
    """A stored file's run number, e.g. ``0005`` for ``Linux-CPython-3.11-64bit/0005_<commit>_<date>.json``."""
    return Path(path).name.split("_")[0]


def judge(benchmarks, mapping, checks) -> Verdict:
    """Each finished benchmark against its stored result (``mapping``) with pytest-benchmark's own checks."""
    verdict = Verdict([], [])
    for bench in benchmarks:
        found = next(((path, stored[bench.fullname]) for path, stored in mapping.items() if bench.fullname in stored),
                     None)
        if found is None:
            verdict.uncompared.append(bench.name)
            continue
        verdict.compared.append(bench.name)
        path, stored = found
        for check in checks:
            if check.fails(bench, stored["stats"]):
                verdict.regressions.append(
                    f"{bench.name} {check.field} {bench[check.field]:.4g} s against {stored['stats'][check.field]:.4g} s "
                    f"in run {run_number(path)}, {_change(check, bench, stored['stats'])}")
    return verdict


def _change(check, bench, stored_stats) -> str:
    value = check.compute(bench, stored_stats)
    if isinstance(check, PercentageRegressionCheck):
        return f"{value:+.1f}% (limit {check.threshold:g}%)"
    return f"{value:+.4g} s (limit {check.threshold:g} s)"


# pytest hooks: conftest.py loads this module as a plugin.
_REQUEST = pytest.StashKey[Request]()
_RUNS = pytest.StashKey[list]()
_HERE = pytest.StashKey[dict]()
_VERDICT = pytest.StashKey[Verdict]()


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's own pytest_configure (trylast) loads a stored file
def pytest_configure(config):
    compare, checks = config.getoption("benchmark_compare"), config.getoption("benchmark_compare_fail")
    config.option.benchmark_compare, config.option.benchmark_compare_fail = [], None
    if compare == "":  # an unset shell variable: not the option left out, nor its newest-run form (no value)
        raise pytest.UsageError("--benchmark-compare= is empty: name a run (NUM), or give the option without a value "
                                "to compare each benchmark with this machine's newest stored result")
    if not (compare or checks):
        return
    if not compare:
        raise pytest.UsageError("--benchmark-compare-fail gates this run against stored results: add --benchmark-compare")
    if not cases.timed(config):
        raise pytest.UsageError(f"--benchmark-compare compares timings, and {cases.UNTIMED}")
    config.stash[_REQUEST] = Request(compare, tuple(checks or ()))


def _write(config, lines) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    for line in lines if reporter else ():
        reporter.write_line(line, yellow=True)


@pytest.hookimpl(tryfirst=True)  # a refusal before the estimates and the look at the machine are printed
def pytest_collection_finish(session):
    """Before the first benchmark: what this run will be compared with, or a refused gate."""
    config = session.config
    request = config.stash.get(_REQUEST, None)
    benchmark_session = getattr(config, "_benchmarksession", None)
    if request is None or config.option.collectonly or benchmark_session is None or benchmark_session.disabled:
        return
    try:
        runs, lines = stored_runs(benchmark_session.storage, request)
    except pytest.UsageError:
        benchmark_session.disabled = True  # nothing will run: no note of a results file after the message
        raise
    here = benchmark_session.get_machine_info()
    selected = [item for item in session.items if cases.is_benchmark(item)]
    missing = [item.name for item in selected if baseline(runs, item.nodeid, same_hardware(here, request)) is None]
    lines += other_machines(runs, [item.nodeid for item in selected], here, request)
    where = request.stored_where(benchmark_session.storage.path)
    if request.checks and len(missing) == len(selected):
        benchmark_session.disabled = True  # nothing will run: no "Not saving anything" note after the message
        _write(config, lines)
        what = f"the {len(selected)} selected benchmark(s)" if selected else "anything: no benchmark is selected"
        raise pytest.UsageError(
            f"--benchmark-compare-fail: nothing stored of this machine in {where} to compare {what} with; "
            f"store a baseline first: the same command without --benchmark-compare and --benchmark-compare-fail")
    config.stash[_RUNS], config.stash[_HERE] = runs, here
    if missing:
        lines.append(f"mnistbench: compare: nothing stored of this machine in {where} for {len(missing)} of "
                     f"{len(selected)} benchmark(s), which run uncompared: {', '.join(missing)}")
    _write(config, lines)


@pytest.hookimpl(wrapper=True, tryfirst=True)  # before pytest-benchmark's own wrapper prepares its tables
def pytest_sessionfinish(session):
    config = session.config
    request = config.stash.get(_REQUEST, None)
    benchmark_session = getattr(config, "_benchmarksession", None)
    gating = request is not None and _RUNS in config.stash
    if gating:
        benchmark_session.compared_mapping = compared_mapping(config.stash[_RUNS], benchmark_session.benchmarks,
                                                              config.stash[_HERE], request)
    result = yield
    if gating and request.checks and _verdict(config).failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    return result


def _verdict(config) -> Verdict:
    """The gate's verdict over the benchmarks whose tests passed (those the run saves), judged once."""
    if _VERDICT not in config.stash:
        benchmark_session = config._benchmarksession
        config.stash[_VERDICT] = judge(benchmark_session.benchmarks, benchmark_session.compared_mapping,
                                       config.stash[_REQUEST].checks)
    return config.stash[_VERDICT]


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's tables
def pytest_terminal_summary(terminalreporter, config):
    if config.stash.get(_REQUEST, None) is not None and _RUNS in config.stash:
        _write(config, _verdict(config).lines(config.stash[_REQUEST]))
