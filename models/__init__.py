"""Model registry: each network of the source articles with the training recipe its article used.

Adding a model is one file in this package and one ``register`` line below.
"""
from dataclasses import dataclass
from typing import Callable

from torch import nn

from .googlenet import googlenet
from .vgg import vgg


@dataclass(frozen=True)
class Recipe:
    """How the model's article trained it: Adam, cross-entropy, ``Normalize(mean, std)`` after ``ToTensor``."""

    batch_size: int
    lr: float = 1e-3
    epochs: int = 10
    optimizer: str = "adam"
    normalize_mean: float = 0.5
    normalize_std: float = 0.5


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    recipe: Recipe


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, builder: Callable[..., nn.Module], recipe: Recipe) -> None:
    _REGISTRY[name] = ModelSpec(name, builder, recipe)


register("googlenet", googlenet, Recipe(batch_size=64))
register("vgg", vgg, Recipe(batch_size=128))


def names() -> list[str]:
    """Registered model names, in registration order."""
    return list(_REGISTRY)


def spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choose from {', '.join(names())}") from None


def recipe(name: str) -> Recipe:
    """The training recipe of the model's article."""
    return spec(name).recipe


def build(name: str, num_classes: int = 10) -> nn.Module:
    """A freshly initialised network (``torch.manual_seed`` beforehand makes it reproducible)."""
    return spec(name).builder(num_classes=num_classes)
