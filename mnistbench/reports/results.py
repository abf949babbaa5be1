"""Stored results: pytest-benchmark JSON files read back, tolerating bad files without losing good ones.

Files of every pytest-benchmark version are read: 3.x wrote its UTC ``datetime`` without a time zone,
4.x and later with one. A file that is not valid JSON, a JSON from another tool, a folder with no JSON,
or one benchmark with a missing or nonsensical field (a hand-edited median of zero, a list where a name
belongs) each produce a one-line warning naming the file; only when nothing usable is left does
``load`` raise ``NoResultsError``.
"""
import json
import math
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import machine

# Fields that must agree before two results may be compared; a benchmark lacking one is skipped.
CONFIG_FIELDS = ("kind", "model", "device", "device_name", "batch_size", "samples", "dataset", "pipeline",
                 "precision", "memory_format", "compile", "world_size", "backend")
# What a result stored before a field existed meant by leaving it out: one process, no process group.
CONFIG_DEFAULTS = {"world_size": 1, "backend": None}
VERSION_FIELDS = ("torch", "torchvision")
# The speed variant of a benchmark; the optimizer implementation ("foreach", "fused") only in newer files.
VARIANT_FIELDS = ("precision", "memory_format", "compile", "optimizer")


class NoResultsError(RuntimeError):
    """None of the given paths held a usable benchmark result."""


class ResultWarning(UserWarning):
    """A stored file or benchmark was skipped."""


@dataclass(frozen=True)
class Result:
    """One benchmark of one stored run."""

    file: Path
    run_time: datetime
    name: str  # pytest-benchmark's fullname, device included
    params: dict
    extra_info: dict
    versions: dict
    median: float
    iqr: float
    rounds: int
    machine: str  # the device that ran it, in the terms that decide its speed (``machine.identity``)
    host: str  # the CPU of the machine that wrote the file (``machine.host``)

    @property
    def device(self) -> str:
        return self.extra_info["device"]

    @property
    def identity(self) -> tuple:
        """What the benchmark is, whatever device ran it: the test and its parameters less the device."""
        test = self.name.split("[", 1)[0]
        return (test,) + tuple(sorted((k, str(v)) for k, v in self.params.items() if k != "device"))

    @property
    def fast(self) -> bool:
        """Whether this is the ``fast`` setup, recipe or step: each device in its own measured best variant."""
        return "fast" in (self.params.get("setup"), self.params.get("recipe_name"), self.params.get("step_variant"))

    @property
    def workload(self) -> str:
        """What was trained, without device or variant, e.g. ``epoch vgg resident b128`` or ``epoch vgg fast b128``."""
        info = self.extra_info
        parts = [info["kind"], info["model"], "fast" if self.fast else info.get("pipeline"), f"b{info['batch_size']}"]
        return " ".join(str(part) for part in parts if part is not None)

    @property
    def variant(self) -> str:
        """The speed variant in full, e.g. ``bf16-channels_last-eager`` or ``fp32-contiguous-eager-fused``."""
        return "-".join(str(self.extra_info[f]) for f in VARIANT_FIELDS if self.extra_info.get(f) is not None)

    @property
    def label(self) -> str:
        """A short readable name without the device: the workload and the variant's departures from fp32
        eager, e.g. ``epoch vgg resident b128`` or ``step-train vgg b128 bf16``."""
        info = self.extra_info
        parts = [info.get(field) for field in ("precision", "memory_format", "compile")]
        if info.get("backend") is not None:
            parts.append(f"{info['backend']} x{info['world_size']}")
        return " ".join([self.workload] + [str(p) for p in parts if p not in (None, "fp32", "contiguous", "eager")])

    @property
    def relative_noise(self) -> float:
        """The spread of this run's rounds: interquartile range over median."""
        return self.iqr / self.median if self.median else 0.0


def json_files(paths) -> list[Path]:
    """The JSON files named by ``paths``: files as given, folders searched recursively."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            inside = sorted(path.rglob("*.json"))
            if not inside:
                warnings.warn(f"{path}: no JSON files in this folder", ResultWarning, stacklevel=2)
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            warnings.warn(f"{path}: no such file or folder", ResultWarning, stacklevel=2)
    return found


def read_file(path: Path) -> list[Result]:
    """The usable benchmarks of one pytest-benchmark JSON file (warnings for the rest)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        warnings.warn(f"{path}: skipped, not readable JSON ({error})", ResultWarning, stacklevel=2)
        return []
    return parse(document, path)


def parse(document, path: Path) -> list[Result]:
    """The usable benchmarks of a pytest-benchmark JSON document, read from ``path`` or just produced."""
    if not isinstance(document, dict) or not isinstance(document.get("benchmarks"), list) or "datetime" not in document:
        warnings.warn(f"{path}: skipped, not a pytest-benchmark result file", ResultWarning, stacklevel=2)
        return []
    try:
        run_time = run_datetime(document["datetime"])
    except (TypeError, ValueError):
        warnings.warn(f"{path}: skipped, bad 'datetime' {document['datetime']!r}", ResultWarning, stacklevel=2)
        return []
    if not document["benchmarks"]:
        warnings.warn(f"{path}: skipped, it holds no benchmarks", ResultWarning, stacklevel=2)
    machine_info = document.get("machine_info")
    machine_info = machine_info if isinstance(machine_info, dict) else {}
    versions = machine_info.get("mnistbench")
    versions = versions if isinstance(versions, dict) else {}
    versions = {field: versions.get(field) for field in VERSION_FIELDS}
    results = []
    for bench in document["benchmarks"]:
        try:
            results.append(_result(bench, Path(path), run_time, versions, machine_info))
        except (KeyError, TypeError, ValueError) as error:
            name = bench.get("fullname", "?") if isinstance(bench, dict) else "?"
            warnings.warn(f"{path}: skipped benchmark {name}, missing or bad field {error}", ResultWarning, stacklevel=2)
    return results


def run_datetime(text: str) -> datetime:
    """When a run was made, time-zone aware: pytest-benchmark 3.x wrote UTC without saying so."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _result(bench, path: Path, run_time: datetime, versions: dict, machine_info: dict) -> Result:
    """One stored benchmark; ``KeyError``, ``TypeError`` or ``ValueError`` naming the field the reports
    cannot use."""
    extra_info, stats, params = bench["extra_info"], bench["stats"], bench.get("params") or {}
    for field, value, kind in (("fullname", bench["fullname"], str), ("extra_info", extra_info, dict),
                               ("stats", stats, dict), ("params", params, dict)):
        if not isinstance(value, kind):
            raise TypeError(f"{field} (a {type(value).__name__}, not a {kind.__name__})")
    extra_info = {**CONFIG_DEFAULTS, **extra_info}  # fields older results lack
    for field in CONFIG_FIELDS:
        if field not in extra_info:
            raise KeyError(f"extra_info.{field}")
        if not isinstance(extra_info[field], (str, int, float, type(None))):
            raise TypeError(f"extra_info.{field} (a {type(extra_info[field]).__name__})")
    for field in ("median", "iqr", "rounds"):
        value = stats.get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"stats.{field} ({value!r})")
    if stats["median"] <= 0 or stats["iqr"] < 0 or stats["rounds"] < 1:
        raise ValueError(f"stats (median {stats['median']}, iqr {stats['iqr']}, rounds {stats['rounds']})")
    return Result(file=path, run_time=run_time, name=bench["fullname"], params=params, extra_info=extra_info,
                  versions=versions, median=float(stats["median"]), iqr=float(stats["iqr"]),
                  rounds=int(stats["rounds"]), machine=machine.identity(machine_info, extra_info),
                  host=machine.host(machine_info))


def load(paths) -> list[Result]:
    """Every usable benchmark under ``paths``, oldest run first; ``NoResultsError`` if there is none."""
    results = [result for path in json_files(paths) for result in read_file(path)]
    if not results:
        raise NoResultsError(f"no usable pytest-benchmark results in {', '.join(map(str, paths))}")
    return sorted(results, key=lambda result: result.run_time)
