"""Convolutions on small maps as one matrix product: the ``matmul`` convolution of a variant.

GoogLeNet's late inception blocks see MNIST's 28x28 digits as 2x2 and 1x1 maps, where oneDNN's convolution
kernels run far below the CPU's peak: their backward pass was 55-63% of GoogLeNet's fastest step on a 2-core
Intel Xeon (docs/measured.md, "Where the training step's time goes"). On such a map a convolution is one
matrix product of the unfolded patches (``F.unfold``; a 1x1 convolution's patches are the NHWC activations
as they are) by the weights, whose backward pass is two more matrix products. Timed in alternation there, in
bf16 with channels_last and fused Adam at batch 64, this made the step 0.83x as long when the convolutions
on maps of at most 4 pixels were replaced, and 1.02x when all those up to 7x7 were: hence
``MAX_PIXELS``. Whether it pays on a machine is for the ``fast`` probe to measure, as every variant.

The parameters are the convolutions' own (the optimizer, ``state_dict`` and the articles' checkpoints see
no difference); only how each forward pass computes changes.
"""
import functools

import torch
import torch.nn.functional as F
from torch import nn

import models

from . import data

MAX_PIXELS = 4  # the largest map (height x width) computed as a matrix product


class SmallMapsAsMatmul(nn.Conv2d):
    """An ``nn.Conv2d`` whose forward pass on a map of at most ``MAX_PIXELS`` pixels is a matrix product (its
    result laid out NHWC, as the product leaves it), and the module's own convolution on a larger map."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = images.shape
        if height * width > MAX_PIXELS:
            return super().forward(images)
        (kernel_h, kernel_w), (stride_h, stride_w), (pad_h, pad_w) = self.kernel_size, self.stride, self.padding
        out_h = (height + 2 * pad_h - kernel_h) // stride_h + 1
        out_w = (width + 2 * pad_w - kernel_w) // stride_w + 1
        if (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w) == (1, 1, 1, 1, 0, 0):
            patches = images.permute(0, 2, 3, 1).reshape(-1, channels)  # (N*H*W, C): NHWC rows
        else:  # (N, C*kh*kw, L) -> (N*L, C*kh*kw), L = out_h*out_w positions in row-major order
            patches = F.unfold(images, self.kernel_size, padding=self.padding, stride=self.stride)
            patches = patches.transpose(1, 2).reshape(batch * out_h * out_w, -1)
        weights = self.weight.reshape(self.out_channels, -1).t()  # (C*kh*kw, O), unfold's order (C, kh, kw)
        rows = patches @ weights if self.bias is None else torch.addmm(self.bias, patches, weights)
        return rows.view(batch, out_h, out_w, self.out_channels).permute(0, 3, 1, 2)


def as_matrix_products(model: nn.Module) -> nn.Module:
    """``model`` with each plain ``nn.Conv2d`` (no groups, no dilation, zero padding given in pixels) made a
    ``SmallMapsAsMatmul``; in place, the same parameters."""
    for module in filter(_plain, model.modules()):
        module.__class__ = SmallMapsAsMatmul
    return model


def small_map_convolutions(model: nn.Module, images: torch.Tensor) -> int:
    """How many of ``model``'s convolutions ``as_matrix_products`` would compute as matrix products on
    ``images`` (N, C, H, W), counted over one forward pass without gradients: none (VGGNet's maps are 14x14
    and larger) makes the ``matmul`` variant the native one under another name."""
    seen = []
    handles = [module.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].shape[-2:].numel()))
               for module in filter(_plain, model.modules())]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return sum(pixels <= MAX_PIXELS for pixels in seen)


@functools.cache
def has_small_maps(model_name: str) -> bool:
    """Whether the registered model ``model_name`` has convolutions that a ``matmul`` variant computes as
    matrix products on a digit (GoogLeNet does, VGGNet not)."""
    return small_map_convolutions(models.build(model_name), torch.zeros(1, *data.IMAGE_SHAPE)) > 0


def _plain(module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and module.groups == 1 and module.dilation == (1, 1)
            and module.padding_mode == "zeros" and isinstance(module.padding, tuple))
