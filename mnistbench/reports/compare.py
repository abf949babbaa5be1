"""Machine against machine: every benchmark both ran, and a geometric mean of the speedups, base and peak apart.

``mnistbench compare A B``: A is the baseline, B the machine measured against it; a benchmark's speedup is
A's median time over B's, above 1 where B is faster. Benchmarks pair as ``mnistbench.reports.pairs`` pairs
them (like with like, the newest comparable runs), device by device: each device of A with the same device
of B, or, where each side ran on one device only, the two whatever they are. The summary is SPEC's: the
geometric mean of the speedups over the benchmarks both ran, separately for ``base`` (the articles'
configuration on every machine) and ``peak`` (the ``fast`` setup, recipe and step, each machine in its own
best variant; ``Result.tuning``). The geometric mean is the mean of ratios that does not depend on which
side is the baseline: B's over A is 1 over A's over B. Where both sides of a pair measured their energy, the
table adds each side's images per joule and the energy ratio, A's joules per image over B's, and its geometric
means (``pairs.with_energy``).
"""
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from . import tables
from .pairs import Pair, match, unpaired, with_energy
from .results import Result

TUNINGS = ("base", "peak")
NAMES = ("A", "B")
# What the columns mean, said above every comparison.
READING = ("speedup: A's median time over B's (above 1, B is faster); spread: interquartile range over median, of N "
           "rounds; geometric means over the comparable pairs.")
ENERGY_COLUMNS = ("a_images_per_joule", "b_images_per_joule", "energy_ratio")
ENERGY_READING = ("images_per_joule: images per joule of the device's energy, where it was measured; energy_ratio: "
                  "A's joules per image over B's (above 1, B uses less energy per image).")


def pairs(a_side: list[Result], b_side: list[Result], names: tuple[str, str] = NAMES) -> list[Pair]:
    """The pairs of two sides (each in time order), device by device, or of their one device each."""
    a_devices, b_devices = ({result.device for result in side} for side in (a_side, b_side))
    if len(a_devices) == len(b_devices) == 1:
        return match(a_side, b_side, names)
    return [pair for device in sorted(a_devices & b_devices)
            for pair in match([r for r in a_side if r.device == device], [r for r in b_side if r.device == device],
                              names)]


def geometric_means(found: list[Pair], ratio: Callable[[Pair], float | None] = lambda pair: pair.speedup,
                    ) -> dict[str, tuple[float | None, int]]:
    """``{tuning: (geometric mean of the ratios, how many)}`` over the pairs of each tuning that have a ``ratio``
    (by default the speedup: the comparable pairs); None where there is none."""
    means = {}
    for tuning in TUNINGS:
        ratios = [value for pair in found if pair.a.tuning == tuning and (value := ratio(pair)) is not None]
        means[tuning] = (statistics.geometric_mean(ratios) if ratios else None, len(ratios))
    return means


def spread(result: Result) -> str:
    """The spread of a result's rounds: interquartile range over median, and how many rounds; one round has
    none."""
    if result.rounds == 1:
        return "1 round"
    return f"{result.relative_noise:.1%} of {result.rounds}"


@dataclass
class Comparison:
    """Machine B's results against machine A's (the baseline), each side in time order: their pairs, the table's
    rows and what its columns mean, and the benchmarks only one side ran."""

    a: list[Result]
    b: list[Result]

    @cached_property
    def pairs(self) -> list[Pair]:
        return pairs(self.a, self.b)

    @property
    def energy(self) -> bool:
        """Whether the table carries the energy columns."""
        return with_energy(self.pairs)

    @property
    def reading(self) -> str:
        """What the columns mean, said above the table."""
        return f"{READING} {ENERGY_READING}" if self.energy else READING

    @property
    def only_in_a(self) -> list[str]:
        return unpaired(self.a, self.b)

    @property
    def only_in_b(self) -> list[str]:
        return unpaired(self.b, self.a)

    def rows(self) -> list[dict]:
        """One row per pair (``tuning`` empty for benchmarks in neither mean), then one per geometric mean."""
        found = self.pairs
        several_devices = len({pair.a.device for pair in found}) > 1  # device by device: name each
        rows = []
        for pair in found:
            differ = pair.a.fast and pair.a.variant != pair.b.variant  # each side's own best variant
            variants = f"variants A {pair.a.variant}, B {pair.b.variant}" if differ else ""
            rows.append({
                "benchmark": pair.label + (f" ({pair.a.device})" if several_devices else ""),
                "tuning": pair.a.tuning or "",
                "a_machine": pair.a.machine,
                "a_median_s": pair.a.median,
                "a_spread": spread(pair.a),
                "a_images_per_joule": pair.a.images_per_joule,
                "b_machine": pair.b.machine,
                "b_median_s": pair.b.median,
                "b_spread": spread(pair.b),
                "b_images_per_joule": pair.b.images_per_joule,
                "speedup": pair.speedup,
                "energy_ratio": pair.energy_ratio,
                "note": "; ".join(filter(None, [pair.mismatch, variants, pair.disturbed])),
            })
        energy_means = geometric_means(found, lambda pair: pair.energy_ratio)
        for tuning, (mean, count) in geometric_means(found).items():
            energy_mean, energy_count = energy_means[tuning]
            disturbed = sum(1 for pair in found if pair.a.tuning == tuning and pair.speedup and pair.disturbed)
            note = (f"over {count} benchmark{'s' * (count != 1)}" + (f", {disturbed} with a disturbed side" if disturbed
                                                                     else "")) if count else "no comparable benchmark"
            rows.append({"benchmark": "geometric mean", "tuning": tuning, "a_machine": "", "a_median_s": None,
                         "a_spread": "", "a_images_per_joule": None, "b_machine": "", "b_median_s": None,
                         "b_spread": "", "b_images_per_joule": None, "speedup": mean, "energy_ratio": energy_mean,
                         "note": note + (f"; energy over {energy_count}" if energy_count not in (0, count) else "")})
        return rows if self.energy else tables.without(rows, ENERGY_COLUMNS)
