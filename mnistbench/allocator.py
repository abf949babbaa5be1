"""The C allocator's state, controlled and recorded, so that a result does not depend on what ran before it.

glibc's malloc moves its mmap threshold (and with it the trim threshold, twice as large) up each time a
process frees a large block, and returns the top of its heap to the system whenever more than the trim
threshold is free there. The same training step then costs page faults in one process and none in another:
measured on a Zen 5 VM, VGGNet's fp32 step at batch 128 took 75-85 ms with 12,000-17,000 minor page faults
per step in a fresh process, 70-72 ms after a few large matrix products had run first, and 59-60 ms with
none when the thresholds were fixed (issue 20). So at the start of every process that times something the
thresholds are pinned (``pin``: ``mallopt``, which also switches the dynamic threshold off), before each
case whatever the cases before it left free is handed back (``trim``: ``malloc_trim``), and each result
stores its minor page faults per step or epoch (``FaultWatcher``, ``faults_per``): a steady state shows
none. ``state`` says what was done, for the run's machine info. Where the C library is not glibc (macOS,
musl), nothing is pinned and ``state`` says so.

A pytest plugin too (conftest.py lists it): pins at configure, trims before each benchmark, and records ``state`` in
the machine info (``machine_info["mnistbench"]["allocator"]``).
"""
import ctypes
import ctypes.util
import functools
import platform
import resource

import pytest

from . import cases, watch

# mallopt's parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# Blocks of 32 MiB and more come from mmap and go back to the system when freed; smaller ones stay in the
# heap. 32 MiB is the largest value glibc accepts on 64-bit machines (HEAP_MAX_SIZE / 2) and the value its
# dynamic threshold ends at anyway, after some history: pinned, it is there from the first allocation on.
MMAP_THRESHOLD = 32 * 2**20
# -1: the top of the heap is never handed back while a case runs (mallopt's documented "disable trimming";
# the issue measured 16 GiB, which mallopt's int argument cannot hold). ``trim`` hands it back between cases.
TRIM_THRESHOLD = -1


class _Pinned:
    """What ``pin`` did in this process (the last call's outcome)."""

    done: bool = False
    why_not: str | None = "pin() was not called: glibc's own dynamic thresholds"


@functools.cache
def _glibc():
    """The C library, if it is glibc; else None."""
    if platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def pin() -> None:
    """Fix glibc's mmap and trim thresholds for the rest of this process (``MMAP_THRESHOLD``, ``TRIM_THRESHOLD``);
    where that cannot be done, ``state`` says why."""
    libc = _glibc()
    if libc is None:
        _Pinned.done, _Pinned.why_not = False, f"the C library is {platform.libc_ver()[0] or 'unknown'}, not glibc"
        return
    accepted = [libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
    _Pinned.done = all(accepted)
    _Pinned.why_not = None if _Pinned.done else "glibc's mallopt refused the thresholds"


def trim() -> None:
    """Hand back to the system whatever memory the heap holds free (``malloc_trim(0)``), so that a case starts
    with the memory it needs still to be faulted in, whatever the cases before it left behind."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def state() -> dict:
    """The allocator's state as this process runs its cases, for the machine info: fixed once ``pin`` ran."""
    malloc = " ".join(filter(None, platform.libc_ver())) or "unknown"
    if not _Pinned.done:
        return {"malloc": malloc, "pinned": False, "why": _Pinned.why_not}
    return {"malloc": malloc, "pinned": True, "mmap_threshold_bytes": MMAP_THRESHOLD,
            "trim_threshold": "never while a case runs (mallopt M_TRIM_THRESHOLD -1)",
            "between_cases": "malloc_trim(0) before each benchmark"}


def minor_faults() -> int:
    """Minor page faults of this process and its waited-for children so far (``getrusage``)."""
    return sum(resource.getrusage(who).ru_minflt for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


class FaultWatcher:
    """Minor page faults while a case's rounds run (``mnistbench.watch``): the untimed setup before each round
    and a time to accuracy's evaluations, paused, are left out."""

    def __init__(self, device: str, read=minor_faults):
        self.read, self.faults, self.since = read, 0, None

    def start(self) -> None:
        self.since = self.read()

    def lap(self) -> None:
        pass

    def pause(self) -> None:
        self.faults += self.read() - self.since

    def resume(self) -> None:
        self.since = self.read()

    def stop(self) -> dict:
        self.pause()
        return {"minor_faults": self.faults}


watch.register(FaultWatcher)


def faults_per(info: dict, unit: str, count: int) -> dict:
    """``{"minor_faults_per_<unit>": faults}`` from a case's watched ``info`` over the ``count`` steps or epochs
    it watched (the rounds alone, ``FaultWatcher``): a steady state shows about none. Empty when nothing was
    counted."""
    if "minor_faults" not in info or count < 1:
        return {}
    return {f"minor_faults_per_{unit}": round(info["minor_faults"] / count, 1)}


# pytest hooks: conftest.py loads this module as a plugin.
@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    pin()


@pytest.hookimpl(tryfirst=True)  # before the case's fixtures allocate anything
def pytest_runtest_setup(item):
    """Before each benchmark (the other tests time nothing, and each trim costs the next test its faults)."""
    if cases.is_benchmark(item):
        trim()


@pytest.hookimpl(trylast=True)  # after conftest's, which sets machine_info["mnistbench"]
def pytest_benchmark_update_machine_info(config, machine_info):
    """The state every case of the run ran in: fixed at configure, so the machine info stays the same all run."""
    machine_info.setdefault("mnistbench", {})["allocator"] = state()
