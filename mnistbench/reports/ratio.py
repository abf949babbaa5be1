"""GPU/CPU speed ratios: the CPU median over the accelerator median for the same benchmark.

Results are paired when they differ only in device and come from machines with the same CPU (an
accelerator's numbers are divided by its own host's). A pair whose configuration differs anyway
(samples per round, batch, dataset, precision, torch version...) is listed with the reason and no
ratio: dividing unlike numbers is how the articles' "23x" was made. The one exception is the ``fast``
setup (and recipe): each device at its own measured best variant on the same network, data, optimizer
and batch, the honest form of the articles' claim; there the variant fields may differ, and the row
names both variants. Across several runs the newest result per device and machine is used.
"""
from dataclasses import dataclass

from . import tables
from .results import CONFIG_FIELDS, VARIANT_FIELDS, Result, parse

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

    @property
    def label(self) -> str:
        """The benchmark, with its variant when both sides ran the same one."""
        return self.cpu.workload if self.cpu.fast else self.cpu.label

    def row(self) -> dict:
        return {
            "benchmark": self.label,
            "cpu": self.cpu.machine,
            "cpu_variant": self.cpu.variant,
            "cpu_median_s": self.cpu.median,
            "accelerator": f"{self.accelerator.device} {self.accelerator.machine}",
            "accelerator_variant": self.accelerator.variant,
            "accelerator_median_s": self.accelerator.median,
            "speedup": self.speedup,
            "note": self.mismatch or "",
        }


def mismatch(cpu: Result, accelerator: Result) -> str | None:
    """Which configuration fields or library versions differ between the two results, if any; in a
    ``fast`` pair the variant fields may differ. The optimizer's implementation (for-loop, foreach,
    fused: the same arithmetic) is each device's own and never refuses a pair."""
    allowed = DEVICE_FIELDS + (VARIANT_FIELDS if cpu.fast and accelerator.fast else ())
    reasons = []
    for field in CONFIG_FIELDS:
        if field not in allowed and cpu.extra_info[field] != accelerator.extra_info[field]:
            reasons.append(f"{field} differs (cpu {cpu.extra_info[field]}, {accelerator.device} {accelerator.extra_info[field]})")
    for field, version in cpu.versions.items():
        if version != accelerator.versions.get(field):
            reasons.append(f"{field} differs (cpu {version}, {accelerator.device} {accelerator.versions.get(field)})")
    return "; ".join(reasons) or None


def newest_per_device(results: list[Result]) -> dict[tuple, Result]:
    """The newest result of each benchmark on each device of each machine; ``results`` are in time order."""
    return {(result.identity, result.device, result.machine, result.host): result for result in results}


def pairs(results: list[Result]) -> list[Pair]:
    """Every CPU result matched with every accelerator result of the same benchmark on a machine with that CPU."""
    newest = newest_per_device(results).values()
    found = [Pair(cpu, accelerator, mismatch(cpu, accelerator))
             for cpu in newest if cpu.device == "cpu"
             for accelerator in newest
             if accelerator.device != "cpu" and accelerator.identity == cpu.identity and accelerator.host == cpu.host]
    return sorted(found, key=lambda p: (p.label, p.cpu.machine, p.accelerator.device, p.accelerator.machine))


def summary(document, source: str = "this run") -> str | None:
    """The ratio table of a pytest-benchmark JSON document just produced, or None when it holds no
    CPU/accelerator pair (a run on one device)."""
    found = pairs(sorted(parse(document, source), key=lambda result: result.run_time))
    return tables.render([pair.row() for pair in found]) if found else None
