"""GPU/CPU speed ratios: the CPU median over the accelerator median for the same benchmark.

The same-host case of ``mnistbench.reports.pairs``: an accelerator's results are divided by the results of its own host's CPU
(the machine that wrote them has that CPU), like by like (``pairs.mismatch``), the ``fast`` setup by the
``fast`` setup. Across several runs the newest comparable pair of each CPU and accelerator is used. The
articles' claims (``claims``) stand beside the rows of the articles' own job.
"""
from collections import defaultdict

from . import claims, machines, tables
from .pairs import Pair, match, with_energy
from .results import Result, parse

# Each side's images per joule and the energy ratio (the CPU's joules per image over the accelerator's).
ENERGY_COLUMNS = ("cpu_images_per_joule", "accelerator_images_per_joule", "energy_ratio")


def pairs(results: list[Result]) -> list[Pair]:
    """Every CPU of a host matched with every accelerator of the same host, benchmark by benchmark
    (``results`` in time order)."""
    cpus, accelerators = defaultdict(list), defaultdict(list)
    for result in results:
        if result.device == "cpu":
            cpus[result.host, result.machine].append(result)
        else:
            accelerators[result.host, result.device, result.machine].append(result)
    found = [pair
             for (cpu_host, _), cpu_side in cpus.items()
             for (host, device, _), accelerator_side in accelerators.items() if host == cpu_host
             for pair in match(cpu_side, accelerator_side, ("cpu", device))]
    return sorted(found, key=lambda p: (p.label, p.a.machine, p.b.device, p.b.machine))


def rows(found: list[Pair]) -> list[dict]:
    """One row per pair, with the energy columns only where a pair has energy on both sides (``with_energy``)."""
    table = [row(pair) for pair in found]
    return table if with_energy(found) else tables.without(table, ENERGY_COLUMNS)


def row(pair: Pair) -> dict:
    """A CPU/accelerator pair as a table row: each side's machine, variant, median (seconds) and images per joule,
    the speedup and energy ratio, why the pair may not be divided or ran disturbed, and the articles' claim
    beside their own job."""
    claim = claims.about(pair)
    measured = claim and claim.measured(pair)
    return {
        "benchmark": pair.label,
        "cpu": pair.a.machine,
        "cpu_variant": pair.a.variant,
        "cpu_median_s": pair.a.median,
        "cpu_images_per_joule": pair.a.images_per_joule,
        "accelerator": f"{pair.b.device} {pair.b.machine}",
        "accelerator_variant": pair.b.variant,
        "accelerator_median_s": pair.b.median,
        "accelerator_images_per_joule": pair.b.images_per_joule,
        "speedup": pair.speedup,
        "energy_ratio": pair.energy_ratio,
        "note": "; ".join(filter(None, [pair.mismatch, pair.disturbed])),
        "article_claim": f"{claim.text}{f'; measured {measured}' if measured else ''}" if claim else "",
    }


def why_unpaired(results: list[Result]) -> str:
    """Why ``results`` hold no CPU/accelerator pair, host by host."""
    cpu_hosts = sorted({result.host for result in results if result.device == "cpu"})
    accelerators = defaultdict(set)
    for result in results:
        if result.device != "cpu":
            accelerators[result.host].add(result.device)
    if not accelerators:
        return "every result read ran on the CPU: no accelerator result to divide by its host's CPU"
    reasons = []
    for host, devices in sorted(accelerators.items()):
        names = ", ".join(sorted(devices))
        if host in cpu_hosts:
            reasons.append(f"host {host} has CPU and {names} results but no benchmark in common")
        else:
            reasons.append(f"the {names} results come from host {host}, which has no CPU result")
    if not cpu_hosts:
        reasons.append("no result read ran on a CPU")
    elif not set(cpu_hosts) & accelerators.keys():
        reasons.append(f"the CPU results come from {'; '.join(f'host {host}' for host in cpu_hosts)}")
    return "; ".join(reasons) + " (an accelerator is divided only by its own host's CPU)"


def summary(document, source: str = "this run") -> str | None:
    """The ratio table of a pytest-benchmark JSON document just produced, or None when it holds no
    CPU/accelerator pair (a run on one device)."""
    results = sorted(parse(document, source), key=lambda result: result.run_time)
    found = pairs(results)
    return tables.render(rows(found), machine_keys=machines.keys(results)) if found else None
