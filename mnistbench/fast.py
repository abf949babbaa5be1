"""The ``fast`` setup: the fastest variant *measured on the machine at hand*, never a constant.

Machines that share a name differ: a Zen 4 EPYC runs bf16 natively, a first-generation EPYC emulates
it several times slower than fp32. So before the first ``fast`` case of a model on a device, a short
untimed probe trains a few steps of each candidate variant and keeps the fastest. fp32 eager with the
default Adam (what ``resident`` runs) is always a candidate, so ``fast`` is never slower than it by more
than the probe's noise. The probe is bounded: each precision and memory format is first screened on a
small batch, where an emulated precision shows at a fraction of the cost; at the full batch a candidate
slower than the best so far is dropped after its first timed step. Compiled modes are tried on top of the
best eager variant only, since compilation costs seconds to minutes per candidate.

The choice and every candidate's timing go into each result that used it. A choice can be pinned
(``--fast-variant``), and is cached on disk by device identity, library versions, model, batch size and
candidates, so that repeated runs skip the probe.
"""
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision

import models

from . import atomic, devices, machine, training
from .pipelines import normalized_images
from .variants import Variant

SCREEN_BATCH = 4
SCREEN_FACTOR = 3.0  # a screen this many times slower than the best is an emulated or broken path
DROP_FACTOR = 1.5  # at the full batch, a first timed step this much slower than the best drops out
TIMED_STEPS = 3
# fp16's GradScaler starts at a loss scale of 65,536 and halves it, skipping Adam's update, on every step
# whose gradients overflow; only after those steps does an fp16 step do a whole step's work.
FP16_WARM_UP_STEPS = 20
CACHE_ENV = "MNISTBENCH_CACHE"


@dataclass(frozen=True)
class Choice:
    """The variant ``fast`` runs, where it came from, and what the probe measured (ms per step, or why a
    candidate was dropped)."""

    variant: Variant
    source: str  # "probe", "cache" or "pinned"
    batch_size: int
    timings: dict = field(default_factory=dict)

    def info(self) -> dict:
        return {"fast_variant": str(self.variant), "fast_source": self.source, "fast_probe_batch": self.batch_size,
                "fast_probe_ms": self.timings}


def cache_path() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mnistbench") / "fast-variants.json"


def _cache_key(model_name: str, device: str, batch_size: int, candidates: list[Variant]) -> str:
    return json.dumps({"machine": machine.identity_here(device), "torch": torch.__version__,
                       "torchvision": torchvision.__version__, "threads": torch.get_num_threads(),
                       "model": model_name, "batch_size": batch_size,
                       "candidates": sorted(map(str, candidates))}, sort_keys=True)


def _read_cache() -> dict:
    try:
        cached = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) else {}


def _write_cache(key: str, choice: Choice) -> None:
    """Add one choice, through a temporary file and a rename: never half a file, even when interrupted."""
    path = cache_path()
    cached = _read_cache()
    cached[key] = {"variant": str(choice.variant), "timings": choice.timings,
                   "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.replacing(path) as partial:
            partial.write_text(json.dumps(cached, indent=1))
    except OSError:
        pass  # an unwritable cache only means the next run probes again


class _Probe:
    """Times candidate training steps of one model on one device on a batch of real digits."""

    def __init__(self, model_name: str, device: str, train_set, batch_size: int):
        self.model_name, self.device = model_name, device
        recipe = models.recipe(model_name)
        self.recipe = recipe
        self.images = normalized_images(train_set.data[:batch_size], recipe.normalize_mean, recipe.normalize_std)
        self.labels = train_set.targets[:batch_size]

    def steps(self, variant: Variant, batch_size: int):
        """A generator of the wall times of successive synchronised training steps in ``variant``."""
        devices.prepare(self.device)  # the cuDNN autotuning that the timed runs get
        variant.configure_backends()
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

    def time(self, variant: Variant, batch_size: int, warm_up: int, timed: int, give_up_after: float) -> float | None:
        """The fastest of ``timed`` steps after ``warm_up`` untimed ones; None as soon as one timed step is
        slower than ``give_up_after`` seconds."""
        steps = self.steps(variant, batch_size)
        for _ in range(max(warm_up, FP16_WARM_UP_STEPS) if variant.precision == "fp16" else warm_up):
            next(steps)
        best = math.inf
        for _ in range(timed):
            best = min(best, next(steps))
            if best > give_up_after:
                return None
        return best


def probe(model_name: str, device: str, train_set, batch_size: int, candidates: list[Variant]) -> tuple[Variant, dict]:
    """The fastest of ``candidates`` (plus the fp32 baseline) and every candidate's ms per step or fate."""
    baseline = Variant()
    candidates = [baseline] + [c for c in dict.fromkeys(candidates) if c != baseline]
    runner = _Probe(model_name, device, train_set, batch_size)
    timings: dict[str, float | str] = {}
    screens: dict[tuple, float] = {}
    best, best_seconds = baseline, math.inf
    for variant in [c for c in candidates if c.compile == "eager"]:
        numerics, screen_batch = (variant.precision, variant.memory_format), min(SCREEN_BATCH, batch_size)
        if numerics not in screens:
            give_up = SCREEN_FACTOR * min(screens.values(), default=math.inf)
            screens[numerics] = runner.time(variant, screen_batch, warm_up=1, timed=2, give_up_after=give_up) or math.inf
        if screens[numerics] > SCREEN_FACTOR * min(screens.values()):
            timings[str(variant)] = f"dropped: over {SCREEN_FACTOR:g}x slower than the best on a batch of {screen_batch}"
            continue
        seconds = _try(runner, variant, batch_size, 1, best_seconds, timings)
        if seconds is not None:
            best, best_seconds = variant, seconds
    for variant in [c for c in candidates if c.compile != "eager"]:
        if (variant.precision, variant.memory_format, variant.optimizer) != (best.precision, best.memory_format,
                                                                              best.optimizer):
            continue  # compiled modes are tried on top of the best eager variant only
        try:
            seconds = _try(runner, variant, batch_size, 3, best_seconds, timings)
        except Exception as error:  # a compiler missing or failing here rules the mode out, nothing more
            timings[str(variant)] = f"failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:160]}"
            continue
        if seconds is not None:
            best, best_seconds = variant, seconds
    return best, timings


def _try(runner: _Probe, variant: Variant, batch_size: int, warm_up: int, best_seconds: float, timings: dict):
    """Time ``variant`` at the full batch and record it; its seconds if it beat ``best_seconds``, else None."""
    seconds = runner.time(variant, batch_size, warm_up=warm_up, timed=TIMED_STEPS,
                          give_up_after=DROP_FACTOR * best_seconds)
    if seconds is None:
        timings[str(variant)] = f"dropped: a step over {DROP_FACTOR:g}x the best so far"
        return None
    timings[str(variant)] = round(seconds * 1e3, 2)
    return seconds if seconds < best_seconds else None


_CHOSEN: dict[str, Choice] = {}


def choose(model_name: str, device: str, train_set, batch_size: int, candidates: list[Variant], *,
           pinned: Variant | None = None, use_cache: bool = True, save: bool = True) -> Choice:
    """The fast variant of ``model_name`` on ``device`` at ``batch_size``: ``pinned``, else a cached
    measurement, else a probe (saved to the cache when ``save``, i.e. when the probe had the machine to
    itself). One choice per process and key."""
    if pinned is not None:
        return Choice(pinned, "pinned", batch_size)
    key = _cache_key(model_name, device, batch_size, candidates)
    if key in _CHOSEN:
        return _CHOSEN[key]
    cached = _read_cache().get(key) if use_cache else None
    if cached:
        choice = Choice(Variant.parse(cached["variant"]), "cache", batch_size, cached.get("timings", {}))
    else:
        variant, timings = probe(model_name, device, train_set, batch_size, candidates)
        choice = Choice(variant, "probe", batch_size, timings)
        if save:
            _write_cache(key, choice)
    _CHOSEN[key] = choice
    return choice
