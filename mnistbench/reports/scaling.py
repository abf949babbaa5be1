"""Scaling of data-parallel training: images per second and efficiency by world size.

The batch stays the recipe's per rank (weak scaling), so N ranks should process N times the images of
one. Efficiency is the total images/s of N ranks over N times the images/s of one rank *of the same
run* and configuration; 1.0 is perfect. Results of different runs are never mixed in one curve.
"""
from dataclasses import dataclass, field
from pathlib import Path

from . import tables
from .results import CONFIG_FIELDS, Result, parse, run_names

KIND = "distributed"
# Fields that change along one curve: the number of ranks, and with it the images of a global step.
WORLD_FIELDS = ("world_size", "samples")


def scaling_efficiency(images_per_second: float, world_size: int, one_rank_images_per_second: float | None) -> float | None:
    """Total images/s over ``world_size`` times one rank's images/s; None without a one-rank measurement."""
    if not one_rank_images_per_second:
        return None
    return images_per_second / (world_size * one_rank_images_per_second)


@dataclass(frozen=True)
class Point:
    result: Result

    @property
    def world_size(self) -> int:
        return self.result.extra_info["world_size"]

    @property
    def images_per_second(self) -> float:
        """Images of one global step (every rank's batch) over the median step time."""
        return self.result.extra_info["samples"] / self.result.median


@dataclass
class Curve:
    """One configuration of one run at every world size it was measured at."""

    label: str
    device_name: str
    run: Path
    points: list[Point] = field(default_factory=list)

    @property
    def one_rank_images_per_second(self) -> float | None:
        return next((point.images_per_second for point in self.points if point.world_size == 1), None)

    def efficiency(self, point: Point) -> float | None:
        return scaling_efficiency(point.images_per_second, point.world_size, self.one_rank_images_per_second)


def curves(results: list[Result]) -> list[Curve]:
    """The data-parallel results grouped into curves: same run, same configuration but the world size."""
    grouped: dict[tuple, Curve] = {}
    for result in results:
        info = result.extra_info
        if info["kind"] != KIND:
            continue
        key = (result.file, tuple(str(info[name]) for name in CONFIG_FIELDS if name not in WORLD_FIELDS))
        label = f"{info['model']} {info['backend']} b{info['batch_size']} per rank"
        grouped.setdefault(key, Curve(label, info["device_name"], result.file)).points.append(Point(result))
    for curve in grouped.values():
        curve.points.sort(key=lambda point: (point.world_size, point.result.extra_info.get("nodes", 1)))
    return sorted(grouped.values(), key=lambda curve: (str(curve.run), curve.label))


def rows(all_curves: list[Curve]) -> list[dict]:
    """Every world size of every curve as a table row: the step's median (ms), images per second in all and per
    rank, and the scaling efficiency against one rank."""
    names = run_names([curve.run for curve in all_curves])
    return [{
        "benchmark": curve.label,
        "device_name": curve.device_name,
        "run": names[curve.run],
        "world_size": point.world_size,
        "nodes": point.result.extra_info.get("nodes"),
        "step_median_ms": point.result.median * 1e3,
        "images_per_second": point.images_per_second,
        "per_rank": point.images_per_second / point.world_size,
        "efficiency": curve.efficiency(point),
    } for curve in all_curves for point in curve.points]


def summary(document, source: str = "this run") -> str | None:
    """The scaling table of a pytest-benchmark JSON document just produced, or None when it holds no
    data-parallel result."""
    found = curves(parse(document, Path(source)))
    return tables.render(rows(found)) if found else None
