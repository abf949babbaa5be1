"""The training loop of the articles: Adam, cross-entropy, one optimizer step per batch.

``TrainingRun`` holds one model being trained on one device through one pipeline; its ``epoch`` is
what the epoch benchmark times, synchronisation included.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import models

from . import devices, pipelines

WARM_UP_BATCHES = 3


class NonFiniteLossError(FloatingPointError):
    """Training diverged: a loss became NaN or infinite."""


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Forward, backward and one optimizer step; returns the loss, still on the device."""
    optimizer.zero_grad()
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_epoch(model, optimizer, batches, *, item_every_step: bool) -> torch.Tensor:
    """One pass over ``batches``; returns the per-step losses on the CPU.

    ``item_every_step`` reproduces the articles' ``running_loss += loss.item()``, which makes the host
    wait for the device after every step; otherwise the losses stay on the device until the end.
    """
    model.train()
    losses = []
    for images, labels in batches:
        loss = train_step(model, optimizer, images, labels)
        losses.append(loss.item() if item_every_step else loss)
    return torch.tensor(losses) if item_every_step else torch.stack(losses).cpu()


def check_finite(losses: torch.Tensor, model_name: str, first_step: int = 0) -> None:
    """Raise ``NonFiniteLossError`` naming the model and the first bad step."""
    bad = torch.nonzero(~torch.isfinite(losses))
    if len(bad):
        step = int(bad[0])
        raise NonFiniteLossError(f"{model_name}: loss became {losses[step].item()} at step {first_step + step}")


def make_optimizer(model: nn.Module, recipe: models.Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer != "adam":
        raise ValueError(f"unsupported optimizer {recipe.optimizer!r}")
    return torch.optim.Adam(model.parameters(), lr=recipe.lr)


@dataclass
class TrainingRun:
    """One model, its optimizer and its data pipeline on one device."""

    model_name: str
    device: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    pipeline: pipelines.Pipeline
    steps_done: int = 0

    @classmethod
    def create(cls, model_name: str, device: str, pipeline_name: str, dataset, *,
               batch_size: int | None = None, samples: int | None = None, seed: int = 0) -> "TrainingRun":
        """The article's recipe for ``model_name`` (its batch size unless ``batch_size`` is given)."""
        recipe = models.recipe(model_name)
        devices.prepare(device)
        torch.manual_seed(seed)
        model = models.build(model_name).to(device)
        pipeline = pipelines.build(pipeline_name, dataset, batch_size or recipe.batch_size, device,
                                   samples=samples, seed=seed,
                                   mean=recipe.normalize_mean, std=recipe.normalize_std)
        return cls(model_name, device, model, make_optimizer(model, recipe), pipeline)

    def epoch(self) -> torch.Tensor:
        """Train one epoch and wait for the device; returns the per-step losses."""
        losses = train_epoch(self.model, self.optimizer, self.pipeline, item_every_step=self.pipeline.item_every_step)
        devices.synchronize(self.device)
        check_finite(losses, self.model_name, self.steps_done)
        self.steps_done += len(losses)
        return losses

    def warm_up(self) -> None:
        """A few untimed steps with the epoch's batch shapes, the last partial batch included, so cuDNN's
        autotuning and the allocator's first growth happen before the clock starts."""
        pipeline = self.pipeline
        tail = pipeline.samples % pipeline.batch_size
        warm_up_samples = min(pipeline.samples, WARM_UP_BATCHES * pipeline.batch_size + tail)
        losses = train_epoch(self.model, self.optimizer, pipeline.draw(warm_up_samples),
                             item_every_step=pipeline.item_every_step)
        devices.synchronize(self.device)
        check_finite(losses, self.model_name, self.steps_done)
        self.steps_done += len(losses)
