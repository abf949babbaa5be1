"""Saving a run's results under the checkout's ``results/``: only benchmarks that finished, and never half a file.

pytest-benchmark 5 saves, at the end of the session, every benchmark its fixture started, even after
Ctrl-C: the interrupted one with the rounds it had done, as if it were a result; or, interrupted before
its first round, nothing at all (its empty statistics raise ``ValueError: min() arg is an empty
sequence`` and the finished benchmarks are lost with it). It also keeps the timing of a test that failed
or skipped after timing. And it writes the file in place, so a kill or a full disk midway leaves a
truncated JSON file in the history. Here only the benchmarks of tests that passed are saved, through a
temporary file renamed into place. SIGTERM (``timeout``'s default signal, a cancelled CI job, ``docker stop``),
which would kill the run with nothing saved, stops it as Ctrl-C does. Where the results are to go (the storage,
``--benchmark-json``, a histogram's writer) is checked before the first benchmark, not after the last; an
option that writes timings in a smoke run, which times nothing, is refused (pytest-benchmark writes nothing).

pytest.ini's ``--benchmark-storage=results`` would be relative to the folder pytest starts in: started from
``benchmarks/``, a run would begin a second history in ``benchmarks/results/`` (and even ``--collect-only``
would create it). A relative storage given in pytest.ini is therefore taken relative to pytest's rootdir, the
checkout; one given on the command line stays relative to the working folder, as any path argument.
"""
import importlib.util
import os
import shlex
from pathlib import Path

import pytest
from pytest_benchmark.storage.file import FileStorage
from pytest_benchmark.utils import safe_dumps

from . import atomic, cases, interrupts


class AtomicFileStorage(FileStorage):
    """pytest-benchmark's file storage, writing each run through a temporary file and a rename."""

    def save(self, output_json, save):
        output_file = self.get(f"{self._next_num}_{save}.json")
        with atomic.replacing(output_file) as partial:  # a name no '*.json' pattern of the readers matches
            partial.write_bytes(safe_dumps(output_json, ensure_ascii=True, indent=4).encode())
        self.logger.info(f"Saved benchmark data in: {output_file}")


def make_atomic(benchmark_session) -> None:
    """Give pytest-benchmark's session the atomic file storage; other storages (Elasticsearch) stay."""
    storage = benchmark_session.storage
    if type(storage) is FileStorage:
        benchmark_session.storage = AtomicFileStorage(storage.path, storage.logger, storage.default_machine_id)


def keep_finished(benchmarks: list, passed: set[str]) -> list[str]:
    """Remove from ``benchmarks`` (pytest-benchmark's list, in place) those whose test is not in
    ``passed``, the node ids of tests that passed; returns the removed benchmarks' names."""
    dropped = [bench.name for bench in benchmarks if bench.fullname not in passed]
    benchmarks[:] = [bench for bench in benchmarks if bench.fullname in passed]
    return dropped


def storage_in(args) -> str | None:
    """The ``--benchmark-storage`` that the arguments ``args`` give (the last one), or None."""
    value = None
    for index, arg in enumerate(args):
        if arg.startswith("--benchmark-storage="):
            value = arg.partition("=")[2]
        elif arg == "--benchmark-storage" and index + 1 < len(args):
            value = args[index + 1]
    return value


def in_checkout(config) -> str:
    """The run's ``--benchmark-storage``, a relative folder from pytest.ini made relative to the rootdir. One
    given on the command line (or in ``PYTEST_ADDOPTS``, pytest's extra command-line arguments) is left as
    given, even where it names pytest.ini's folder."""
    storage = config.getoption("benchmark_storage")
    folder = storage.removeprefix("file://")
    given = [*shlex.split(os.environ.get("PYTEST_ADDOPTS", "")), *config.invocation_params.args]
    if storage_in(given) is not None or storage_in(config.getini("addopts")) is None or "://" in folder \
            or Path(folder).is_absolute():
        return storage
    return str(config.rootpath / folder)


def folder(config) -> str:
    """The folder the run stores its results in (``--benchmark-storage``, after ``pytest_configure``), as a path."""
    return str(config.getoption("benchmark_storage")).removeprefix("file://")


# pytest hooks: conftest.py loads this module as a plugin.
_PASSED = pytest.StashKey[set]()


_SIGTERM_BEFORE = pytest.StashKey[object]()


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's own pytest_configure opens (and creates) the folder
def pytest_configure(config):
    if not folder(config).strip():  # an unset shell variable: pytest-benchmark would save in the working folder
        raise pytest.UsageError("--benchmark-storage is empty: name a folder, or leave the option out for results/")
    if folder(config).startswith("elasticsearch+") and importlib.util.find_spec("elasticsearch") is None:
        raise pytest.UsageError("--benchmark-storage: an Elasticsearch storage needs the elasticsearch package, which "
                                "is not installed: pip install 'pytest-benchmark[elasticsearch]', or name a folder")
    config.option.benchmark_storage = in_checkout(config)
    if not cases.timed(config):  # pytest-benchmark would write nothing, and say nothing
        for option, does in (("benchmark_json", "writes timings"), ("benchmark_save", "saves timings"),
                             ("benchmark_histogram", "draws timings")):
            if config.getoption(option, None):
                raise pytest.UsageError(f"--{option.replace('_', '-')} {does}, and {cases.UNTIMED}")
    config.stash[_SIGTERM_BEFORE] = interrupts.sigterm_as_ctrl_c()


def pytest_unconfigure(config):
    interrupts.restore(config.stash.get(_SIGTERM_BEFORE, None))


def check_writable(benchmark_session) -> None:
    """``UsageError`` if the run is to save its results where it cannot write, or draw a histogram it cannot:
    said before the first benchmark, not after the last (pytest-benchmark writes ``--benchmark-json`` first,
    and its failure there would lose the storage's file too)."""
    if benchmark_session.disabled:
        return
    storage = benchmark_session.storage
    saving = benchmark_session.save or benchmark_session.autosave
    if saving and isinstance(storage, FileStorage) and not (storage.path.is_dir() and os.access(storage.path, os.W_OK)):
        raise pytest.UsageError(f"--benchmark-storage: {storage.path} is not a writable folder, "
                                f"so this run could not save its results")
    if benchmark_session.json:
        path = Path(benchmark_session.json)
        if path.is_dir() or not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            raise pytest.UsageError(f"--benchmark-json: {path} is not a file this run could write (a folder, or in a "
                                    f"folder that is missing or not writable)")
    if benchmark_session.histogram and importlib.util.find_spec("pygal") is None:
        raise pytest.UsageError("--benchmark-histogram draws with pygal, which is not installed: "
                                "pip install 'pytest-benchmark[histogram]', or leave the option out")


def pytest_sessionstart(session):
    if benchmark_session := getattr(session.config, "_benchmarksession", None):
        make_atomic(benchmark_session)
        check_writable(benchmark_session)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A case stopped (Ctrl-C, SIGTERM, a time budget's deadline) is marked as pytest-benchmark marks a skipped
    test's fixture: stopped before its rounds (in its probe or warm-up), it would be warned of as "not used at
    all", as of a fault (the mark changes nothing else: the run saves only the cases that passed)."""
    try:
        return (yield)
    except KeyboardInterrupt:
        if (benchmark := getattr(item, "funcargs", {}).get("benchmark")) is not None:
            benchmark.skipped = True
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.passed:
        item.config.stash.setdefault(_PASSED, set()).add(item.nodeid)
    return report


@pytest.hookimpl(wrapper=True, tryfirst=True)  # before pytest-benchmark's own wrapper saves the run
def pytest_sessionfinish(session):
    config = session.config
    benchmark_session = getattr(config, "_benchmarksession", None)
    if benchmark_session and not benchmark_session.disabled:
        dropped = keep_finished(benchmark_session.benchmarks, config.stash.get(_PASSED, set()))
        lines = [f"mnistbench: not saved: {name}: its test did not pass (interrupted, failed or skipped)"
                 for name in dropped]
        saving = benchmark_session.save or benchmark_session.autosave or benchmark_session.json
        if saving and not benchmark_session.benchmarks:
            if not config.option.collectonly:
                lines.append("mnistbench: no benchmark finished, so this run writes no results file")
            # Instead of pytest-benchmark's "Not saving anything" warning, which -W error turns into a crash.
            benchmark_session.disabled = True
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        for line in lines if reporter else ():
            reporter.write_line(line, yellow=True)
    return (yield)
