"""The benchmark matrix: which cases a run holds, and in which order, so that the headline ones come first.

- ``quick``: the headline results of each device in minutes: the ``reference`` and ``fast`` epochs of each
  model (over ``QUICK_EPOCH_SAMPLES`` images, which every batch size of the recipes divides, so no case
  compiles a second graph for a partial batch), its fp32 and ``fast`` training steps at the article's
  batch, the fast recipe's time to accuracy, then the same steps in inference (seconds each: with the
  training steps they complete ``mnistbench score``'s lists). Its ``fast`` probe tries only candidates that can win on
  the device (``QUICK_CHOICES``), unless the run names its own.
- ``standard``: the three epoch setups, training and inference steps in fp32 and ``fast``, both recipes'
  time to accuracy, and the data-parallel cases.
- ``exhaustive``: the standard epochs, time to accuracy and data-parallel cases, its steps replaced by every
  precision x memory format x compile mode x Adam at two batch sizes (no ``fast`` step), and the
  time-to-accuracy runs known to miss their target.

A timed run puts the headline cases first, every device's run of one benchmark side by side (accelerators
before the CPU), so that a run stopped by its time budget still holds whole GPU/CPU pairs.
"""
import models

from . import convolution, variants
from .variants import Variant

MATRICES = ("quick", "standard", "exhaustive")
# Step batch sizes: the article's, and in the exhaustive matrix one large batch.
STEP_BATCH_SIZES = {"quick": ("recipe",), "standard": ("recipe",), "exhaustive": ("recipe", 512)}
# 200 steps of GoogLeNet's batch of 64, 100 of VGG's 128, 50 of 256: a fifth of an epoch, the same on every
# device and machine, so that quick runs pair and compare.
QUICK_EPOCH_SAMPLES = 12_800
# The quick probe's candidates: bf16 against fp32 (tf32 and fp16 cannot beat bf16 where bf16 is native,
# fp16 adds GradScaler's work), both memory formats, the default and the fused Adam, eager and, on CUDA,
# CUDA graphs of the model and of the whole step (the levers for steps bound by kernel launches: on an H200
# the step captured whole ran 3.4-9x as fast as eager, docs/measured.md), and the convolutions as matrix
# products (one more candidate per precision, on GoogLeNet only). Compiling on a CPU costs a minute a
# candidate, more than a quick run can pay: name --compile to add it.
QUICK_CHOICES = {"precisions": ("fp32", "bf16"), "compile_modes": ("eager", "cudagraphs", "cudagraphs-step"),
                 "optimizers": ("default", "fused"), "convolutions": variants.CONVOLUTIONS}
# A smoke run's probe tries precisions, formats and the convolutions as matrix products only: compilation and
# Adam's implementations have tests of their own, and every candidate costs the probe seconds on a slow CPU.
SMOKE_CHOICES = {"precisions": variants.PRECISIONS, "compile_modes": ("eager",), "optimizers": ("default",),
                 "convolutions": variants.CONVOLUTIONS}
# Headline order: (test, the parameter value that makes a case a headline one) -> rank.
HEADLINES = (
    ("test_epoch", "setup", "reference"),
    ("test_epoch", "setup", "fast"),
    ("test_step", "step_variant", str(Variant())),
    ("test_step", "step_variant", "fast"),
    ("test_time_to_accuracy", "recipe_name", "fast"),
)
MODEL_ORDER = ("vgg", "googlenet")  # VGGNet first: the articles' 23x claim is VGGNet's, and it trains faster


def probe_choices(matrix: str, full: bool) -> dict:
    """What the ``fast`` probe chooses from unless the run names its own (``--precisions``, ``--compile``,
    ``--optimizers``, ``--convolutions``): ``QUICK_CHOICES`` in the quick matrix (one of ``MATRICES``), else
    every variant in a full benchmark (``--benchmark-only``) and ``SMOKE_CHOICES`` in any other run."""
    if matrix == "quick":
        return QUICK_CHOICES
    if not full:
        return SMOKE_CHOICES
    return {"precisions": variants.PRECISIONS, "compile_modes": variants.COMPILE_MODES,
            "optimizers": variants.OPTIMIZERS, "convolutions": variants.CONVOLUTIONS}


def step_variants(device: str, matrix: str, choices: dict) -> list[str]:
    """The step benchmark's variants on ``device``: fp32 and ``fast`` (measured when the case runs), or in
    the exhaustive matrix every combination of ``choices`` the device runs."""
    if matrix != "exhaustive":
        return [str(Variant()), "fast"]
    return [str(variant) for variant in variants.matrix(device, **choices)]


def step_modes(step_variant: str, matrix: str) -> list[str]:
    """``train`` and ``forward`` (inference has no optimizer: only default-Adam variants without
    compile-step)."""
    if step_variant != "fast":
        variant = Variant.parse(step_variant)
        if variant.optimizer != "default" or variant.compile == "compile-step":
            return ["train"]
    return ["train", "forward"]


def headline(test: str, params: dict) -> int | None:
    """The rank of a case among the headline ones (0 first), or None for one that is not a headline: steps
    count only at the article's batch size, in inference after every headline of training."""
    if "batch_size" in params and params["batch_size"] != models.recipe(params["model_name"]).batch_size:
        return None
    for rank, (name, parameter, value) in enumerate(HEADLINES):
        if test == name and params.get(parameter) == value:
            return rank + len(HEADLINES) * (params.get("mode") == "forward")
    return None


def in_matrix(test: str, params: dict, matrix: str) -> bool:
    """Whether a benchmark case belongs to ``matrix``: the quick matrix holds the headline cases only; no matrix
    holds the ``matmul`` step of a model without convolutions on small maps, which would time its native
    kernels under another name."""
    variant = params.get("step_variant")
    if variant not in (None, "fast") and Variant.parse(variant).convolution == "matmul" \
            and not convolution.has_small_maps(params["model_name"]):
        return False
    return matrix != "quick" or headline(test, params) is not None


def order(test: str, params: dict) -> tuple:
    """Sort key of a case: headline cases first in ``HEADLINES`` order, models in ``MODEL_ORDER``, then every
    device's run of the same case side by side, accelerators before the CPU; the rest after them."""
    rank = headline(test, params)
    model = params.get("model_name")
    device = params.get("device", "cpu")
    return (2 * len(HEADLINES) if rank is None else rank,
            MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER),
            device == "cpu")
