"""History of each benchmark over stored runs, with regressions told apart from noise.

A change between consecutive runs is flagged only when it is larger than both the threshold (7%, as
TorchBench uses) and the measured noise: the spread of the rounds within either run, and, once a
benchmark has three or more runs, the typical run-to-run change before it. Runs whose configuration
differs (a smoke run of 256 samples beside full epochs) form separate series, never a regression.
"""
import statistics
from dataclasses import dataclass, field

from .results import CONFIG_FIELDS, Result

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
    device_name: str
    points: list[Point] = field(default_factory=list)

    @property
    def latest_regressed(self) -> bool:
        return bool(self.points) and self.points[-1].flag == "regression"


def _flag(change: float, noise: float, threshold: float) -> str:
    if abs(change) <= max(threshold, noise):
        return ""
    return "regression" if change > 0 else "improvement"


def build(results: list[Result], threshold: float = THRESHOLD) -> list[Series]:
    """One series per benchmark, device and configuration; ``results`` in time order."""
    grouped: dict[tuple, list[Result]] = {}
    for result in results:
        key = (result.name, tuple(str(result.extra_info[f]) for f in CONFIG_FIELDS))
        grouped.setdefault(key, []).append(result)
    all_series = []
    for runs in grouped.values():
        series = Series(f"{runs[0].label} ({runs[0].device})", runs[0].extra_info["device_name"], [Point(runs[0])])
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
    return [{
        "benchmark": series.label,
        "device_name": series.device_name,
        "run": f"{point.result.file.parent.name}/{point.result.file.stem.split('_')[0]}",
        "time": point.result.run_time.strftime("%Y-%m-%d %H:%M"),
        "median_s": point.result.median,
        "change": None if point.change is None else f"{point.change:+.1%}",
        "noise": None if point.noise is None else f"{point.noise:.1%}",
        "flag": point.flag,
    } for series in all_series for point in series.points]
