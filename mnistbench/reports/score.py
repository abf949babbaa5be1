"""A machine's score against a reference run: 1000 times the geometric mean of (reference median / median) over
a fixed, versioned list of benchmarks, base and peak apart, as SPEC scores a machine against its reference.

The list is fixed work, the headline of every device's main job: an epoch of the articles' ``reference``
loop and one training and one inference step at the article's batch, in fp32 (``base``) and in the ``fast``
setup (``peak``), for both networks. A time to accuracy is left out: it also counts how many epochs a seed
needed, the recipe's luck more than the machine's speed. Benchmarks pair as everywhere in the reports
(``mnistbench.reports.pairs``): like with like, the newest comparable runs. A machine has a base or peak
score only when every benchmark of that half of the list paired comparably with the reference; otherwise
the row says what is missing or refused, since a mean over fewer benchmarks would not compare.

The default reference is run 0005, the Zen 5 EPYC's main job (2 cores, ``AuthenticAMD 26/2/1``): the only
committed run that holds every benchmark of the list in full 60,000-image epochs (the Zen 4's runs 0001-0004
lack the ``fast`` steps, and their ``fast`` epochs are of 12,800 images). A single file, so that the
reference stays put when newer runs of that machine are committed; its machine's own score is 1000 only
where its newest runs still read what run 0005 read.
"""
import statistics
from dataclasses import dataclass

import models

from ..variants import Variant
from . import compare, tables
from .pairs import Pair
from .results import Result, identity

VERSION = 1
DEFAULT_REFERENCE = "results/Linux-CPython-3.11-64bit/0005_ae6e97323ab830252d889ecaa12bbd5671ba0b75_20261124_040409.json"
SCALE = 1000
SCORED_MODELS = ("googlenet", "vgg")  # fixed with the list's VERSION: a model registered later is not scored


def _list(setup: str, step_variant: str) -> dict[tuple, str]:
    """One half of the list: ``{benchmark as results.identity writes it: a readable name}``."""
    listed = {identity("test_epoch", {"model_name": model, "setup": setup}): f"epoch {model} {setup}"
              for model in SCORED_MODELS}
    for model in SCORED_MODELS:
        batch = models.recipe(model).batch_size  # the article's
        for mode in ("train", "forward"):
            benchmark = identity("test_step", {"model_name": model, "batch_size": batch, "step_variant": step_variant,
                                               "mode": mode})
            listed[benchmark] = f"step-{mode} {model} b{batch} {'fast' if setup == 'fast' else 'fp32'}"
    return listed


BENCHMARKS = {"base": _list("reference", str(Variant())), "peak": _list("fast", "fast")}


@dataclass(frozen=True)
class Score:
    machine: str
    value: dict[str, float | None]  # per tuning; None when its list is not complete
    counted: dict[str, int]  # per tuning, how many of its benchmarks paired comparably
    missing: dict[str, list[str]]  # per tuning, what the machine lacks or what was refused, and why

    def row(self) -> dict:
        """The score as a table row: per tuning its value and how many of its benchmarks counted, and a note of
        what kept a half from its score."""
        row = {"machine": self.machine}
        for tuning, listed in BENCHMARKS.items():
            row[tuning] = self.value[tuning]
            row[f"{tuning}_benchmarks"] = f"{self.counted[tuning]}/{len(listed)}"
        row["note"] = " | ".join(f"{tuning}: {'; '.join(missing)}" for tuning, missing in self.missing.items() if missing)
        return row


def score(machine: str, ran: set[tuple], found: list[Pair]) -> Score:
    """The score of ``machine``, which ran the benchmarks ``ran``, from its pairs with the reference (the
    reference first)."""
    by_identity = {pair.a.identity: pair for pair in found}
    value, counted, missing = {}, {}, {}
    for tuning, listed in BENCHMARKS.items():
        ratios, absent = [], []
        for benchmark, name in listed.items():
            pair = by_identity.get(benchmark)
            if pair is not None and pair.speedup is not None:
                ratios.append(pair.speedup)
            elif pair is not None:
                absent.append(f"{name} refused, {pair.mismatch}")
            else:
                absent.append(f"{name} {'not in the reference' if benchmark in ran else 'not run'}")
        counted[tuning], missing[tuning] = len(ratios), absent
        value[tuning] = SCALE * statistics.geometric_mean(ratios) if not absent else None
    return Score(machine, value, counted, missing)


def listed(result: Result) -> bool:
    """Whether ``result`` is of a benchmark the score lists."""
    return any(result.identity in half for half in BENCHMARKS.values())


def scores(reference: list[Result], results: list[Result]) -> list[Score]:
    """The score of every machine of ``results`` that ran a listed benchmark, against ``reference``."""
    found = []
    for machine in dict.fromkeys(result.machine for result in results):
        side = [result for result in results if result.machine == machine and listed(result)]
        if side:
            ran = {result.identity for result in side}
            found.append(score(machine, ran, compare.pairs(reference, side, ("reference", "this machine"))))
    return found


def render(found: list[Score], reference: list[Result], reference_name: str, fmt: str,
           machine_keys: dict[str, str]) -> str:
    """The scores as a table in ``fmt`` (``tables.FORMATS``): in CSV and JSON one row per machine with the
    reference run's name and what kept a half from its score; in Markdown the list and the reference named
    first, the reference machine by its key, and what was not scored after the table."""
    rows = [{**found_score.row(), "reference": reference_name} for found_score in found]
    if fmt != "markdown":
        return tables.render(rows, fmt)
    machine = ", ".join(dict.fromkeys(result.machine for result in reference if listed(result)))
    header = (f"score v{VERSION} against the reference {reference_name}: {SCALE} x the geometric mean of reference "
              f"median / median over the list's {len(BENCHMARKS['base'])} base and {len(BENCHMARKS['peak'])} peak "
              f"benchmarks; higher is faster; a half of the list not complete has no score.")
    table = tables.render([{**{k: v for k, v in row.items() if k != "note"}, "reference": machine} for row in rows],
                          machine_keys=machine_keys)
    notes = [f"- {machine_keys[row['machine']]} {row['note']}" for row in rows if row["note"]]
    return "\n\n".join([header, table] + (["Not scored:\n" + "\n".join(notes)] if notes else []))
