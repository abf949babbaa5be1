"""The ``fast`` setup: the fastest variant *measured on the machine at hand*, never a constant.

Machines that share a name differ: a Zen 4 EPYC runs bf16 natively, a first-generation EPYC emulates
it several times slower than fp32. So before the first ``fast`` case of a model on a device, a short
untimed probe trains a few steps of each candidate variant and keeps the fastest. fp32 eager with the
default Adam (what ``resident`` runs) is always a candidate, so ``fast`` is never slower than it by more
than the probe's noise. The probe is bounded: each precision and memory format is first screened on a
small batch, where an emulated precision shows at a fraction of the cost; at the full batch a candidate
much slower than the best so far is dropped after its first two timed steps. Convolutions as matrix products
(``matmul``) are then tried on top of every eager variant that passed its screen, dropped at the full batch or
not, where the model has convolutions on small maps (``setups.FastPolicy.candidates``; elsewhere they are the
same kernels): what they gain depends on the precision, and one timing of a shared VM's step is too noisy to
pick the variant they should go on (on a 2-core Intel Xeon they made GoogLeNet's step 0.44-0.54 of the
reference one in bf16 with fused Adam, a base one probe had dropped as over 1.5x the fastest). Compiled modes
are tried on top of the best eager variant only, since compilation costs seconds to minutes per candidate,
and the step captured whole as a CUDA graph (``cudagraphs-step``), which compiles nothing, on top of every
eager variant timed at the full batch: eager steps bound by kernel launches differ little,
and the captured ones by their arithmetic (on an H200, VGGNet's eager steps 3.1-4.8 ms in every precision and
format, its captured ones 0.53-1.21 ms).

The candidates left within ``FINALIST_FACTOR`` of the best, the finalists, are then timed in alternation,
A B A B ... for ``Turns.first`` turns on the models they have warmed up, and each is judged by the median of its
turns' fastest steps: a machine whose speed drifts during the probe (a shared VM's does, by 50% within
minutes) slows every finalist alike, where timing one after the other would hand the choice to whichever
ran in the faster minute. A variant
more complex than a simpler finalist (departing from fp32 eager in more ways) must beat it by ``MARGIN``
to be chosen over it, so that noise does not pick a fragile variant for nothing, and must do so on the turns
themselves: its step over the simpler one's in the same turn, a ratio per turn, is below ``1 - MARGIN`` by
a one-sided Wilcoxon signed-rank test at ``ALPHA`` (through scipy); one below by the median and not by the
test gets ``Turns.more`` more turns against that simpler one alone, a duel, and then the test decides on the
pair's turns. A duel's turns are shorter than the finalists' together, and a drifting machine moves less
within each: on a 2-core Intel Xeon, GoogLeNet's bf16 ``matmul`` step over its fp32 one read 0.83-1.59 in
turns of four finalists and 0.85-1.00 in a duel's that followed them. A variant whose true gain sits near the
margin then loses nearly every probe instead of winning one in two: on a 2-core Intel Xeon, VGGNet's fused
Adam over its default read 0.91, 0.98 and 0.95 of it in three probes judged by their medians alone, and the
choice flipped between them. Steps shorter than a few
milliseconds (a GPU's) are timed more often. A candidate that raises is broken, not unrunnable (what a
device cannot run never becomes a candidate, ``Variant.unsupported_on``): the probe goes on without it, the
choice is not cached, and the run fails at its end naming it (``broken``). Nor is a choice cached whose
probe ran on a machine that was not quiet (the watchers of ``mnistbench.watch``, ``mnistbench.quiet``'s
among them): the next run measures again.

The choice, every candidate's timing and each finalist's verdict on its turns (``Verdict``) go into each
result that used it. A choice can be pinned
(``--fast-variant``), and is cached on disk by device identity (and a GPU's host CPU), library versions,
model, batch size and candidates, so that repeated runs skip the probe; a lock keeps two processes from
probing the same key at once.
"""
import contextlib
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import filelock
import torch
import torchvision

import models

from . import atomic, devices, machine, training, watch
from .pipelines import normalized_images
from .variants import Variant

SCREEN_BATCH = 4
SCREEN_FACTOR = 3.0  # a screen this many times slower than the best is an emulated or broken path
DROP_FACTOR = 1.5  # at the full batch, a candidate whose first timed steps are this much slower drops out
DROP_AFTER = 2  # timed steps, the fastest of which decides: one step of a shared VM can be 2.5x its next
MARGIN = 0.05  # how much faster a more complex variant must be than a simpler best to replace it
TIMED_STEPS = 3  # at least; short steps are timed until about TIMED_SECONDS, at most MAX_TIMED_STEPS
TIMED_SECONDS = 0.1
MAX_TIMED_STEPS = 50
ALPHA = 0.05  # the one-sided test's level; with 7 turns its smallest p-value is 1/128
# A finalist's first timing is within this factor of the best's: a candidate slower than that would need the
# machine's speed to drift by as much within the second or two between two timings to be the faster.
FINALIST_FACTOR = 1.25


@dataclass(frozen=True)
class Turns:
    """How long the finalists take turns (``probe``)."""

    first: int = 7  # turns, sharing as many steps as the finalists' first timings took
    more: int = 8  # a duel's turns, when a finalist is faster by the median but not by the test: 15 in all
    steps: int = 3  # at least, a turn: the first step after another finalist's runs on caches that one filled


# A smoke run's probe checks that the path works, not which variant wins: two turns of one step (too few for
# the test to call any finalist faster, so the simplest wins), on a small batch whatever the recipe's (the
# full probe costs GoogLeNet's smoke cases a minute on a slow 2-core CPU, seven turns 11 s of a 2-core Xeon).
SMOKE_TURNS = Turns(first=2, more=0, steps=1)
SMOKE_PROBE_BATCH = 16
CACHE_ENV = "MNISTBENCH_CACHE"


@dataclass(frozen=True)
class Choice:
    """The variant ``fast`` runs, where it came from, and what the probe measured (ms per step, or why a
    candidate was dropped)."""

    variant: Variant
    source: str  # "probe", "cache" or "pinned"
    batch_size: int
    timings: dict = field(default_factory=dict)
    disturbed_by: tuple[str, ...] = ()  # why the machine was not quiet during this run's probe
    verdicts: tuple[dict, ...] = ()  # how the finalists were judged on their turns (``Verdict.info``)

    def info(self) -> dict:
        found = {"fast_variant": str(self.variant), "fast_source": self.source, "fast_probe_batch": self.batch_size,
                 "fast_probe_ms": self.timings, "fast_probe_verdicts": list(self.verdicts)}
        if self.source == "probe":
            found["fast_probe_disturbed_by"] = list(self.disturbed_by)
        return found


@dataclass(frozen=True)
class Verdict:
    """A finalist judged against the best finalist so far on their alternated turns (``_judge``): what a reader
    of a result needs to see why the probe chose as it did."""

    candidate: Variant
    against: Variant
    ratios: tuple[float, ...]  # the candidate's step over the other's, turn by turn (a duel's turns included)
    # (``info``'s median ratio is the one ``_judge`` decides by: of an even count, the middle two's geometric mean)
    bound: float  # what the ratios must come under: 1, or ``1 - MARGIN`` for a more complex candidate
    p_value: float | None  # the one-sided Wilcoxon test's, when the median ratio is under the bound
    replaces: bool | None  # None: under the bound by the median only, not by the test

    def info(self) -> dict:
        outcome = {True: "replaced", False: "not under the bound",
                   None: "under the bound by the median only, not by the test"}[self.replaces]
        median_ratio = math.exp(statistics.median([math.log(ratio) for ratio in self.ratios]))
        return {"candidate": str(self.candidate), "against": str(self.against), "outcome": outcome,
                "median_ratio": round(median_ratio, 4), "bound": self.bound,
                "p_value": None if self.p_value is None else round(self.p_value, 4),
                "ratios": [round(ratio, 4) for ratio in self.ratios]}


def cache_path() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mnistbench") / "fast-variants.json"


def _cache_key(model_name: str, device: str, batch_size: int, candidates: list[Variant], schedule: str) -> str:
    """A GPU's launch-bound steps also depend on the CPU that launches them: its host is part of the key. Each
    candidate is keyed with the Adam it builds under the recipe's ``schedule`` (``Variant.optimizer_options``)."""
    host = machine.identity_here("cpu") if device != "cpu" else None
    return json.dumps({"machine": machine.identity_here(device), "host": host, "torch": torch.__version__,
                       "torchvision": torchvision.__version__, "threads": torch.get_num_threads(),
                       "model": model_name, "batch_size": batch_size,
                       "candidates": sorted(f"{candidate} {sorted(candidate.optimizer_options(schedule).items())}"
                                            for candidate in candidates)}, sort_keys=True)


def _read_cache() -> dict:
    try:
        cached = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) else {}


def _cached_choice(entry, batch_size: int, device: str, candidates: list[Variant]) -> Choice | None:
    """The choice a cache entry holds, or None for one this version cannot read (cut short, of another version,
    or edited by hand into a variant the probe could not have chosen: one ``device`` cannot run, or neither the
    baseline nor one of ``candidates``): the probe then measures again and writes it anew."""
    if not isinstance(entry, dict):
        return None
    # an entry of a version before the verdicts were kept is measured again: its result would hold none
    text, timings, verdicts = entry.get("variant"), entry.get("timings", {}), entry.get("verdicts")
    if not (isinstance(text, str) and isinstance(timings, dict) and isinstance(verdicts, list)
            and all(isinstance(verdict, dict) for verdict in verdicts)):
        return None
    try:
        variant = Variant.parse(text)
    except ValueError:
        return None
    if variant.unsupported_on(device) or variant not in (Variant(), *candidates):
        return None
    return Choice(variant, "cache", batch_size, timings, verdicts=tuple(verdicts))


def _write_cache(key: str, choice: Choice) -> None:
    """Add one choice, through a temporary file and a rename: never half a file, even when interrupted."""
    path = cache_path()
    cached = _read_cache()
    cached[key] = {"variant": str(choice.variant), "timings": choice.timings, "verdicts": list(choice.verdicts),
                   "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.replacing(path) as partial:
            partial.write_text(json.dumps(cached, indent=1))
    except OSError:
        pass  # an unwritable cache only means the next run probes again


@contextlib.contextmanager
def _cache_lock():
    """An exclusive lock on the cache, so that pytest-xdist workers sharing it probe each key once; none where
    the cache folder cannot be written (then every run probes anyway)."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(f"{path}.lock")
        lock.acquire()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


class TrainingSteps:
    """Times training steps of one model on one device on a batch of digits, in any variant: the probe's
    candidates, the budget's fp32 step (``mnistbench.estimate``) and the profiled steps (``mnistbench.profile``)."""

    def __init__(self, model_name: str, device: str, train_set, batch_size: int, schedule: str = "constant"):
        self.model_name, self.device = model_name, device
        # the article's rate, for steps timed without a schedule; the schedule the case trains under can change
        # Adam's implementation (``Variant.optimizer_options``), which the steps must time
        recipe = replace(models.recipe(model_name), schedule=schedule)
        self.recipe = recipe
        self.images = normalized_images(train_set.data[:batch_size], recipe.normalize_mean, recipe.normalize_std)
        self.labels = train_set.targets[:batch_size]
        self.kept: dict[Variant, tuple] = {}  # a timed candidate's running steps and how many it times a turn

    def steps(self, variant: Variant, batch_size: int):
        """A generator of the wall times of successive synchronised training steps in ``variant``."""
        variant.configure_backends(self.device)  # the cuDNN autotuning that the timed runs get
        torch.manual_seed(0)
        model = models.build(self.model_name).to(self.device)
        step = training.make_train_step(variant.prepare_model(model), training.make_optimizer(model, self.recipe, variant),
                                        self.device, variant)
        images, labels = self.images[:batch_size].to(self.device), self.labels[:batch_size].to(self.device)
        while True:
            start = time.perf_counter()
            step(images, labels)
            devices.synchronize(self.device)
            yield time.perf_counter() - start

    def time(self, variant: Variant, batch_size: int, warm_up: int, timed: int, give_up_after: float,
             keep: bool = False) -> float | None:
        """The fastest of at least ``timed`` steps after ``warm_up`` untimed ones (fp16: as many as its loss
        scale needs), more for short steps (``TIMED_SECONDS``); None as soon as the fastest of ``DROP_AFTER``
        or more timed steps is slower than ``give_up_after`` seconds. ``keep``: the model stays warm for ``alternate``."""
        steps = self.steps(variant, batch_size)
        for _ in range(variant.warm_up_steps(warm_up)):
            next(steps)
        best, count = math.inf, timed
        for index in range(MAX_TIMED_STEPS):
            if index == count:
                break
            best = min(best, next(steps))
            if best > give_up_after and index + 1 >= DROP_AFTER:
                return None
            if index == 0:
                count = min(MAX_TIMED_STEPS, max(timed, math.ceil(TIMED_SECONDS / best)))
        if keep:
            self.kept[variant] = (steps, count)
        return best

    def keep_only(self, finalists: list[Variant]) -> None:
        """Let go of every timed candidate's warm model but the ``finalists``': a GPU would hold each one's
        model, optimizer state and CUDA graph pool until the probe ends."""
        for variant in set(self.kept) - set(finalists):
            self.kept.pop(variant)[0].close()

    def alternate(self, finalists: list[Variant], turns: int, steps: int) -> dict[Variant, list[float]]:
        """Each finalist's fastest step in each of ``turns`` turns, the finalists taking turns (A B A B ...), on
        the models their first timing warmed up (``keep``): the steps that timing took, shared among the turns
        (at least ``steps`` a turn)."""
        fastest: dict[Variant, list[float]] = {variant: [] for variant in finalists}
        for _ in range(turns):
            for variant in finalists:
                running, count = self.kept[variant]
                variant.configure_backends(self.device)  # each variant's switches, as its steps were warmed up
                fastest[variant].append(min(next(running) for _ in range(max(steps, math.ceil(count / turns)))))
        return fastest


def probe(model_name: str, device: str, train_set, batch_size: int, candidates: list[Variant],
          turns: Turns = Turns(), schedule: str = "constant") -> tuple[Variant, dict, list[Verdict]]:
    """The fastest of ``candidates`` (plus the fp32 baseline) for a recipe with the learning-rate ``schedule``,
    every candidate's ms per step (a finalist's from its alternated turns, another's from its first timing)
    or fate (``failed: ...`` for one that raised), and how the finalists were judged on their turns."""
    baseline = Variant()
    candidates = [baseline] + [c for c in distinct(candidates, device) if c != baseline]
    runner = TrainingSteps(model_name, device, train_set, batch_size, schedule)
    timings: dict[str, float | str] = {}
    screens: dict[tuple, float] = {}
    timed: dict[Variant, float] = {}  # the candidates timed at the full batch, by their first timing
    screened = []  # the eager variants that passed their screen, the ones matmul goes on
    best, best_seconds = baseline, math.inf
    for variant in [c for c in candidates if c.compile == "eager" and c.convolution == "native"]:
        numerics, screen_batch = (variant.precision, variant.memory_format), min(SCREEN_BATCH, batch_size)
        if numerics not in screens:
            give_up = SCREEN_FACTOR * min(screens.values(), default=math.inf)
            screens[numerics] = runner.time(variant, screen_batch, warm_up=1, timed=2, give_up_after=give_up) or math.inf
        if screens[numerics] > SCREEN_FACTOR * min(screens.values()):
            timings[str(variant)] = f"dropped: over {SCREEN_FACTOR:g}x slower than the best on a batch of {screen_batch}"
            continue
        screened.append(variant)
        if (seconds := _try(runner, variant, batch_size, 1, best_seconds, timings)) is not None:
            timed[variant] = seconds
            if _beats(variant, seconds, best, best_seconds):
                best, best_seconds = variant, seconds
    for matmul in [replace(variant, convolution="matmul") for variant in screened]:  # dropped at the full batch or not
        if matmul in candidates and (seconds := _try(runner, matmul, batch_size, 1, best_seconds, timings)) is not None:
            timed[matmul] = seconds
            if _beats(matmul, seconds, best, best_seconds):
                best, best_seconds = matmul, seconds
    best_eager, timed_eager = best, set(timed)
    for variant in [c for c in candidates if c.compile != "eager"]:
        on_top_of = replace(variant, compile="eager")
        if on_top_of != best_eager if variant.compiles else on_top_of not in timed_eager:
            continue  # compiled modes on top of the best eager variant only, the captured step on each one timed
        if (seconds := _try(runner, variant, batch_size, training.WARM_UP_STEPS, best_seconds, timings)) is not None:
            timed[variant] = seconds
            if _beats(variant, seconds, best, best_seconds):
                best, best_seconds = variant, seconds
    # the rest keep their first timing in ``timings``; the finalists' become the median of their turns
    finalists = [variant for variant, seconds in timed.items() if seconds <= FINALIST_FACTOR * best_seconds]
    runner.keep_only(finalists)
    if len(finalists) < 2:
        return best, timings, []
    taken = runner.alternate(finalists, turns.first, turns.steps)
    duel = (lambda pair: runner.alternate(pair, turns.more, turns.steps)) if turns.more else None
    best, verdicts = _settle(finalists, taken, duel)
    timings.update({str(variant): round(statistics.median(seconds) * 1e3, 2) for variant, seconds in taken.items()})
    return best, timings, verdicts


def _settle(finalists: list[Variant], turns: dict[Variant, list[float]], duel=None) -> tuple[Variant, list[Verdict]]:
    """The finalist chosen on the alternated ``turns`` (seconds a step, turn by turn), simplest first, each
    replacing the best so far when it beats it there (``_judge``), and each judgement. One faster by the median
    and not by the test is judged again on those turns and on ``duel([best, it])``'s, the two taking turns
    alone (a dict like ``turns``); without ``duel`` (a smoke probe's), or when still left open, it does not
    replace."""
    simplest_first = sorted(finalists, key=lambda variant: (_departures(variant), statistics.median(turns[variant])))
    best, verdicts = simplest_first[0], []
    for variant in simplest_first[1:]:
        verdict = _judge(variant, turns[variant], best, turns[best])
        if verdict.replaces is None and duel is not None:
            more = duel([best, variant])
            verdict = _judge(variant, turns[variant] + more[variant], best, turns[best] + more[best])
        verdicts.append(verdict)
        if verdict.replaces:
            best = variant
    return best, verdicts


def distinct(candidates: list[Variant], device: str) -> list[Variant]:
    """``candidates`` without repeats and without a second name for the same kernels: on CUDA, Adam's
    ``default`` is its ``foreach`` implementation, so a ``foreach`` candidate beside its ``default`` twin
    would only be measured twice."""
    unique = list(dict.fromkeys(candidates))
    if torch.device(device).type != "cuda":
        return unique
    names = set(unique)
    return [c for c in unique if not (c.optimizer == "foreach" and replace(c, optimizer="default") in names)]


def _departures(variant: Variant) -> int:
    """How many ways ``variant`` departs from fp32 eager with the default Adam and native convolutions: a
    measure of its complexity."""
    baseline = Variant()
    return sum(getattr(variant, f.name) != getattr(baseline, f.name) for f in fields(Variant))


def _bound(variant: Variant, best: Variant) -> float:
    """The ratio of its step to ``best``'s that ``variant`` must come under to replace it: 1, or ``1 - MARGIN``
    when it is more complex."""
    return 1 - MARGIN if _departures(variant) > _departures(best) else 1.0


def _beats(variant: Variant, seconds: float, best: Variant, best_seconds: float) -> bool:
    """Whether ``variant`` at ``seconds`` a step replaces ``best`` (``_bound``)."""
    return seconds < best_seconds * _bound(variant, best)


def _judge(variant: Variant, seconds: list[float], best: Variant, best_seconds: list[float]) -> Verdict:
    """Whether ``variant`` replaces ``best`` on their alternated turns (seconds a step, turn by turn): its
    ratio to ``best`` per turn is below 1 (``1 - MARGIN`` when it is more complex) by the median and by a
    one-sided Wilcoxon signed-rank test at ``ALPHA``; ``replaces`` is None when by the median only (more turns
    may tell); equal steps in every turn never replace."""
    from scipy.stats import wilcoxon  # here, not at the top: scipy.stats costs every pytest process 0.7 s to import

    bound = _bound(variant, best)
    ratios = tuple(mine / theirs for mine, theirs in zip(seconds, best_seconds))
    below = [math.log(ratio) - math.log(bound) for ratio in ratios]
    if statistics.median(below) >= 0:
        return Verdict(variant, best, ratios, bound, None, False)
    p_value = float(wilcoxon(below, alternative="less").pvalue)
    return Verdict(variant, best, ratios, bound, p_value, True if p_value < ALPHA else None)


def _try(runner: TrainingSteps, variant: Variant, batch_size: int, warm_up: int, best_seconds: float, timings: dict):
    """Time ``variant`` at the full batch, keeping its model warm, and record it; its seconds, or None when it
    was dropped (slower than ``DROP_FACTOR`` x ``best_seconds``) or raised. A candidate that raises is
    recorded as broken; running out of memory is a limit of the device at this batch, not a fault."""
    try:
        seconds = runner.time(variant, batch_size, warm_up=warm_up, timed=TIMED_STEPS,
                              give_up_after=DROP_FACTOR * best_seconds, keep=True)
    except torch.OutOfMemoryError:
        timings[str(variant)] = f"dropped: out of memory at batch {batch_size}"
        return None
    except Exception as error:
        timings[str(variant)] = f"failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:160]}"
        return None
    if seconds is None:
        timings[str(variant)] = f"dropped: a step over {DROP_FACTOR:g}x the best so far"
        return None
    timings[str(variant)] = round(seconds * 1e3, 2)
    return seconds


_CHOSEN: dict[str, Choice] = {}
_BROKEN: list[str] = []


def choose(model_name: str, device: str, train_set, batch_size: int, candidates: list[Variant], *,
           pinned: Variant | None = None, use_cache: bool = True, save: bool = True, save_disturbed: bool = False,
           turns: Turns = Turns(), schedule: str = "constant") -> Choice:
    """The fast variant of ``model_name`` on ``device`` at ``batch_size`` for a recipe with the learning-rate
    ``schedule`` (its candidates are the schedule's, ``setups.FastPolicy.candidates``): ``pinned``, else a cached
    measurement, else a probe (saved to the cache when ``save``, i.e. when the probe had the machine to
    itself, when no candidate was broken, and when the machine was quiet around it, unless
    ``save_disturbed``). One choice per process and key."""
    if pinned is not None:
        return Choice(pinned, "pinned", batch_size)
    key = _cache_key(model_name, device, batch_size, candidates, schedule)
    if key in _CHOSEN:
        return _CHOSEN[key]
    with _cache_lock():
        cached = _cached_choice(_read_cache().get(key), batch_size, device, candidates) if use_cache else None
        if cached:
            choice = cached
        else:
            with watch.watching(device) as watched:  # the quiet check (mnistbench.quiet) among them
                variant, timings, verdicts = probe(model_name, device, train_set, batch_size, candidates, turns,
                                                   schedule)
            choice = Choice(variant, "probe", batch_size, timings, tuple(watched.info.get("disturbed_by", ())),
                            tuple(verdict.info() for verdict in verdicts))
            failed = [f"{model_name} on {device}, batch {batch_size}: {name} {fate}"
                      for name, fate in timings.items() if isinstance(fate, str) and fate.startswith("failed:")]
            _BROKEN.extend(failed)
            if save and not failed and (save_disturbed or not choice.disturbed_by):
                _write_cache(key, choice)
    _CHOSEN[key] = choice
    return choice


def broken() -> list[str]:
    """Every candidate that raised in this process's probes, one line each: a mode the device supports and
    that fails is a fault the run must report, though the probe chose among the rest."""
    return list(_BROKEN)
