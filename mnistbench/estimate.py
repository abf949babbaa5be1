"""How long each benchmark case will take here, before it starts: the estimate a timed run prints, and what
its time budget decides by (``mnistbench.budget``).

The best estimate of a case is what it cost in this machine identity's newest stored run: ``case_seconds``,
the wall time of its whole test (fast probe, compilation, warm-up, rounds, paused evaluations, torchrun's
launch); results stored before that field give rounds x median plus the first step. A case never stored
here gets a conservative model of what it does (``Case``): the training steps its configuration implies,
at the speed of an fp32 step of the same model, device and batch measured here before the run
(``StepSpeeds``), times ``SAFETY``, plus what those steps do not show: the reference pipeline's per-image
decoding, the images run forward only (time to accuracy's evaluations, inference steps; a third of a
training image each), the fast probe's candidates, and an allowance for each compilation and torchrun
launch, replaced by the longest compilation the run has measured once it has one.
"""
import math
import time
from dataclasses import dataclass

from . import machine
from .reports import results

SAFETY = 2.0  # the model counts the work it knows of; this covers what it does not (allocations, Python, noise)
COMPILE_ALLOWANCE_SECONDS = 90.0  # one torch.compile of a network, before the run has measured one
LAUNCH_ALLOWANCE_SECONDS = 30.0  # one torchrun launch: processes that import torch and meet at a rendezvous
FORWARD_FRACTION = 1 / 3  # an evaluation image costs about a third of a training image (no backward, no Adam)
PROBE_STEPS_PER_CANDIDATE = 6  # a fast-probe candidate: a screen, a warm-up and at least three timed steps


@dataclass(frozen=True)
class Case:
    """What one benchmark case will do, in the units the model prices: training steps of ``batch_size`` images
    of ``model`` on ``device`` (warm-up included), seconds of timing that do not depend on the step
    (pytest-benchmark calibrates a step benchmark for its ``--benchmark-max-time``), images decoded by the
    reference pipeline, images run forward only (test images evaluated, an inference step's), fast-probe
    candidates (eager, compiled) and torch.compile compilations, torchrun launches; and the fields a stored run
    of it must hold for its cost to stand for this one (``agrees``, its ``extra_info`` and ``rounds``: an
    epoch's images and rounds, a time to accuracy's images, seeds and recipe; a step's cost and a data-parallel
    run's size are set by what its id names)."""

    node_id: str
    model: str
    device: str
    batch_size: int
    steps: int
    timed_seconds: float = 0.0
    images_decoded: int = 0
    images_evaluated: int = 0
    probe_candidates: tuple[int, int] = (0, 0)
    compilations: int = 0
    launches: int = 0
    agrees: tuple[tuple[str, object], ...] = ()


class StepSpeeds:
    """Seconds per fp32 eager training step, measured here once per model, device and batch size on random
    digits (a warm-up step, then the fastest of a few), and the reference pipeline's decoding per image."""

    def __init__(self):
        self._steps: dict[tuple, float] = {}
        self._decode: float | None = None
        self._compilations: dict[tuple, float] = {}  # (model, device) -> the longest compilation measured

    def step(self, model: str, device: str, batch_size: int) -> float:
        """Seconds of one fp32 eager training step of ``model`` on ``device`` at ``batch_size``, measured at its
        first use (the fast probe's timing: one warm-up step, then the fastest of at least two)."""
        key = (model, device, batch_size)
        if key not in self._steps:
            from . import backends, data, fast  # noqa: PLC0415 (torch and the models only when a case needs it)
            from .variants import Variant  # noqa: PLC0415

            with backends.preserved():
                runner = fast.TrainingSteps(model, device, data.SyntheticMNIST(), batch_size)
                self._steps[key] = runner.time(Variant(), batch_size, warm_up=1, timed=2, give_up_after=math.inf)
        return self._steps[key]

    def decode(self) -> float:
        """Seconds per image of ``ToTensor`` + ``Normalize`` and collation in a ``DataLoader``."""
        if self._decode is None:
            from . import data, pipelines  # noqa: PLC0415

            images = 512
            pipeline = pipelines.build("reference", data.SyntheticMNIST(), 64, "cpu", samples=images)
            start = time.perf_counter()
            for _ in pipeline:
                pass
            self._decode = (time.perf_counter() - start) / images
        return self._decode

    def observe_compilation(self, model: str, device: str, seconds: float) -> None:
        """A compilation of ``model`` on ``device`` measured in this run: later estimates of the same model and
        device use the longest seen instead of the allowance. One network's compilation, or one Inductor
        found in its caches, says little of another's."""
        key = (model, device)
        self._compilations[key] = max(self._compilations.get(key, 0.0), seconds)

    def compile_seconds(self, model: str, device: str) -> float:
        """Seconds one compilation of ``model`` on ``device`` is expected to take: measured, else the allowance."""
        return self._compilations.get((model, device), COMPILE_ALLOWANCE_SECONDS)


def modelled(case: Case, speeds: StepSpeeds) -> float:
    """Conservative seconds for ``case`` on this machine (see the module's docstring)."""
    step = speeds.step(case.model, case.device, case.batch_size)
    eager, compiled = case.probe_candidates
    work = (case.steps + PROBE_STEPS_PER_CANDIDATE * (eager + compiled)) * step
    work += case.images_evaluated * FORWARD_FRACTION * step / case.batch_size
    work += case.images_decoded * speeds.decode() if case.images_decoded else 0.0
    compiling = (case.compilations + compiled) * speeds.compile_seconds(case.model, case.device)
    return SAFETY * (work + case.timed_seconds) + compiling + case.launches * LAUNCH_ALLOWANCE_SECONDS


def stored(result: results.Result) -> float:
    """What a stored result says its case cost: ``case_seconds``, or in older files its rounds and first step."""
    recorded = result.extra_info.get("case_seconds")
    if isinstance(recorded, (int, float)) and recorded > 0:
        return float(recorded)
    return result.rounds * result.median + (result.extra_info.get("first_step_seconds") or 0)


def newest_stored(storage, node_ids: list[str], devices_by_id: dict[str, str],
                  agrees: dict[str, tuple] | None = None) -> dict[str, float]:
    """Seconds of each of ``node_ids`` (pytest node ids, run on ``devices_by_id[node_id]``) in the newest run
    stored under ``storage`` on this machine identity whose fields hold ``agrees[node_id]`` (``Case.agrees``:
    a quick run's fifth of an epoch does not price a whole one, nor an old recipe a new one); ids never stored
    here so are left out."""
    here = {device: machine.identity_here(device) for device in set(devices_by_id.values())}
    agrees = agrees or {}
    newest = {}
    for result in results.load_quietly(storage):  # oldest first, so the newest that agrees wins
        fields = {**result.extra_info, "rounds": result.rounds}
        if result.name in devices_by_id and result.machine == here[devices_by_id[result.name]] and all(
                fields.get(name) == value for name, value in agrees.get(result.name, ())):
            newest[result.name] = result
    return {node_id: stored(newest[node_id]) for node_id in node_ids if node_id in newest}


@dataclass(frozen=True)
class Estimate:
    """What a timed run prints before its first case: its benchmarks, about how long they take here, and how
    many of the estimates come from stored runs and how many from the model."""

    benchmarks: int
    from_stored: int  # how many come from this machine's stored runs
    modelled: int  # how many from the model; the rest are tests the model does not know
    seconds: float

    def __str__(self) -> str:
        line = f"mnistbench: {self.benchmarks} benchmark(s) to run, about {self.seconds / 60:.0f} min"
        unknown = self.benchmarks - self.from_stored - self.modelled
        parts = [f"{self.from_stored} from this machine's stored runs"] if self.from_stored else []
        parts += [f"{self.modelled} modelled from a step measured here (conservative)"] if self.modelled else []
        parts += [f"{unknown} not estimated"] if unknown else []
        return f"{line} ({', '.join(parts)})" if parts else line
