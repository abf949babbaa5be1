"""How long a benchmark run will take, said before it starts, from this machine's own stored runs.

A benchmark's last stored run on the same device identity (``machine.identity``) gives its time: its
rounds times its median, plus its first (compiling) step. Benchmarks never run on this machine are
counted apart rather than guessed.
"""
import warnings
from dataclasses import dataclass

from . import machine
from .reports import results


@dataclass(frozen=True)
class Estimate:
    benchmarks: int
    known: int  # how many have a stored run on this machine
    seconds: float  # for the known ones

    def __str__(self) -> str:
        line = f"mnistbench: {self.benchmarks} benchmark(s) to run"
        if self.known:
            line += (f"; about {self.seconds / 60:.0f} min for the {self.known} timed on this machine before "
                     f"(from their stored runs)")
        if self.known < self.benchmarks:
            line += f"; {self.benchmarks - self.known} never stored here, so not estimated"
        return line


def estimate(node_ids: list[str], devices_by_id: dict[str, str], storage) -> Estimate:
    """The estimate for the benchmarks ``node_ids`` (pytest node ids, run on ``devices_by_id[node_id]``),
    from the runs stored under ``storage``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", results.ResultWarning)
        try:
            stored = results.load([storage])
        except results.NoResultsError:
            stored = []
    here = {device: machine.identity_here(device) for device in set(devices_by_id.values())}
    newest = {(result.name, result.machine): result for result in stored}  # oldest first, so the newest wins
    seconds, known = 0.0, 0
    for node_id in node_ids:
        result = newest.get((node_id, here.get(devices_by_id.get(node_id))))
        if result is not None:
            known += 1
            seconds += result.rounds * result.median + (result.extra_info.get("first_step_seconds") or 0)
    return Estimate(len(node_ids), known, seconds)
