"""GPU/CPU speed ratios: the CPU median over the accelerator median for the same benchmark.

Results are paired when they differ only in device. A pair whose configuration differs anyway
(samples per round, batch, dataset, precision, torch version...) is listed with the reason and no
ratio: dividing unlike numbers is how the articles' "23x" was made. Across several runs the newest
result per device is used.
"""
from dataclasses import dataclass

from . import tables
from .results import CONFIG_FIELDS, Result, parse

# Fields expected to differ between the two sides of a pair.
DEVICE_FIELDS = ("device", "device_name")


@dataclass(frozen=True)
class Pair:
    cpu: Result
    accelerator: Result
    mismatch: str | None  # why the two may not be divided, or None

    @property
    def speedup(self) -> float | None:
        return None if self.mismatch else self.cpu.median / self.accelerator.median

    def row(self) -> dict:
        return {
            "benchmark": self.cpu.label,
            "cpu": self.cpu.extra_info["device_name"],
            "cpu_median_s": self.cpu.median,
            "accelerator": f"{self.accelerator.device} {self.accelerator.extra_info['device_name']}",
            "accelerator_median_s": self.accelerator.median,
            "speedup": self.speedup,
            "note": self.mismatch or "",
        }


def mismatch(cpu: Result, accelerator: Result) -> str | None:
    """Which configuration fields or library versions differ between the two results, if any."""
    reasons = []
    for field in CONFIG_FIELDS:
        if field not in DEVICE_FIELDS and cpu.extra_info[field] != accelerator.extra_info[field]:
            reasons.append(f"{field} differs (cpu {cpu.extra_info[field]}, {accelerator.device} {accelerator.extra_info[field]})")
    for field, version in cpu.versions.items():
        if version != accelerator.versions.get(field):
            reasons.append(f"{field} differs (cpu {version}, {accelerator.device} {accelerator.versions.get(field)})")
    return "; ".join(reasons) or None


def newest_per_device(results: list[Result]) -> dict[tuple, Result]:
    """The newest result of each benchmark on each device; ``results`` are in time order."""
    return {(result.identity, result.device): result for result in results}


def pairs(results: list[Result]) -> list[Pair]:
    """Every CPU result matched with every accelerator result of the same benchmark."""
    newest = newest_per_device(results)
    found = []
    for (identity, device), cpu in newest.items():
        if device != "cpu":
            continue
        for (other_identity, other_device), accelerator in newest.items():
            if other_identity == identity and other_device != "cpu":
                found.append(Pair(cpu, accelerator, mismatch(cpu, accelerator)))
    return sorted(found, key=lambda pair: (pair.cpu.label, pair.accelerator.device))


def summary(document, source: str = "this run") -> str | None:
    """The ratio table of a pytest-benchmark JSON document just produced, or None when it holds no
    CPU/accelerator pair (a run on one device)."""
    found = pairs(sorted(parse(document, source), key=lambda result: result.run_time))
    return tables.render([pair.row() for pair in found]) if found else None
