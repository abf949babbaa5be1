"""FLOPs per image, counted by PyTorch's own ``FlopCounterMode`` (never hand formulas)."""
import functools

import torch
from torch.utils.flop_counter import FlopCounterMode

import models

from . import data

_COUNTING_BATCH = 2


@functools.cache
def per_image(model_name: str, train: bool) -> int:
    """FLOPs for one 1x28x28 image: the forward pass, plus the backward pass when ``train``.

    Counted once on the CPU; the count depends on the shapes only, not on the device or the values.
    """
    model = models.build(model_name)
    images = torch.zeros(_COUNTING_BATCH, *data.IMAGE_SHAPE)
    with FlopCounterMode(display=False) as counter:
        if train:
            model(images).sum().backward()
        else:
            with torch.no_grad():
                model(images)
    return counter.get_total_flops() // _COUNTING_BATCH
