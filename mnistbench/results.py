"""Stored results: pytest-benchmark JSON files read back, tolerating bad files without losing good ones.

A file that is not valid JSON, a JSON from another tool, a folder with no JSON, or one benchmark missing
a field each produce a one-line warning naming the file; only when nothing usable is left does
``load`` raise ``NoResultsError``.
"""
import json
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# Fields that must agree before two results may be compared; a benchmark lacking one is skipped.
CONFIG_FIELDS = ("kind", "model", "device", "device_name", "batch_size", "samples", "dataset", "pipeline",
                 "precision", "memory_format", "compile", "world_size", "backend")
# What a result stored before a field existed meant by leaving it out: one process, no process group.
CONFIG_DEFAULTS = {"world_size": 1, "backend": None}
VERSION_FIELDS = ("torch", "torchvision")


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

    @property
    def device(self) -> str:
        return self.extra_info["device"]

    @property
    def identity(self) -> tuple:
        """What the benchmark is, whatever device ran it: the test and its parameters less the device."""
        test = self.name.split("[", 1)[0]
        return (test,) + tuple(sorted((k, str(v)) for k, v in self.params.items() if k != "device"))

    @property
    def label(self) -> str:
        """A short readable name without the device, e.g. ``epoch vgg resident`` or ``step vgg train b128``."""
        info = self.extra_info
        parts = [info["kind"], info["model"], info.get("pipeline"), f"b{info['batch_size']}"]
        parts += [info.get(field) for field in ("precision", "memory_format", "compile")]
        if info["backend"] is not None:
            parts.append(f"{info['backend']} x{info['world_size']}")
        return " ".join(str(part) for part in parts if part not in (None, "fp32", "contiguous", "eager"))

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
        run_time = datetime.fromisoformat(document["datetime"])
    except (TypeError, ValueError):
        warnings.warn(f"{path}: skipped, bad 'datetime' {document['datetime']!r}", ResultWarning, stacklevel=2)
        return []
    versions = (document.get("machine_info") or {}).get("mnistbench") or {}
    results = []
    for bench in document["benchmarks"]:
        try:
            extra_info, stats = {**CONFIG_DEFAULTS, **bench["extra_info"]}, bench["stats"]
            missing = [field for field in CONFIG_FIELDS if field not in extra_info]
            if missing:
                raise KeyError(f"extra_info.{missing[0]}")
            results.append(Result(
                file=Path(path), run_time=run_time, name=bench["fullname"], params=bench.get("params") or {},
                extra_info=extra_info, versions={field: versions.get(field) for field in VERSION_FIELDS},
                median=float(stats["median"]), iqr=float(stats["iqr"]), rounds=int(stats["rounds"]),
            ))
        except (KeyError, TypeError, ValueError) as error:
            name = bench.get("fullname", "?") if isinstance(bench, dict) else "?"
            warnings.warn(f"{path}: skipped benchmark {name}, missing or bad field {error}", ResultWarning, stacklevel=2)
    return results


def load(paths) -> list[Result]:
    """Every usable benchmark under ``paths``, oldest run first; ``NoResultsError`` if there is none."""
    results = [result for path in json_files(paths) for result in read_file(path)]
    if not results:
        raise NoResultsError(f"no usable pytest-benchmark results in {', '.join(map(str, paths))}")
    return sorted(results, key=lambda result: result.run_time)
