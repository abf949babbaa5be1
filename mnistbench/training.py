"""The training loop of the articles: Adam, cross-entropy, one optimizer step per batch.

``TrainingRun`` holds one model being trained on one device through one pipeline in one speed
variant; its ``epoch`` is what the epoch benchmark times, synchronisation included.
"""
import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

import models

from . import backends, devices, pipelines
from .evaluation import evaluate
from .variants import Variant

# Untimed steps per batch shape before the clock starts: compiling, autotuning and, with CUDA graphs, the
# warm-up run and the recording of each shape all happen within the first three calls (fp16 takes more:
# ``Variant.warm_up_steps``).
WARM_UP_STEPS = 3
# What a restart leaves as it is in an optimizer's parameter groups: the parameters, and how the update is
# computed rather than with which values (Dynamo sets ``capturable`` on the groups of an Adam step it compiles
# for CUDA, and the compiled step's guards expect it).
RESTART_KEEPS = frozenset({"params", "capturable", "foreach", "fused", "differentiable"})
Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class NonFiniteLossError(FloatingPointError):
    """Training diverged: a loss became NaN or infinite."""


class CapturedStep:
    """A step captured whole as one CUDA graph and replayed (``cudagraphs-step``), after PyTorch's recipe for
    capturing a whole network: its first ``WARM_UP_STEPS - 1`` calls run eagerly on a side stream (cuDNN's
    autotuning and Adam's state happen there), the next records the step on its batch and replays it (so the
    capture falls within the warm-up that the benchmarks and the probe give every variant), and every later
    call copies its batch into the recorded inputs and replays. Each call trains on its own batch exactly
    once. A batch of another shape (a partial last batch) runs eagerly: one graph replays one shape. Returns
    a copy of the loss, which the next replay overwrites.

    Adam must keep its step count on the device (``capturable=True``, ``Variant.optimizer_options``), and a
    schedule's rate and beta1 must live there too (``OneCycleOnDevice``): the graph replays the numbers it
    recorded, but reads tensors anew at every replay.
    """

    def __init__(self, step: Step):
        self.step, self.calls = step, 0
        self.graph = self.images = self.labels = self.loss = None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.graph is not None and images.shape != self.images.shape:
            return self._eager(images, labels)
        if self.graph is None and self.calls < WARM_UP_STEPS - 1:
            self.calls += 1
            side = torch.cuda.Stream(images.device)
            side.wait_stream(torch.cuda.current_stream(images.device))
            with torch.cuda.stream(side):
                loss = self._eager(images, labels)
            torch.cuda.current_stream(images.device).wait_stream(side)
            return loss
        if self.graph is None:
            self.images, self.labels = images.clone(), labels.clone()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = self.step(self.images, self.labels)
        else:
            self.images.copy_(images)
            self.labels.copy_(labels)
        self.graph.replay()
        return self.loss.clone()

    def _eager(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The step run eagerly, without the warning that Adam built to be captured gives when it is not."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            return self.step(images, labels)


def make_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, device: str, variant: Variant = Variant(),
                    label_smoothing: float = 0.0) -> Step:
    """Forward, backward and one optimizer step in ``variant``; the step returns the loss (cross-entropy with
    ``label_smoothing``), still on the device. Its ``scaler`` attribute is fp16's GradScaler (None otherwise),
    whose scale says which steps it skipped. ``cudagraphs-step`` replays the whole step as a CUDA graph
    (``CapturedStep``)."""
    if variant.compile == "cudagraphs-step" and isinstance(model, nn.parallel.DistributedDataParallel):
        raise ValueError("cudagraphs-step captures one process's step, and DistributedDataParallel's all-reduce "
                         "needs its own preparation before it can be captured: pin another variant under torchrun")
    scaler = variant.grad_scaler(device)
    optimizer_step = variant.prepare_optimizer_step(optimizer)

    def step(images, labels):
        optimizer.zero_grad()
        with variant.autocast(device):
            loss = F.cross_entropy(model(variant.prepare_images(images)), labels, label_smoothing=label_smoothing)
        if scaler is None:
            loss.backward()
            optimizer_step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return loss.detach()

    if variant.compile == "cudagraphs-step":
        step = CapturedStep(step)
    step.scaler = scaler
    return step


def make_forward_step(model: nn.Module, device: str, variant: Variant = Variant()) -> Step:
    """Inference only: the loss of one batch, without autograd; replayed as a CUDA graph under
    ``cudagraphs-step``."""

    @torch.inference_mode()
    def step(images, labels):
        with variant.autocast(device):
            return F.cross_entropy(model(variant.prepare_images(images)), labels)

    return CapturedStep(step) if variant.compile == "cudagraphs-step" else step


def train_epoch(step: Step, batches, *, item_every_step: bool, after_step: Callable[[], None] | None = None) -> torch.Tensor:
    """One pass over ``batches``, calling ``after_step`` (a learning-rate schedule's ``step``) after each
    step; returns the per-step losses on the CPU.

    ``item_every_step`` reproduces the articles' ``running_loss += loss.item()``, which makes the host
    wait for the device after every step; otherwise the losses stay on the device until the end.
    """
    losses = []
    for images, labels in batches:
        loss = step(images, labels)
        if after_step is not None:
            after_step()
        losses.append(loss.item() if item_every_step else loss)
    return torch.tensor(losses) if item_every_step else torch.stack(losses).float().cpu()


def check_finite(losses: torch.Tensor, model_name: str, first_step: int = 0) -> None:
    """Raise ``NonFiniteLossError`` naming the model and the first bad step."""
    bad = torch.nonzero(~torch.isfinite(losses))
    if len(bad):
        step = int(bad[0])
        raise NonFiniteLossError(f"{model_name}: loss became {losses[step].item()} at step {first_step + step}")


def make_optimizer(model: nn.Module, recipe: models.Recipe, variant: Variant = Variant()) -> torch.optim.Optimizer:
    """The recipe's optimizer in the variant's implementation of it under the recipe's schedule
    (``Variant.optimizer_options``)."""
    if recipe.optimizer != "adam":
        raise ValueError(f"unsupported optimizer {recipe.optimizer!r}")
    return torch.optim.Adam(model.parameters(), lr=recipe.lr, **variant.optimizer_options(recipe.schedule))


class OneCycleOnDevice(torch.optim.lr_scheduler.OneCycleLR):
    """``OneCycleLR`` with Adam's rate and beta1 held in tensors on the parameters' device, for a step captured as
    a CUDA graph (``cudagraphs-step``), which reads tensors anew at every replay where numbers would stay as it
    recorded them. ``OneCycleLR`` fills a tensor rate in place but sets beta1 as a number: each step copies that
    number into the held tensor and puts the tensor back. beta2, which no schedule changes, stays a number.

    Adam must take the tensors without reading them back to the host, which a capture forbids: its single-tensor
    form does (``Variant.optimizer_options``); its ``foreach`` form reads a tensor beta1 back at every step
    (torch 2.11 to 2.14) and its fused kernel takes numbers only (``Variant.unsupported_with``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, **options):
        self.device_beta1 = []
        for group in optimizer.param_groups:
            device = group["params"][0].device
            group["lr"] = torch.tensor(group["lr"], device=device)
            self.device_beta1.append(torch.tensor(group["betas"][0], device=device))
        super().__init__(optimizer, **options)  # whose first step sets beta1 as a number

    def step(self, epoch: int | None = None) -> None:
        super().step(epoch)
        for group, beta1 in zip(self.optimizer.param_groups, self.device_beta1, strict=True):
            beta1.fill_(group["betas"][0])
            group["betas"] = beta1, *group["betas"][1:]

    def state_dict(self) -> dict:
        """``OneCycleLR``'s state without the held tensors, which a restart must leave where the graph reads them."""
        return {name: value for name, value in super().state_dict().items() if name != "device_beta1"}


def make_schedule(optimizer: torch.optim.Optimizer, recipe: models.Recipe, steps_per_epoch: int,
                  on_device: bool = False) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The recipe's learning-rate schedule, stepped once per batch, its values held in tensors on the device
    where a captured step reads them (``on_device``, ``OneCycleOnDevice``); None for a constant rate."""
    if recipe.schedule == "constant":
        return None
    if recipe.schedule == "onecycle":
        one_cycle = OneCycleOnDevice if on_device else torch.optim.lr_scheduler.OneCycleLR
        return one_cycle(optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
    raise ValueError(f"unsupported schedule {recipe.schedule!r}")


@dataclass
class TrainingRun:
    """One model, its optimizer and its data pipeline on one device, in one speed variant."""

    model_name: str
    device: str
    model: nn.Module  # the network as built; ``step`` may run a compiled wrapper of it
    optimizer: torch.optim.Optimizer
    pipeline: pipelines.Pipeline
    variant: Variant
    recipe: models.Recipe
    schedule: torch.optim.lr_scheduler.LRScheduler | None
    step: Step
    initial_state: dict  # the optimizer and schedule as created, for ``restart``
    seed: int = 0  # of the weights, the order of the data and the dropout masks
    steps_done: int = 0
    first_step_seconds: float | None = None  # the first step's wall time: compilation, when compiled
    warm_up_seconds: float | None = None  # the whole untimed warm-up, first step included
    # per seed, the initial weights (held on the CPU, out of the device's peak memory) and the CPU's random
    # state after drawing them (``restart``)
    initial_weights: dict[int, tuple[dict, torch.Tensor]] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, model_name: str, device: str, pipeline_name: str, dataset, *, variant: Variant = Variant(),
               recipe: models.Recipe | None = None, samples: int | None = None, seed: int = 0,
               shard: tuple[int, int] = (0, 1), wrap_model: Callable[[nn.Module], nn.Module] | None = None,
               ) -> "TrainingRun":
        """``model_name`` trained with ``recipe`` (by default its article's). Data-parallel training is this same
        run on each rank: ``shard`` picks the rank's slice of every epoch, and ``wrap_model`` wraps the prepared
        network that the step runs (in ``DistributedDataParallel``); ``model`` stays the unwrapped network.
        ``samples``: images per epoch, by default the recipe's share of ``dataset`` (``Recipe.epoch_samples``)."""
        recipe = recipe or models.recipe(model_name)
        if reason := variant.unsupported_with(recipe.schedule):
            raise ValueError(f"{variant} cannot train {model_name} with its recipe: {reason}")
        if pipelines.uses_pytorch_defaults(pipeline_name):
            backends.use_pytorch_defaults()
        else:
            variant.configure_backends(device)
        torch.manual_seed(seed)
        model = models.build(model_name).to(device)
        optimizer = make_optimizer(model, recipe, variant)
        samples = samples or recipe.epoch_samples(len(dataset))
        pipeline = pipelines.build(pipeline_name, dataset, recipe.batch_size, device, samples=samples, seed=seed,
                                   mean=recipe.normalize_mean, std=recipe.normalize_std, shard=shard,
                                   drop_last=recipe.drop_last)
        schedule = make_schedule(optimizer, recipe, len(pipeline), on_device=variant.compile == "cudagraphs-step")
        initial_state = copy.deepcopy({"optimizer": optimizer.state_dict(),
                                       "schedule": schedule.state_dict() if schedule else None})
        network = variant.prepare_model(model)
        step = make_train_step(wrap_model(network) if wrap_model else network, optimizer, device, variant,
                               recipe.label_smoothing)
        return cls(model_name, device, model, optimizer, pipeline, variant, recipe, schedule, step, initial_state, seed)

    def _train(self, batches, scheduled: bool = True) -> torch.Tensor:
        self.model.train()
        after_step = self.schedule.step if scheduled and self.schedule is not None else None
        losses = train_epoch(self.step, batches, item_every_step=self.pipeline.item_every_step, after_step=after_step)
        devices.synchronize(self.device)
        check_finite(losses, self.model_name, self.steps_done)
        self.steps_done += len(losses)
        return losses

    def epoch(self, batches=None) -> torch.Tensor:
        """Train one epoch and wait for the device; returns the per-step losses. ``batches`` may wrap
        the pipeline (in a progress bar, say); by default the pipeline itself is used."""
        return self._train(self.pipeline if batches is None else batches)

    def evaluate(self, test_set) -> tuple[float, float]:
        """Test accuracy and loss of the model as trained so far, in this run's variant and normalisation."""
        return evaluate(self.model, test_set, self.device, variant=self.variant,
                        mean=self.recipe.normalize_mean, std=self.recipe.normalize_std)

    def warm_up(self) -> None:
        """Untimed steps with every batch shape of the epoch (the full batch and the last partial one), the
        learning-rate schedule left where it is, so that compilation (static shapes: one graph per shape),
        cuDNN's autotuning, CUDA-graph recording and the allocator's first growth all happen before the clock
        starts. The first step is timed on its own: with ``torch.compile`` that is the compilation time; the
        whole warm-up's time is kept beside it."""
        pipeline = self.pipeline
        shapes = dict.fromkeys([min(pipeline.batch_size, pipeline.samples), pipeline.samples % pipeline.batch_size])
        start = time.perf_counter()
        self._train(pipeline.draw(next(iter(shapes))), scheduled=False)
        self.first_step_seconds = time.perf_counter() - start
        for size in filter(None, shapes):
            for _ in range(self.variant.warm_up_steps(WARM_UP_STEPS)):
                self._train(pipeline.draw(size), scheduled=False)
        self.warm_up_seconds = time.perf_counter() - start

    def restart(self, seed: int | None = None) -> None:
        """Back to the state ``create`` made with this run's seed, or with ``seed``: weights, optimizer,
        schedule and random streams, drawn again in ``create``'s order and loaded in place, so that a
        warmed-up (and compiled) step trains from scratch exactly as if the warm-up never happened. Not
        restored: an fp16 ``GradScaler``'s loss scale, which the warm-up may already have adjusted."""
        self.seed = self.seed if seed is None else seed
        torch.manual_seed(self.seed)  # the CPU's and every device's stream, then the weights drawn from it
        if self.seed not in self.initial_weights:  # drawn once per seed (GoogLeNet's: 33 ms on a CPU), then copied
            self.initial_weights[self.seed] = models.build(self.model_name).state_dict(), torch.get_rng_state()
        weights, drawn = self.initial_weights[self.seed]
        torch.set_rng_state(drawn)  # the CPU's stream where drawing the weights left it (dropout on a CPU draws next)
        self.model.load_state_dict(weights)
        self._reset_optimizer()
        if self.schedule is not None:
            self.schedule.load_state_dict(self.initial_state["schedule"])
        self.pipeline.generator.manual_seed(self.seed)
        self.steps_done = 0

    def _reset_optimizer(self) -> None:
        """The optimizer as ``create`` made it, its state tensors zeroed in place rather than replaced (Adam's
        state as its first step creates it: a step count and two moments of zeros), so that a step that
        holds them (a CUDA graph's replay, a compiled step's guards) goes on using them."""
        initial = self.initial_state["optimizer"]
        if initial["state"]:
            raise ValueError("restart resets an optimizer whose state its first step creates; this one had state "
                             "when created")
        for state in self.optimizer.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    value.zero_()
        for group, created in zip(self.optimizer.param_groups, initial["param_groups"], strict=True):
            for name, value in created.items():
                if name in RESTART_KEEPS:
                    continue
                if torch.is_tensor(group[name]):  # a schedule's value that a captured step reads (OneCycleOnDevice)
                    group[name].copy_(value)
                elif isinstance(group[name], tuple):  # the betas, beta1 perhaps held likewise
                    group[name] = tuple(held.copy_(first) if torch.is_tensor(held) else first
                                        for held, first in zip(group[name], value, strict=True))
                else:
                    group[name] = value
