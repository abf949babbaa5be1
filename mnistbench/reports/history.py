"""History of each benchmark over stored runs, with regressions told apart from noise.

A change between consecutive runs is flagged only when it is larger than both the threshold (7%, as
TorchBench uses) and the measured noise: the spread of the rounds within either run, and, once a
benchmark has three or more runs, the typical run-to-run change before it. Runs whose configuration
differs (a smoke run of 256 samples beside full epochs), or that ran on another machine (``machine.identity``:
two CPUs may share a model name and differ threefold in speed), form separate series, never a regression.
Each series is shown with its machine, and its label names what sets it apart from the other series of
that machine that would otherwise read the same.
"""
import statistics
from dataclasses import dataclass, field

from .results import CONFIG_FIELDS, Result, run_names

THRESHOLD = 0.07


@dataclass(frozen=True)
class Point:
    result: Result
    change: float | None = None  # relative change of the median from the previous run
    noise: float | None = None
    flag: str = ""  # "regression", "improvement" or ""


@dataclass
class Series:
    label: str
    machine: str
    points: list[Point] = field(default_factory=list)

    @property
    def latest_regressed(self) -> bool:
        return bool(self.points) and self.points[-1].flag == "regression"


def _flag(change: float, noise: float, threshold: float) -> str:
    if abs(change) <= max(threshold, noise):
        return ""
    return "regression" if change > 0 else "improvement"


def _key(result: Result) -> tuple:
    """What must agree for two runs to be one series: the benchmark (under its current name), its
    configuration and the machine."""
    configuration = tuple(str(result.extra_info[f]) for f in CONFIG_FIELDS)
    return result.identity, configuration, result.variant, result.machine, result.host


def _distinctions(result: Result) -> dict[str, str]:
    """What may tell a series from others of the same label, as it is shown when it does."""
    return {
        "samples": f"{result.extra_info['samples']} samples",
        "dataset": str(result.extra_info["dataset"]),
        "seeds": f"{result.extra_info['seeds']} seed{'s' * (result.extra_info['seeds'] != 1)}",
        "variant": result.variant,
        "host": "" if result.device == "cpu" else f"host {result.host}",  # a CPU's identity includes its host
        "test": result.name.rsplit("::", 1)[-1],
    }


def _labels(firsts: list[Result]) -> list[str]:
    """``label (device)``, followed by whatever differs among the series of the same machine that would
    otherwise read the same."""
    plain = [(result.label, result.device, result.machine) for result in firsts]
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
    all_series = []
    for label, runs in zip(_labels([runs[0] for runs in grouped.values()]), grouped.values()):
        series = Series(label, runs[0].machine, [Point(runs[0])])
        changes = []
        for previous, current in zip(runs, runs[1:]):
            change = current.median / previous.median - 1
            noise = max(previous.relative_noise, current.relative_noise,
                        statistics.median(abs(c) for c in changes) if len(changes) >= 2 else 0.0)
            series.points.append(Point(current, change, noise, _flag(change, noise, threshold)))
            changes.append(change)
        all_series.append(series)
    return sorted(all_series, key=lambda s: s.label)


def rows(all_series: list[Series]) -> list[dict]:
    names = run_names([point.result.file for series in all_series for point in series.points])
    return [{
        "benchmark": series.label,
        "machine": series.machine,
        "run": names[point.result.file],
        "time": point.result.run_time.strftime("%Y-%m-%d %H:%M"),
        "median_s": point.result.median,
        "change": None if point.change is None else f"{point.change:+.1%}",
        "noise": None if point.noise is None else f"{point.noise:.1%}",
        "flag": point.flag,
    } for series in all_series for point in series.points]
