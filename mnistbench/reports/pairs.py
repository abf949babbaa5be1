"""Pairs: one benchmark measured on two sides, divided only when like is compared with like.

The one mechanism behind ``ratio`` (a CPU against an accelerator of the same host), ``compare`` (machine A
against machine B) and ``score`` (a machine against a reference run). Two results pair when they are the
same benchmark (``Result.identity``: the test and its parameters less the device). A pair whose
configuration differs anyway (samples per round, batch, dataset, precision, the seeds of a time to
accuracy, the torch version...) is listed with the reason and no ratio: dividing unlike numbers is how the
articles' "23x" was made. The device's own fields always differ. The one exception is the ``fast`` setup,
recipe and step: each side at its own measured best variant on the same network, data, optimizer and
batch; there the variant fields may differ too. The optimizer's implementation (for-loop, foreach, fused:
the same arithmetic) never refuses a pair.

Where a side holds several runs of a benchmark, the newest comparable pair is used (the one whose older
result is newest), else the newest result of each side, with the reason they differ. A pair with a side
that ran disturbed (``mnistbench.quiet``) says so (``Pair.disturbed``): its ratio may be the machine's
mood, not its speed.
"""
from dataclasses import dataclass

from .results import CONFIG_FIELDS, VARIANT_FIELDS, Result

# Fields expected to differ between the two sides of a pair.
DEVICE_FIELDS = ("device", "device_name")


@dataclass(frozen=True)
class Pair:
    """One benchmark measured on two sides, ``a`` the baseline: divided only when ``mismatch`` is None, and
    marked where a side ran on a machine that was not quiet."""

    a: Result  # the baseline: the CPU, machine A, the reference run
    b: Result
    mismatch: str | None  # why the two may not be divided, or None
    disturbed: str | None = None  # which side ran on a machine that was not quiet, and why; or None

    @property
    def speedup(self) -> float | None:
        """How many times faster ``b`` ran than ``a``: ``a``'s median time over ``b``'s; None when refused."""
        return None if self.mismatch else self.a.median / self.b.median

    @property
    def energy_ratio(self) -> float | None:
        """How many times less energy per image ``b`` used than ``a``: ``a``'s joules per image over ``b``'s; None
        when refused or where either side's energy was not measured."""
        if self.mismatch or self.a.images_per_joule is None or self.b.images_per_joule is None:
            return None
        return self.b.images_per_joule / self.a.images_per_joule

    @property
    def label(self) -> str:
        return self.a.pair_label


def with_energy(found: list[Pair]) -> bool:
    """Whether any of ``found`` has an energy ratio: only then does a table carry the energy columns."""
    return any(pair.energy_ratio is not None for pair in found)


def differing(a_info: dict, b_info: dict, fast: bool) -> list[str]:
    """The configuration fields (``CONFIG_FIELDS``) whose values differ between two benchmarks' ``extra_info``
    (``results.STORED_DEFAULTS`` filling the fields older results lack), less the device's own, and the variant's
    where both are ``fast`` (each side at its own measured best). The one rule of what compares with what: the
    pairs here, the gate's baselines (``mnistbench.gate``)."""
    allowed = DEVICE_FIELDS + (VARIANT_FIELDS if fast else ())
    return [field for field in CONFIG_FIELDS if field not in allowed and a_info.get(field) != b_info.get(field)]


def mismatch(a: Result, b: Result, names: tuple[str, str] = ("a", "b")) -> str | None:
    """Which configuration fields or library versions differ between ``a`` and ``b``, if any, each side
    called by its name in ``names``; in a ``fast`` pair the variant fields may differ."""
    reasons = [f"{field} differs ({names[0]} {a.extra_info[field]}, {names[1]} {b.extra_info[field]})"
               for field in differing(a.extra_info, b.extra_info, a.fast and b.fast)]
    reasons += [f"{field} differs ({names[0]} {version}, {names[1]} {b.versions.get(field)})"
                for field, version in a.versions.items() if version != b.versions.get(field)]
    return "; ".join(reasons) or None


def disturbed(a: Result, b: Result, names: tuple[str, str] = ("a", "b")) -> str | None:
    """Which of ``a`` and ``b`` ran disturbed, each called by its name in ``names``, with why; None if neither."""
    said = [f"{name} disturbed: {'; '.join(result.disturbed_by)}" for name, result in zip(names, (a, b))
            if result.disturbed_by]
    return "; ".join(said) or None


def _signature(result: Result) -> tuple:
    """What ``mismatch`` reads of a result: results of one signature pair alike with any other."""
    compared = [field for field in CONFIG_FIELDS if field not in DEVICE_FIELDS]
    return result.fast, tuple(str(result.extra_info[field]) for field in compared), tuple(result.versions.items())


def _by_benchmark(side: list[Result]) -> dict[tuple, dict[tuple, Result]]:
    """``{identity: {signature: newest result}}`` of one side (``side`` in time order)."""
    grouped: dict[tuple, dict[tuple, Result]] = {}
    for result in side:
        grouped.setdefault(result.identity, {})[_signature(result)] = result
    return grouped


def match(a_side: list[Result], b_side: list[Result], names: tuple[str, str] = ("a", "b")) -> list[Pair]:
    """One pair per benchmark that both sides hold (each side in time order), named by ``names`` in the
    refusals; the newest comparable pair, else the newest of each side with the reason they differ."""
    a_by, b_by = _by_benchmark(a_side), _by_benchmark(b_side)
    found = []
    for identity in a_by.keys() & b_by.keys():
        candidates = [(a, b) for a in a_by[identity].values() for b in b_by[identity].values()]
        comparable = [(a, b) for a, b in candidates if mismatch(a, b) is None]
        if comparable:
            a, b = max(comparable, key=lambda p: sorted((p[0].run_time, p[1].run_time)))
        else:
            a, b = (max(side[identity].values(), key=lambda result: result.run_time) for side in (a_by, b_by))
        found.append(Pair(a, b, mismatch(a, b, names), disturbed(a, b, names)))
    return sorted(found, key=lambda pair: pair.label)


def unpaired(side: list[Result], other: list[Result]) -> list[str]:
    """The labels of the benchmarks ``side`` holds and ``other`` does not, sorted."""
    others = {result.identity for result in other}
    return sorted({result.pair_label for result in side if result.identity not in others})
