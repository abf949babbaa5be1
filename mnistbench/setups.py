"""Training setups: a data pipeline and a speed variant, on the same network, data, optimizer and batch.

``reference`` and ``resident`` are the two pipelines in fp32 with the default Adam; ``fast`` is resident
data in the variant measured fastest on the device at hand (``mnistbench.fast``). The articles' recipe
runs in ``reference``, the suite's tuned recipe in ``fast``.
"""
from dataclasses import dataclass

import models

from . import convolution, fast, matrix, variants
from .variants import Variant

SETUPS = ("reference", "resident", "fast")
RECIPE_SETUPS = {"article": "reference", "fast": "fast"}


@dataclass(frozen=True)
class FastPolicy:
    """What the ``fast`` probe may choose from (the run's variant options), or the variant pinned instead,
    whether a cached measurement may replace the probe, and whether a probe is cached (``save_cache``) even
    when the machine was not quiet around it (``save_disturbed``: a smoke run's, whose workers share it), how
    long its finalists take turns, and the batch it probes on when not the recipe's (``probe_batch``: a smoke
    run's)."""

    precisions: tuple = variants.PRECISIONS
    memory_formats: tuple = variants.MEMORY_FORMATS
    compile_modes: tuple = variants.COMPILE_MODES
    optimizers: tuple = variants.OPTIMIZERS
    convolutions: tuple = variants.CONVOLUTIONS
    pinned: Variant | None = None
    use_cache: bool = True
    save_cache: bool = True
    save_disturbed: bool = False
    turns: fast.Turns = fast.Turns()
    probe_batch: int | None = None

    def probe_batch_for(self, batch_size: int) -> int:
        """The batch the probe times for a recipe of ``batch_size``: ``probe_batch`` where one is set (a smoke run's
        small one), else the recipe's own."""
        return self.probe_batch or batch_size

    def candidates(self, device: str, schedule: str, model_name: str) -> list[Variant]:
        """The variants the probe may choose from for ``model_name`` on ``device`` under a learning-rate
        ``schedule``: the ``matmul`` convolutions only where the model has convolutions on small maps (elsewhere
        they run the same kernels as the native ones)."""
        convolutions = self.convolutions if convolution.has_small_maps(model_name) else ("native",)
        every = variants.matrix(device, self.precisions, self.memory_formats, self.compile_modes, self.optimizers,
                                convolutions)
        return [variant for variant in every if variant.unsupported_with(schedule) is None]


# What a smoke run and the tests let the probe choose from (``matrix.SMOKE_CHOICES``).
SMOKE = FastPolicy(**matrix.SMOKE_CHOICES, save_disturbed=True, turns=fast.SMOKE_TURNS,
                   probe_batch=fast.SMOKE_PROBE_BATCH)


@dataclass(frozen=True)
class Setup:
    name: str
    pipeline: str
    variant: Variant
    choice: fast.Choice | None = None  # how ``fast`` chose its variant

    def info(self) -> dict:
        return {"setup": self.name, **(self.choice.info() if self.choice else {})}


def pinned_cannot_serve(pinned: Variant, device: str, model_name: str, schedule: str) -> str | None:
    """Why the pinned fast variant cannot serve ``model_name`` on ``device`` trained with ``schedule``, as
    ``--fast-variant V: reason``, or None: a device it cannot run on, a ``matmul`` variant of a model without small
    maps (it would time the native kernels under another name), a schedule it cannot train. One answer for
    ``resolve``, the benchmark run (which skips such cases) and the train job (which refuses before loading the
    data)."""
    reason = (pinned.unsupported_on(device) or convolution.runs_native(model_name, pinned)
              or pinned.unsupported_with(schedule))
    return f"--fast-variant {pinned}: {reason}" if reason else None


def resolve(name: str, device: str, model_name: str, recipe: models.Recipe, train_set,
            policy: FastPolicy = FastPolicy()) -> Setup:
    """The setup called ``name`` for ``model_name`` trained with ``recipe`` on ``device``; for ``fast``
    this measures (or recalls) the fastest variant at ``policy.probe_batch``, else the recipe's batch size."""
    if name not in SETUPS:
        raise ValueError(f"unknown setup {name!r}; choose from {', '.join(SETUPS)}")
    if name != "fast":
        return Setup(name, name, Variant())
    if policy.pinned is not None and (reason := pinned_cannot_serve(policy.pinned, device, model_name, recipe.schedule)):
        raise ValueError(reason)
    candidates = policy.candidates(device, recipe.schedule, model_name)
    choice = fast.choose(model_name, device, train_set, policy.probe_batch_for(recipe.batch_size), candidates,
                         pinned=policy.pinned, use_cache=policy.use_cache, save=policy.save_cache,
                         save_disturbed=policy.save_disturbed, turns=policy.turns, schedule=recipe.schedule)
    return Setup(name, "resident", choice.variant, choice)
