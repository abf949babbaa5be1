"""How quiet the machine was while a case ran, and a look at it before a timed run (a watcher and a plugin).

A shared virtual machine can make one run 20-50% slower than the next and nothing in the result says so
(issue 20: with a few commands running beside the suite GoogLeNet's fast step took 112 ms against 54-58 ms
alone). So every timed case records, over its rounds (``Watcher``, registered in ``mnistbench.watch``):
- this process's CPU time, user and system, and its involuntary context switches, its waited-for children
  (torchrun and its ranks) included (``getrusage``);
- the CPU time the rest of the machine used: ``/proc/stat``'s busy time less this process tree's, and the
  time the hypervisor gave this VM's CPUs to others (steal), each as a share of the machine's CPU time;
- on an NVIDIA GPU its SM clock and the reasons NVML gives for holding it down, where readable;
- a canary: a fixed small matrix product timed before, between and after the rounds. A VM's own speed can
  drift where no counter shows it (the same step took 57-60 ms in one process and 88-99 ms in the next,
  with almost no steal time), and the canary's best time drifts with it. A whole run on a slower machine
  drifts nowhere, so the canary is also held against this machine identity's stored runs.
A case beyond any limit (``OTHERS_LIMIT``, ``STEAL_LIMIT``, ``CANARY_DRIFT_LIMIT``, ``GPU_SLOWDOWNS``) is
``disturbed``; ``disturbed_by`` says by what, ``quiet`` holds the figures and the limits.

As a plugin (conftest.py lists it): a timed run starts with a short look at the machine (``look``: load,
the busiest other processes, the CPU frequency governor, steal, the canary), printed before its first case and
stored with the run (as pyperf's ``system show`` and TorchBench's machine checks do), and ends naming the
disturbed benchmarks.
"""
import functools
import math
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest
import torch

from . import allocator, cases, machine, nvml, storage, watch
from .reports import results

# The limits. A disturbance costs a result about its share of the machine's CPU time when the case's threads
# use every core, as the suite's CPU cases do. 3% is under half the 7% that ``mnistbench history`` calls a
# regression, so no change it flags is within what an unflagged disturbance can explain; this project's VM's
# own daemons used under 0.1% whenever nothing else ran. Involuntary context switches are recorded, not
# judged: their quiet level depends on the kernel's tick and the threads' count, and the CPU time the rest of
# the machine used measures the same competition directly.
OTHERS_LIMIT = 0.03  # the share of the machine's CPU time that other processes used
STEAL_LIMIT = 0.03  # the share of the machine's CPU time the hypervisor gave to other guests
# The canary: a fixed 256 x 256 fp32 matrix product on the CPU with this process's threads (as the cases use
# them), repeated for ``CANARY_SECONDS``, its fastest repeat kept: a passing interruption does not move the
# best of several hundred repeats, a slower machine does. Its readings are compared with each other. On the
# 2-core Intel Xeon VM of docs/measured.md with nothing else running, 15 readings 2 s apart between VGGNet
# training steps spread by 110% at 20 ms a reading (a whole 20 ms window of the VM now and then runs at half
# speed) and by 36% at 0.1 s (0.109 to 0.149 ms), while the steps' median over each 2 s spread by 26%; at
# 20 ms and a 30% limit, 3 of 13 quiet cases of the quick matrix were flagged. The drifts issue 20 describes
# are 50% and more (57-60 ms against 88-99 ms a step). A drift over 50% flags the case: past the quiet
# spread at 0.1 s, at the smallest of those.
CANARY_DRIFT_LIMIT = 0.50
CANARY_SIZE = 256  # about 0.11 ms on 2 cores with AVX-512: some thousand repeats per reading, in the caches
CANARY_SECONDS = 0.1  # per reading: 3 or more readings per case cost under half a second
SMOKE_CANARY_SECONDS = 0.002  # per reading in an untimed run, where the readings judge nothing
canary_window = CANARY_SECONDS  # seconds per reading now: the plugin shortens it for an untimed run
# The canary of this machine identity's stored runs (``stored_canary_seconds``), which a timed run's readings
# must not exceed by more than ``CANARY_DRIFT_LIMIT`` either: the second run on a lent H200's host read 28.8
# ms before and during its cases where the first had read 0.04 ms, its readings agreeing with each other, and
# GoogLeNet's reference epoch took 2.2 times as long; nothing flagged it. Set by the plugin for a timed run.
stored_canary: float | None = None
# NVML's reasons for a lower clock that mean the GPU was slowed (heat, an external power brake, a hardware
# slowdown); a GPU at its own power cap (``sw_power_cap``), idle, or at set clocks runs as designed, and its
# result is that GPU's speed: recorded, not flagged.
GPU_SLOWDOWNS = ("hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")
GPU_CLOCK_EVENTS = ("gpu_idle", "applications_clocks_setting", "sw_power_cap", "hw_slowdown", "sync_boost",
                    "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown", "display_clock_setting")
LOOK_SECONDS = 0.5  # the look before a timed run: long enough for a busy process to show, short to wait
BUSIEST = 3  # other processes named in the look
PROC = Path("/proc")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc's unit of CPU time
CPUFREQ = Path("/sys/devices/system/cpu")


def own_usage() -> tuple[float, float, int]:
    """User and system CPU seconds and involuntary context switches of this process and its waited-for
    children (``getrusage``)."""
    usages = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return (sum(u.ru_utime for u in usages), sum(u.ru_stime for u in usages), sum(u.ru_nivcsw for u in usages))


def read_proc_stat() -> str | None:
    """``/proc/stat``'s text, or None where it cannot be read (not Linux): what the rest of the machine used is
    then left out, neither recorded nor judged."""
    try:
        return (PROC / "stat").read_text()
    except OSError:
        return None


def machine_times(text: str, ticks_per_second: int) -> tuple[float, float, int]:
    """Busy and steal CPU seconds of the whole machine, and its CPU count, from ``/proc/stat``'s text: busy is
    user + nice + system + irq + softirq (guest time is inside user), steal apart, idle and iowait left
    out. ``ValueError`` if the text has no ``cpu`` line."""
    lines = text.splitlines()
    total = next((line.split()[1:] for line in lines if line.startswith("cpu ")), None)
    if total is None:
        raise ValueError("/proc/stat has no 'cpu' line")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in (total + ["0"] * 8)[:8])
    cores = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    return (user + nice + system + irq + softirq) / ticks_per_second, steal / ticks_per_second, max(cores, 1)


@functools.cache
def _canary_operands() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.rand(CANARY_SIZE, CANARY_SIZE, generator=generator) for _ in range(2))
    return a, b, torch.empty(CANARY_SIZE, CANARY_SIZE)


def canary_seconds() -> float:
    """The fastest of ``CANARY_SIZE``-square fp32 matrix products on the CPU with this process's threads,
    repeated for ``canary_window`` seconds, into a buffer made once (the canary allocates nothing)."""
    a, b, out = _canary_operands()
    best, end = math.inf, time.perf_counter() + canary_window
    while True:
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        finished = time.perf_counter()
        best = min(best, finished - start)
        if finished > end:
            return best


def _event_bits(library) -> dict[str, int]:
    """NVML's clock-event (formerly throttle-reason) bits by our names, in either spelling pynvml has."""
    bits = {}
    for name in GPU_CLOCK_EVENTS:
        camel = "".join(part.capitalize() for part in name.split("_"))  # gpu_idle: ...ReasonGpuIdle
        for prefix in ("nvmlClocksEventReason", "nvmlClocksThrottleReason"):
            if hasattr(library, prefix + camel):
                bits[name] = getattr(library, prefix + camel)
                break
    return bits


def gpu_reader(device: str) -> Callable[[], tuple[int, list[str]]] | str:
    """A reader of ``device``'s SM clock (MHz) and the clock events NVML names now, which raises
    ``nvml.Unavailable`` when NVML fails; or why there is none."""
    try:
        library, handle = nvml.handle(device)
    except nvml.Unavailable as why:
        return str(why)
    bits = _event_bits(library)
    events = getattr(library, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        library.nvmlDeviceGetCurrentClocksThrottleReasons

    def read() -> tuple[int, list[str]]:
        try:
            mask = events(handle)
            clock = library.nvmlDeviceGetClockInfo(handle, library.NVML_CLOCK_SM)
        except library.NVMLError as error:
            raise nvml.Unavailable(f"NVML cannot read the clocks of {device}: {error}") from None
        return clock, [name for name, bit in bits.items() if mask & bit]

    try:
        read()
    except nvml.Unavailable as why:
        return str(why)
    return read


@dataclass(frozen=True)
class Readers:
    """Where the figures come from; the tests give fakes."""

    clock: Callable[[], float] = time.monotonic
    usage: Callable[[], tuple[float, float, int]] = own_usage
    stat: Callable[[], str | None] = read_proc_stat
    ticks_per_second: int = TICKS_PER_SECOND
    canary: Callable[[], float] = canary_seconds
    gpu: Callable[[str], Callable[[], tuple[int, list[str]]] | str] = gpu_reader


@dataclass(frozen=True)
class Counters:
    """Running totals at one moment, or the difference of two (``machine`` None where ``/proc/stat`` is
    not readable)."""

    seconds: float
    user: float
    system: float
    switches: int
    machine: tuple[float, float] | None  # busy and steal CPU seconds of the whole machine
    cores: int = 1

    @classmethod
    def read(cls, readers: Readers) -> "Counters":
        user, system, switches = readers.usage()
        text, machine, cores = readers.stat(), None, os.cpu_count() or 1
        if text is not None:
            busy, steal, cores = machine_times(text, readers.ticks_per_second)
            machine = (busy, steal)
        return cls(readers.clock(), user, system, switches, machine, cores)

    def __sub__(self, other: "Counters") -> "Counters":
        machine = None if self.machine is None or other.machine is None else \
            (self.machine[0] - other.machine[0], self.machine[1] - other.machine[1])
        return Counters(self.seconds - other.seconds, self.user - other.user, self.system - other.system,
                        self.switches - other.switches, machine, self.cores)

    def __add__(self, other: "Counters") -> "Counters":
        machine = None if self.machine is None or other.machine is None else \
            (self.machine[0] + other.machine[0], self.machine[1] + other.machine[1])
        return Counters(self.seconds + other.seconds, self.user + other.user, self.system + other.system,
                        self.switches + other.switches, machine, max(self.cores, other.cores))


ZERO = Counters(0.0, 0.0, 0.0, 0, (0.0, 0.0), cores=0)  # the sum of no spans


def figures(span: Counters) -> dict:
    """What ``span`` (the difference of two readings) says: this process tree's CPU time and switches, and the
    shares of the machine's CPU time that other processes and the hypervisor took."""
    found = {"seconds": round(span.seconds, 3), "cpu_user_seconds": round(span.user, 3),
             "cpu_system_seconds": round(span.system, 3), "involuntary_switches": span.switches, "cores": span.cores}
    if span.machine is None:
        found["machine"] = "not readable: no /proc/stat"
        return found
    capacity = span.seconds * span.cores
    others = max(0.0, span.machine[0] - span.user - span.system)  # /proc/stat counts in ticks: never below 0
    found.update(others_cpu_seconds=round(others, 3), steal_seconds=round(span.machine[1], 3),
                 others_share=round(others / capacity, 4) if capacity > 0 else 0.0,
                 steal_share=round(span.machine[1] / capacity, 4) if capacity > 0 else 0.0)
    return found


def drift(canary: list[float]) -> float:
    """How far the canary's slowest reading is above its fastest, relative to the fastest; 0 with one reading."""
    return max(canary) / min(canary) - 1 if len(canary) > 1 and min(canary) > 0 else 0.0


def stored_canary_seconds(folder) -> float | None:
    """The median of the best canary reading of each CPU case stored under ``folder`` by this machine identity
    (``machine.identity_here("cpu")``: the same processor and threads), in seconds; None where none is."""
    here = machine.identity_here("cpu")
    best = [min(readings) / 1e3 for result in results.load_quietly(folder)
            if result.machine == here and result.extra_info.get("device") == "cpu"
            and isinstance(watched := result.extra_info.get("quiet"), dict)
            and isinstance(readings := watched.get("canary_ms"), list) and readings
            and all(isinstance(value, (int, float)) and value > 0 for value in readings)]
    return statistics.median(best) if best else None


def over_stored(seconds: float) -> dict:
    """How far a canary reading of ``seconds`` is above the stored runs' (``stored_canary``), relative to theirs,
    as the figure ``judge`` reads; nothing where no run is stored."""
    return {"canary_over_stored": round(seconds / stored_canary - 1, 4)} if stored_canary else {}


def judge(found: dict) -> list[str]:
    """The reasons a case with the figures ``found`` (``figures``, and the canary's and GPU's) was disturbed,
    one per limit passed, each with its figure and the limit; none when it ran quiet."""
    reasons = []
    if found.get("others_share", 0.0) > OTHERS_LIMIT:
        reasons.append(f"other processes used {found['others_share']:.1%} of the machine's CPU time "
                       f"(limit {OTHERS_LIMIT:.0%})")
    if found.get("steal_share", 0.0) > STEAL_LIMIT:
        reasons.append(f"the hypervisor took {found['steal_share']:.1%} of the CPU time (steal; limit {STEAL_LIMIT:.0%})")
    if found.get("canary_drift", 0.0) > CANARY_DRIFT_LIMIT:
        reasons.append(f"the canary drifted {found['canary_drift']:.1%} between its readings (limit "
                       f"{CANARY_DRIFT_LIMIT:.0%}): the machine's speed changed")
    if found.get("canary_over_stored", 0.0) > CANARY_DRIFT_LIMIT:
        reasons.append(f"the canary's best reading was {found['canary_over_stored']:.1%} slower than in this "
                       f"machine's stored runs (limit {CANARY_DRIFT_LIMIT:.0%}): the machine was slower than then")
    slowed = [event for event in found.get("gpu_clock_events", []) if event in GPU_SLOWDOWNS]
    if slowed:
        reasons.append(f"the GPU was slowed: {', '.join(slowed)}")
    return reasons


LIMITS = {"others_share": OTHERS_LIMIT, "steal_share": STEAL_LIMIT, "canary_drift": CANARY_DRIFT_LIMIT,
          "canary_over_stored": CANARY_DRIFT_LIMIT, "gpu_clock_events": list(GPU_SLOWDOWNS)}


class Watcher:
    """How quiet the machine was over a case's rounds (``mnistbench.watch``): counters summed over the
    watched spans (a time-to-accuracy run's evaluations left out), the canary read before the first round,
    before each later one and after the last, the GPU's clock at each of those moments."""

    def __init__(self, device: str, readers: Readers = Readers()):
        self.readers, self.device = readers, device
        self.total, self.since = ZERO, None
        self.canary: list[float] = []
        self.laps = 0
        self.gpu = readers.gpu(device) if torch.device(device).type == "cuda" else None
        self.clocks: list[int] = []
        self.events: set[str] = set()

    def _read_gpu(self) -> None:
        """The GPU's clock and events now; a reading NVML fails (a transient error mid-case) ends the GPU's
        readings with the reason, keeping those before it, and never fails the case."""
        if callable(self.gpu):
            try:
                clock, events = self.gpu()
            except nvml.Unavailable as why:
                self.gpu = f"{why} (reading failed during the rounds)"
                return
            self.clocks.append(clock)
            self.events.update(events)

    def start(self) -> None:
        self.canary.append(self.readers.canary())
        self._read_gpu()
        self.since = Counters.read(self.readers)

    def lap(self) -> None:
        self.laps += 1
        if self.laps > 1:  # the first round begins right after ``start``'s reading
            self.canary.append(self.readers.canary())
            self._read_gpu()

    def pause(self) -> None:
        self.total = self.total + (Counters.read(self.readers) - self.since)

    def resume(self) -> None:
        self.since = Counters.read(self.readers)

    def stop(self) -> dict:
        self.pause()
        self._read_gpu()
        self.canary.append(self.readers.canary())
        found = figures(self.total)
        found.update(canary_ms=[round(seconds * 1e3, 3) for seconds in self.canary],
                     canary_drift=round(drift(self.canary), 4), **over_stored(min(self.canary)))
        if isinstance(self.gpu, str):
            found["gpu"] = f"not read: {self.gpu}"
        if self.clocks:
            found.update(gpu_sm_clock_mhz=[min(self.clocks), max(self.clocks)],
                         gpu_clock_events=sorted(self.events))
        reasons = judge(found)
        return {"disturbed": bool(reasons), "disturbed_by": reasons, "quiet": {**found, "limits": LIMITS}}


watch.register(Watcher)


# The look before a timed run.
def process_times(proc: Path = PROC) -> dict[int, tuple[str, float]]:
    """``{pid: (name, CPU seconds so far)}`` of every process ``/proc`` shows (those that vanish meanwhile,
    or cannot be read, left out)."""
    found = {}
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        name, _, rest = text.partition(" (")[2].rpartition(")")  # the name may hold spaces and parentheses
        values = rest.split()
        if len(values) > 12:
            found[int(entry.name)] = (name, (int(values[11]) + int(values[12])) / TICKS_PER_SECOND)
    return found


def busiest(before: dict, after: dict, seconds: float, exclude: set[int], count: int = BUSIEST) -> list[str]:
    """The ``count`` processes that used the most CPU between two ``process_times`` readings ``seconds`` apart,
    as ``name (pid N) P% of a core``, leaving out ``exclude``d pids and those that used none."""
    used = [(after[pid][1] - before[pid][1], pid, after[pid][0]) for pid in after.keys() & before.keys()
            if pid not in exclude]
    top = sorted((entry for entry in used if entry[0] > 0), reverse=True)[:count]
    return [f"{name} (pid {pid}) {cpu / seconds:.0%} of a core" for cpu, pid, name in top]


def governors(root: Path = CPUFREQ) -> str:
    """The CPU frequency governors in use, e.g. ``performance`` or ``powersave on 2 CPUs, performance on 2``;
    where ``cpufreq`` is absent (most VMs), who sets the clock instead."""
    found: dict[str, int] = {}
    for path in sorted(root.glob("cpu[0-9]*/cpufreq/scaling_governor")):
        try:
            governor = path.read_text().strip()
        except OSError:
            continue
        found[governor] = found.get(governor, 0) + 1
    if not found:
        return "not readable (no cpufreq governor in /sys: on a VM the host sets the clock)"
    if len(found) == 1:
        return next(iter(found))
    return ", ".join(f"{governor} on {count} CPUs" for governor, count in found.items())


@dataclass
class Look:
    """What a look at the machine found (``look``)."""

    load: list[float] | None
    cores: int
    busiest: list[str]
    governor: str
    canary_ms: float
    figures: dict = field(default_factory=dict)
    disturbed_by: list[str] = field(default_factory=list)
    allocator: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def _stored(self) -> str:
        if "canary_over_stored" not in self.figures:
            return "; none stored by this machine"
        return f"; {1 + self.figures['canary_over_stored']:.2f}x this machine's stored runs"

    def lines(self) -> list[str]:
        """The look as printed before the first case; a last line only when the machine is not quiet."""
        load = " ".join(f"{value:.2f}" for value in self.load) if self.load else "not readable"
        machine = (f"other processes used {self.figures['others_share']:.1%} of its CPU time (limit "
                   f"{OTHERS_LIMIT:.0%}), steal {self.figures['steal_share']:.1%} (limit {STEAL_LIMIT:.0%})"
                   if "others_share" in self.figures else self.figures.get("machine", ""))
        pinned = ("thresholds pinned" if self.allocator.get("pinned") else
                  f"not pinned ({self.allocator.get('why')})")
        lines = [f"mnistbench: the machine over {LOOK_SECONDS:g} s: load {load} on {self.cores} CPUs; {machine}",
                 f"mnistbench: busiest other processes: {', '.join(self.busiest) or 'none used the CPU'}",
                 f"mnistbench: CPU frequency governor: {self.governor}; canary {self.canary_ms:.3g} ms (a "
                 f"{CANARY_SIZE}x{CANARY_SIZE} fp32 matrix product, the best of {CANARY_SECONDS:g} s of repeats"
                 f"{self._stored()}); {self.allocator.get('malloc', 'malloc')} {pinned}"]
        if self.disturbed_by:
            lines.append(f"mnistbench: the machine is not quiet ({'; '.join(self.disturbed_by)}): benchmarks run "
                         f"like this are flagged disturbed")
        return lines


def look(readers: Readers = Readers(), proc: Path = PROC, cpufreq: Path = CPUFREQ,
         sleep: Callable[[float], None] = time.sleep) -> Look:
    """A short look at the machine before a timed run: load averages, the CPU time others used over
    ``LOOK_SECONDS`` and the busiest of them, steal, the CPU frequency governor, the canary and the
    allocator's state."""
    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        load = None
    processes, counters = process_times(proc), Counters.read(readers)
    sleep(LOOK_SECONDS)
    span = Counters.read(readers) - counters
    canary = readers.canary()
    found = {**figures(span), **over_stored(canary)}
    return Look(load, span.cores, busiest(processes, process_times(proc), span.seconds, {os.getpid()}),
                governors(cpufreq), canary * 1e3, found, judge(found), allocator.state())


def disturbed(benchmarks) -> list[str]:
    """``name: reasons`` of every disturbed benchmark among pytest-benchmark's ``benchmarks``."""
    return [f"{bench.name}: {'; '.join(bench.extra_info.get('disturbed_by') or ['disturbed'])}"
            for bench in benchmarks if bench.extra_info.get("disturbed")]


# pytest hooks: conftest.py loads this module as a plugin.
_LOOK = pytest.StashKey[Look]()


def pytest_configure(config):
    """An untimed run (the test command's smoke run) reads the canary for ``SMOKE_CANARY_SECONDS``: its
    readings judge nothing there, and a tenth of a second each would add seconds to every case. No stored
    canary is held until a timed run's collection reads one (``pytest_report_collectionfinish``)."""
    global canary_window, stored_canary
    canary_window = CANARY_SECONDS if cases.timed(config) else SMOKE_CANARY_SECONDS
    stored_canary = None  # until a timed run's collection reads the stored runs


def pytest_report_collectionfinish(config, items):
    """A timed run's look at the machine, once its benchmarks are collected and their data found, before the
    first of them."""
    if not cases.timed(config) or config.option.collectonly or not any(map(cases.is_benchmark, items)):
        return None
    global stored_canary
    stored_canary = stored_canary_seconds(storage.folder(config))
    config.stash[_LOOK] = found = look()
    return found.lines()


@pytest.hookimpl(trylast=True)  # after conftest's, which sets output_json["mnistbench"]
def pytest_benchmark_update_json(config, benchmarks, output_json):
    if _LOOK in config.stash:
        output_json.setdefault("mnistbench", {})["machine_check"] = config.stash[_LOOK].as_dict()


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled:
        return
    if lines := disturbed(session.benchmarks):
        terminalreporter.section("disturbed benchmarks (the machine was not quiet: compare them with care)",
                                 yellow=True)
        for line in lines:
            terminalreporter.write_line(line)
