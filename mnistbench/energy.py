"""Energy: the joules a case's timed rounds cost, read from the counters the hardware keeps and never estimated
from a rated power (the way estimating tools report zero, negative or constant energy).

- A GPU: NVML's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``: millijoules since the driver
  loaded, Volta and newer), through ``mnistbench.nvml``.
- The CPU: RAPL through Linux's powercap, every package domain (``/sys/class/powercap/intel-rapl:N``, named
  ``package-N``; Linux lists AMD's RAPL under the same name) and its DRAM subdomain where there is one:
  ``energy_uj`` in microjoules, which wraps past ``max_energy_range_uj``. A background reading every
  ``RAPL_POLL_SECONDS`` sees every wrap (AMD's counter wraps after about 65 kJ: two minutes at 500 W).
- Anything else, or a counter that cannot be read: ``energy_source: "unavailable"`` and why.

The watcher (registered in ``watch``, innermost) synchronises the device and reads the counter wherever the timed
rounds start, stop or pause, and counts only the rounds: not the setup between them, not a time to accuracy's
evaluation. A counter is only as fine as its updates: NVML's is refreshed every 20 to 100 ms (measured here
once per GPU, ``update_period``), RAPL's about every millisecond. A reading may lag by up to one update, so the
energy of one unbroken stretch of rounds may be off by up to one update's worth; over R stretches lasting S
seconds in all, by up to R x update / S of it (``energy_error_bound``). Beyond ``MAX_ERROR_BOUND`` the figures
are left out with the reason (``energy_left_out``). The figures per round and per image are the average power
over the counted stretches times pytest-benchmark's own times (``figures``): a step benchmark's rounds are one
window, in which pytest-benchmark also calibrates and runs untimed iterations, so its energy divided by the
timed images would over-count.

Rounds too short for the counter (a GPU's fast epoch of 60 ms against NVML's 100 ms) are measured again in a
window of their own (``own_window``): the same work repeated back to back after the timed rounds, untimed,
until the window lasts ``OWN_WINDOW_UPDATES`` of the counter's updates, as MLPerf Power measures over a
window long enough for its meter rather than over one short run.
"""
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import devices, nvml, watch

POWERCAP = Path("/sys/class/powercap")
# The largest error the figures may carry from the counter's updates before they are left out.
MAX_ERROR_BOUND = 0.1
# RAPL's counters update about every millisecond (Intel's Software Developer's Manual; AMD's alike).
RAPL_UPDATE_SECONDS = 0.001
# How often RAPL is read in the background, far within its shortest wrap (2^32 units of 15.3 uJ on AMD).
RAPL_POLL_SECONDS = 10.0
# NVML's energy counter refreshes every 20 to 100 ms; the longest stands where the period cannot be measured.
NVML_UPDATE_SECONDS = 0.1
# A window of its own lasts this many of the counter's updates: over one unbroken stretch, a bound of 5%.
OWN_WINDOW_UPDATES = 20
# Changes of NVML's counter timed to measure its update period, within at most this many seconds.
UPDATE_CHANGES, UPDATE_LIMIT_SECONDS = 3, 1.0


class NoCounter(RuntimeError):
    """No energy counter can be read for a device here; the message says why."""


def unavailable(reason: str) -> dict:
    """The fields of a result whose energy is not measured, and why."""
    return {"energy_source": "unavailable", "energy_unavailable_reason": reason}


class RaplDomain:
    """One RAPL domain's counter (``energy_uj`` of a powercap zone), accumulated across wraps since it was
    opened, in microjoules; ``NoCounter`` where the files cannot be read."""

    def __init__(self, zone: Path, label: str):
        self.zone, self.label = zone, label
        self.range_uj = self._read("max_energy_range_uj")
        self.last = self._read("energy_uj")
        self.total = 0

    def _read(self, name: str) -> int:
        path = self.zone / name
        try:
            return int(path.read_text())
        except PermissionError:
            raise NoCounter(f"{path} is readable by root only (Linux 5.10 and later, since CVE-2020-8694): run as "
                            f"root or make the RAPL files readable (chmod a+r) to measure energy") from None
        except (OSError, ValueError) as error:
            raise NoCounter(f"{path} cannot be read: {error}") from None

    def read(self) -> int:
        """Microjoules since opened. The counter runs from 0 to ``max_energy_range_uj`` and wraps to 0; it must
        be read at least once per wrap."""
        now = self._read("energy_uj")
        self.total += (now - self.last) % (self.range_uj + 1)
        self.last = now
        return self.total


def _zone_key(zone: Path) -> tuple[int, ...]:
    """``intel-rapl:1:0`` sorts as (1, 0): package 10 after package 9."""
    return tuple(int(number) for number in zone.name.split(":")[1:])


def rapl_domains(root: Path) -> list[RaplDomain]:
    """Every package domain under the powercap folder ``root`` and its DRAM subdomain, opened; ``NoCounter``
    saying why there is none. The platform domain (``psys``) and the MMIO copy of the package domain
    (``intel-rapl-mmio``) would count the package twice and are left out."""
    if not root.is_dir():
        raise NoCounter(f"no {root}: this kernel lists no RAPL counter (no intel_rapl driver, or a virtual machine "
                        f"that does not pass RAPL through)")
    found = []
    for zone in sorted((z for z in root.iterdir() if re.fullmatch(r"intel-rapl:\d+", z.name)), key=_zone_key):
        package = _name(zone)
        if not package.startswith("package"):
            continue
        found.append(RaplDomain(zone, package))
        for sub in sorted((s for s in zone.iterdir() if re.fullmatch(rf"{re.escape(zone.name)}:\d+", s.name)),
                          key=_zone_key):
            if _name(sub) == "dram":
                found.append(RaplDomain(sub, f"{package}/dram"))
    if not found:
        raise NoCounter(f"{root} holds no RAPL package domain (intel-rapl:N named package-N)")
    return found


def _name(zone: Path) -> str:
    try:
        return (zone / "name").read_text().strip()
    except OSError as error:
        raise NoCounter(f"{zone / 'name'} cannot be read: {error}") from None


class Rapl:
    """The CPU packages' energy and their DRAM's, from RAPL through powercap (``rapl_domains``)."""

    source = "rapl"
    resolution_joules = 1e-6  # energy_uj counts microjoules (the hardware's own unit is 15 to 61 of them)
    poll_seconds: float | None = RAPL_POLL_SECONDS

    def __init__(self, root: Path):
        self.opened = rapl_domains(root)
        self.domains = tuple(domain.label for domain in self.opened)
        self.description = f"RAPL through {root}: {', '.join(self.domains)}"
        self.lock = threading.Lock()  # the watcher and its background reading both read

    def read(self) -> tuple[float, ...]:
        """Joules of each domain since opened."""
        with self.lock:
            return tuple(domain.read() * 1e-6 for domain in self.opened)

    def update_seconds(self) -> tuple[float, str]:
        """How often the counter updates, in seconds, and how that is known: RAPL's documented interval."""
        return RAPL_UPDATE_SECONDS, "RAPL's update interval, about 1 ms (Intel's manual), not measured"


class Nvml:
    """One NVIDIA GPU's energy, from NVML's total-energy counter (millijoules since the driver loaded)."""

    source = "nvml"
    resolution_joules = 1e-3
    poll_seconds: float | None = None  # 64 bits of millijoules do not wrap
    domains = ("gpu",)
    measured_periods: dict[str, float | None] = {}  # per device, measured once per process

    def __init__(self, device: str):
        try:
            self.library, self.handle = nvml.handle(device)
        except nvml.Unavailable as error:
            raise NoCounter(str(error)) from None
        self.device = device
        self.description = f"NVML nvmlDeviceGetTotalEnergyConsumption of {device}"
        self.read()

    def read(self) -> tuple[float]:
        try:
            return (self.library.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000,)
        except self.library.NVMLError as error:
            hint = (" (the total-energy counter needs a Volta or newer GPU, and is not read per MIG instance)"
                    if isinstance(error, self.library.NVMLError_NotSupported) else "")
            raise NoCounter(f"NVML reads no energy of {self.device}: {error}{hint}") from None

    def update_seconds(self) -> tuple[float, str]:
        """How often the counter updates, in seconds, and how that is known: measured once per device and process
        (``update_period``), else NVML's longest period."""
        if self.device not in self.measured_periods:
            self.measured_periods[self.device] = update_period(lambda: self.read()[0])
        measured = self.measured_periods[self.device]
        if measured is None:
            return NVML_UPDATE_SECONDS, (f"not measured (the counter changed fewer than {UPDATE_CHANGES + 1} times in "
                                         f"{UPDATE_LIMIT_SECONDS:g} s): NVML's longest, 100 ms")
        return measured, f"measured: the longest of {UPDATE_CHANGES} intervals between changes of the counter"


def update_period(read: Callable[[], float], clock: Callable[[], float] = time.perf_counter) -> float | None:
    """A counter's update period in seconds: the longest of ``UPDATE_CHANGES`` intervals between changes of
    ``read()``, read in a tight loop; None when it changes fewer times within ``UPDATE_LIMIT_SECONDS``."""
    start = clock()
    last, changed = read(), []
    while len(changed) <= UPDATE_CHANGES and clock() - start < UPDATE_LIMIT_SECONDS:
        value = read()
        if value != last:
            changed.append(clock())
            last = value
    if len(changed) <= UPDATE_CHANGES:
        return None
    return max(later - earlier for earlier, later in zip(changed, changed[1:]))


def counter(device: str):
    """The energy counter of ``device`` (``Rapl`` under ``POWERCAP`` for the CPU, ``Nvml`` for a CUDA GPU);
    ``NoCounter`` saying why there is none."""
    kind = torch.device(device).type
    if kind == "cpu":
        return Rapl(POWERCAP)
    if kind == "cuda":
        return Nvml(device)
    raise NoCounter(f"no energy counter is read on {device}: only NVIDIA GPUs (NVML) and CPUs with RAPL "
                    f"(Linux powercap) count energy here")


class _Poller:
    """Reads a counter every ``seconds`` on a daemon thread, so that no wrap of it goes unseen."""

    def __init__(self, read: Callable[[], object], seconds: float):
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(read, seconds), daemon=True, name="mnistbench-energy")
        self.thread.start()

    def _run(self, read, seconds) -> None:
        while not self.stopping.wait(seconds):
            try:
                read()
            except NoCounter:
                return  # the watcher's next reading fails too, and says why

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()


@dataclass(frozen=True)
class Segment:
    """Energy and time between two readings while the watcher runs."""

    window: int  # 0 before the first lap (setup, not counted where rounds lap), else the round's number
    stretch: int  # the unbroken stretch of readings (from a start or resume to a pause or stop) it belongs to
    joules: tuple[float, ...]  # per domain of the counter
    seconds: float


class EnergyWatcher:
    """``watch.Watcher`` of a device's energy: ``counter`` read around the rounds, or ``reason`` it has none."""

    def __init__(self, device: str, counter=None, reason: str | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.device, self.counter, self.failed, self.clock = device, counter, reason, clock
        self.segments: list[Segment] = []
        self.laps = self.stretch = 0  # the laps so far number the round being read
        self.mark: tuple[float, tuple[float, ...]] | None = None  # (time, joules) of the last reading, when running
        self.poller: _Poller | None = None

    def _reading(self) -> tuple[float, tuple[float, ...]] | None:
        """(time, joules per domain), the device synchronised; None once the counter has failed."""
        if self.failed:
            return None
        devices.synchronize(self.device)
        try:
            return self.clock(), self.counter.read()
        except NoCounter as error:
            self.failed = f"{error} (reading failed during the rounds)"
            return None

    def _cut(self) -> None:
        """End the current segment at a reading, which starts the next."""
        now = self._reading()
        if now is not None and self.mark is not None:
            joules = tuple(end - begin for begin, end in zip(self.mark[1], now[1]))
            self.segments.append(Segment(self.laps, self.stretch, joules, now[0] - self.mark[0]))
        self.mark = now

    def start(self) -> None:
        self.mark = self._reading()
        if self.mark is not None and self.counter.poll_seconds:
            self.poller = _Poller(self.counter.read, self.counter.poll_seconds)

    def lap(self) -> None:
        if self.mark is not None:
            self._cut()
        self.laps += 1

    def pause(self) -> None:
        if self.mark is not None:
            self._cut()
            self.mark = None

    def resume(self) -> None:
        self.stretch += 1
        self.mark = self._reading()

    def stop(self) -> dict:
        if self.mark is not None:
            self._cut()
        if self.poller is not None:
            self.poller.stop()
        if self.failed:
            return unavailable(self.failed)
        counted = [segment for segment in self.segments if segment.window > 0 or not self.laps]
        try:
            return measured(self.counter, counted)
        except NoCounter as error:  # while measuring the counter's update period
            return unavailable(str(error))


def measured(counter, counted: list[Segment]) -> dict:
    """The fields of the ``counted`` segments' energy, read by ``counter``: the counter, each round's joules and
    seconds, each domain's joules, the error bound, and the average power where the bound allows."""
    update, method = counter.update_seconds()
    rounds = sorted({segment.window for segment in counted})
    seconds = sum(segment.seconds for segment in counted)
    domain_joules = [sum(segment.joules[index] for segment in counted) for index in range(len(counter.domains))]
    joules = sum(domain_joules)
    stretches = len({segment.stretch for segment in counted})
    info = {
        "energy_source": counter.source, "energy_counter": counter.description,
        "energy_resolution_joules": counter.resolution_joules, "energy_update_seconds": update,
        "energy_update_method": method,
        "energy_domain_joules": dict(zip(counter.domains, domain_joules)),
        "energy_window_joules": [sum(sum(s.joules) for s in counted if s.window == w) for w in rounds],
        "energy_window_seconds": [sum(s.seconds for s in counted if s.window == w) for w in rounds],
    }
    if seconds <= 0:
        return {**info, "energy_left_out": "no timed round was read"}
    info["energy_error_bound"] = bound = stretches * update / seconds
    if bound > MAX_ERROR_BOUND:
        info["energy_left_out"] = (f"the counted rounds last {seconds:.3g} s in {stretches} unbroken stretch(es), too "
                                   f"short for a counter updated every {update * 1000:.3g} ms: their energy could be "
                                   f"off by up to {bound:.0%}, more than {MAX_ERROR_BOUND:.0%}")
    elif joules <= 0:
        return unavailable(f"the {counter.source} counter did not advance over {seconds:.3g} s of rounds, many times "
                           f"its update period: it does not count energy here")
    else:
        info["energy_power_watts"] = joules / seconds
    return info


def figures(watched: dict, *, round_seconds: float, images_per_second: float, to_target: bool) -> dict:
    """A timed result's energy figures from its watchers' fields (``watched``): ``energy_joules`` per round (the
    average power times ``round_seconds``, pytest-benchmark's median round), ``joules_per_image`` (the average
    power over ``images_per_second``), and for a time to accuracy (``to_target``) ``energy_to_target_joules``,
    the energy of the median run to the target; nothing where no average power was measured."""
    power = watched.get("energy_power_watts")
    if power is None:
        return {}
    per_round = power * round_seconds
    return {"energy_joules": per_round, "joules_per_image": power / images_per_second,
            **({"energy_to_target_joules": per_round} if to_target else {})}


def own_window(timed: dict, device: str, repeat: Callable[[], object], *, round_seconds: float | None, what: str,
               between: Callable[[], object] | None = None) -> dict:
    """A case's watched fields (``timed``, over its timed rounds) with the energy of a window of its own where the
    rounds were too short for the counter (their error bound over ``MAX_ERROR_BOUND``, ``measured``); ``timed``
    itself otherwise, or where nothing was timed (``round_seconds`` None: pytest-benchmark disabled).

    ``repeat`` does the work of one round (``round_seconds``, the timed median, long), ``what`` names it (plural,
    for the record). It runs back to back after the timed rounds until the window lasts ``OWN_WINDOW_UPDATES``
    updates of the counter; ``between`` (the restart a round needs) runs before each repeat, inside the window:
    each pause would add an update's worth of error, and a restart that reloads the weights it drew once
    (``TrainingRun.restart``) is a few copies to the device. The energy fields are then the window's
    (``measured``; the figures its average power times the timed median, ``figures``), ``energy_own_window``
    says what it held and ``energy_timed_left_out`` why the rounds' own reading was not used; the other
    watchers' fields are kept. A window whose training diverges or runs out of memory leaves ``timed`` as it
    was, its figures left out, and says why (``energy_own_window_failed``): the timed rounds stand."""
    bound = timed.get("energy_error_bound")
    if round_seconds is None or round_seconds <= 0 or bound is None or bound <= MAX_ERROR_BOUND:
        return timed
    repeats = math.ceil(OWN_WINDOW_UPDATES * timed["energy_update_seconds"] / round_seconds)
    own = watcher(device)
    own.start()
    try:
        for _ in range(repeats):
            if between:
                between()
            repeat()
    except (FloatingPointError, torch.OutOfMemoryError) as error:  # training diverged, or the device is full
        own.stop()  # and its background reading with it
        return {**timed, "energy_own_window_failed": f"{type(error).__name__}: {error}"}
    others = {name: value for name, value in timed.items() if not name.startswith("energy_")}
    return {**others, **own.stop(),
            "energy_own_window": f"{repeats} more {what} after the timed rounds, untimed, back to back"
                                 + (", each restarted within the window" if between else ""),
            "energy_timed_left_out": timed["energy_left_out"]}


def watcher(device: str) -> EnergyWatcher:
    """The energy watcher of ``device``: its counter, or the reason it has none."""
    try:
        return EnergyWatcher(device, counter(device))
    except NoCounter as reason:
        return EnergyWatcher(device, reason=str(reason))


watch.register(watcher, innermost=True)
