"""History of each benchmark over stored runs, with regressions told apart from noise.

A change between consecutive runs is flagged only when it is larger than the threshold (7%, as TorchBench
uses) and than the typical run-to-run change before it (once a benchmark has three or more runs), and when
the two runs' rounds differ by a rank test (``significance``: Mann-Whitney U, as asv does). Where a run
stored no rounds (older runs), the spread of the rounds within either run stands in for the test; where
there are too few rounds for any test (a 2-round epoch benchmark), the row says so and flags nothing.

A time to accuracy is two numbers: the epochs its seeds needed (a property of the recipe and the seeds) and
the time per epoch (the machine's speed). Only the latter is a speed change: its change is the one
tested and flagged, and a change in the epochs needed is said in the note.

A change involving a run that was disturbed (``mnistbench.quiet``: other processes, steal, a drifting
canary, a slowed GPU), or whose canary ran at another speed than the other run's (the machine's own speed
differed), is never called a regression or an improvement without saying so: its flag says ``(disturbed)``,
its note why, and ``--fail-on-regression`` does not count it.

Runs whose configuration differs (a smoke run of 256 samples beside full epochs), or that ran on another
machine (``machine.identity``: two CPUs may share a model name and differ threefold in speed), form separate
series, never a regression. An upgrade is what the history exists to judge ("did the last upgrade make it
slower?"): a series continues across a new torch or torchvision and a new GPU driver, and the change's note
names what was upgraded. Each run is shown with its machine (a new driver is a new machine key), and each
series' label names what sets it apart from the other series of that hardware that would otherwise read the
same.
"""
import statistics
from dataclasses import dataclass, field

from .results import CONFIG_FIELDS, VERSION_FIELDS, Result, run_names
from .significance import rank_test

THRESHOLD = 0.07
DISTURBED = " (disturbed)"
RUN_TO_RUN_CHANGES = 2  # the changes a series needs before its run-to-run noise is known
# A significant change before that: on a shared VM whose speed moves between processes (VGGNet's step on this
# project's Intel Xeon by a third between runs minutes apart, docs/measured.md), a rank test on two runs' rounds
# calls a change of the machine significant too; a rerun tells them apart.
UNKNOWN_NOISE = "run-to-run noise not known before a 4th run: rerun to tell the code's change from the machine's"


@dataclass(frozen=True)
class Point:
    result: Result
    change: float | None = None  # relative change of the speed figure (``speed``) from the previous run
    noise: float | None = None
    p: float | None = None  # the rank test's two-sided p, where one was made
    flag: str = ""  # "regression", "improvement", either followed by DISTURBED, or ""
    note: str = ""


@dataclass
class Series:
    label: str
    points: list[Point] = field(default_factory=list)

    @property
    def machine(self) -> str:
        """The machine of the newest run (``machine.identity``: a driver upgrade within the series changes it)."""
        return self.points[-1].result.machine

    @property
    def latest_regressed(self) -> bool:
        return bool(self.points) and self.points[-1].flag == "regression"


def epochs(result: Result) -> list[int] | None:
    """A time to accuracy's epochs needed, per seed (runs from before ``--seeds`` stored one number); None for
    other benchmarks, and where not stored."""
    needed = result.extra_info.get("epochs") if result.extra_info["kind"] == "time-to-accuracy" else None
    return [needed] if isinstance(needed, int) else needed


def rounds(result: Result, per_epoch: bool) -> list[float] | None:
    """The rounds a change is tested on: the stored rounds, or each seed's time per epoch (``per_epoch``)."""
    if result.data is None or not per_epoch:
        return None if result.data is None else list(result.data)
    needed = epochs(result)
    return [seconds / count for seconds, count in zip(result.data, needed)] if len(needed) == len(result.data) \
        else None


def speed(result: Result, per_epoch: bool) -> float:
    """The figure whose change is a speed change: the median, or a time to accuracy's time per epoch
    (``per_epoch``): all rounds' time over all their epochs."""
    if not per_epoch:
        return result.median
    needed = epochs(result)
    return sum(result.data) / sum(needed) if rounds(result, per_epoch) else result.median / statistics.median(needed)


def _flag(change: float, noise: float, threshold: float) -> str:
    if abs(change) <= max(threshold, noise):
        return ""
    return "regression" if change > 0 else "improvement"


def _disturbed(result: Result, names: dict) -> list[str]:
    """Whether ``result``'s run was disturbed, and why, in a note's words."""
    return [f"run {names[result.file]} disturbed: {'; '.join(result.disturbed_by)}"] if result.disturbed_by else []


def _disturbances(previous: Result, current: Result, names: dict) -> list[str]:
    """Why a change between ``previous`` and ``current`` may be the machine's, not the code's."""
    found = _disturbed(previous, names) + _disturbed(current, names)
    if previous.canary and current.canary:  # judged by the limit the newer run was measured with
        ratio = current.canary[0] / previous.canary[0]
        if abs(ratio - 1) > current.canary[1]:
            found.append(f"the canary ran {abs(ratio - 1):.0%} {'slower' if ratio > 1 else 'faster'} than in run "
                         f"{names[previous.file]}: the machine's speed differed")
    return found


def _point(previous: Result, current: Result, changes: list[float], threshold: float, names: dict) -> Point:
    """``current`` against ``previous``, the relative changes of the series before them in ``changes``."""
    per_epoch = bool(epochs(previous)) and bool(epochs(current))  # both times to accuracy that stored them
    change = speed(current, per_epoch) / speed(previous, per_epoch) - 1
    # None until two changes came before: how much runs differ is then not known, not zero
    run_to_run = statistics.median(abs(c) for c in changes) if len(changes) >= RUN_TO_RUN_CHANGES else None
    before, after = rounds(previous, per_epoch), rounds(current, per_epoch)
    test = rank_test(before, after)
    notes = [test.note] if test.note else []
    if test.p is not None:
        noise = run_to_run
        flag = _flag(change, noise or 0.0, threshold) if test.significant else ""
    elif before is None or after is None:  # runs older than their rounds: their spread stands in for a test
        noise = max(previous.relative_noise, current.relative_noise, run_to_run or 0.0)
        flag = _flag(change, noise, threshold)
    else:
        noise, flag = run_to_run, ""
    if per_epoch:
        needed = [statistics.mean(epochs(result)) for result in (previous, current)]
        notes.insert(0, f"time per epoch {speed(previous, True):.4g} s -> {speed(current, True):.4g} s")
        if needed[0] != needed[1]:
            notes.insert(1, f"epochs needed {needed[0]:g} -> {needed[1]:g}: the recipe and seeds, not speed")
    elif current.extra_info["kind"] == "time-to-accuracy":
        notes.insert(0, "epochs needed not stored: the change mixes them with the speed")
    notes += _upgrades(previous, current)
    disturbances = _disturbances(previous, current, names)
    if flag and disturbances:
        flag += DISTURBED
    elif flag and test.p is not None and run_to_run is None:  # the rounds of one process share its machine's state
        notes.append(UNKNOWN_NOISE)
    return Point(current, change, noise, test.p, flag, "; ".join(notes + disturbances))


def _upgrades(previous: Result, current: Result) -> list[str]:
    """What was upgraded (or downgraded) between two runs of a series: torch, torchvision, the GPU's driver."""
    changed = [(name, previous.versions.get(name), current.versions.get(name)) for name in VERSION_FIELDS]
    changed.append(("driver", previous.driver, current.driver))
    # missing, null and "" all say "unknown": no change between two of them
    return [f"{name} {before or 'unknown'} -> {after or 'unknown'}" for name, before, after in changed
            if (before or None) != (after or None)]


def _key(result: Result) -> tuple:
    """What must agree for two runs to be one series: the benchmark (under its current name), its
    configuration and the hardware (a driver upgrade, as a torch upgrade, continues the series)."""
    configuration = tuple(str(result.extra_info[f]) for f in CONFIG_FIELDS)
    return result.identity, configuration, result.variant, result.hardware, result.host


def _distinctions(result: Result) -> dict[str, str]:
    """What may tell a series from others of the same label, as it is shown when it does."""
    return {
        "samples": f"{result.extra_info['samples']} samples",
        "dataset": str(result.extra_info["dataset"]),
        "seeds": f"{result.extra_info['seeds']} seed{'s' * (result.extra_info['seeds'] != 1)}",
        "variant": result.variant,
        "recipe": result.recipe,
        "host": "" if result.device == "cpu" else f"host {result.host}",  # a CPU's identity includes its host
        # a GPU series may span machine keys (a driver upgrade), so the label, not the key, tells two GPUs apart
        "gpu": "" if result.device == "cpu" else result.hardware,
        "test": result.name.rsplit("::", 1)[-1],
    }


def _labels(firsts: list[Result]) -> list[str]:
    """``label (device)``, followed by whatever differs among the series that would otherwise read the same: of
    the same CPU (a CPU series keeps one machine key, which tells CPUs apart), or of any GPU."""
    plain = [(result.label, result.device, result.hardware if result.device == "cpu" else None) for result in firsts]
    labels = []
    for label, result in zip(plain, firsts):
        alike = [_distinctions(other) for other, other_label in zip(firsts, plain) if other_label == label]
        differing = [text for name, text in _distinctions(result).items() if any(o[name] != text for o in alike)]
        labels.append(f"{result.label} ({', '.join([result.device, *differing])})")
    return labels


def build(results: list[Result], threshold: float = THRESHOLD) -> list[Series]:
    """One series per benchmark, configuration and machine; ``results`` in time order."""
    grouped: dict[tuple, list[Result]] = {}
    for result in results:
        grouped.setdefault(_key(result), []).append(result)
    names = run_names([result.file for result in results])
    all_series = []
    for label, runs in zip(_labels([runs[0] for runs in grouped.values()]), grouped.values()):
        series = Series(label, [Point(runs[0], note="; ".join(_disturbed(runs[0], names)))])
        for previous, current in zip(runs, runs[1:]):
            series.points.append(_point(previous, current, [p.change for p in series.points[1:]], threshold, names))
        all_series.append(series)
    return sorted(all_series, key=lambda s: s.label)


def in_newest_run(all_series: list[Series]) -> list[Series]:
    """The series that the newest run read took part in, which ``--fail-on-regression`` judges (a CI gate
    judges the run it just made): a series whose newest run is older belongs to another machine, or to a
    benchmark that run left out."""
    if not all_series:
        return []
    newest = max((series.points[-1].result for series in all_series), key=lambda result: result.run_time).file
    return [series for series in all_series if series.points[-1].result.file == newest]


def rows(all_series: list[Series]) -> list[dict]:
    """Every run of every series as a table row, in time order: its median (seconds), its change from the run
    before with the noise and the rank test's p, and whether that is flagged."""
    names = run_names([point.result.file for series in all_series for point in series.points])
    return [{
        "benchmark": series.label,
        "machine": point.result.machine,
        "run": names[point.result.file],
        "time": point.result.run_time.strftime("%Y-%m-%d %H:%M"),
        "median_s": point.result.median,
        "epochs": None if epochs(point.result) is None else f"{statistics.mean(epochs(point.result)):g}",
        "change": None if point.change is None else f"{point.change:+.1%}",
        "noise": None if point.noise is None else f"{point.noise:.1%}",
        "p": None if point.p is None else f"{point.p:.2g}",
        "flag": point.flag,
        "note": point.note,
    } for series in all_series for point in series.points]
