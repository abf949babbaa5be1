"""Convolutions on small maps as one matrix product: the ``matmul`` convolution of a variant.

GoogLeNet's late inception blocks see MNIST's 28x28 digits as 2x2 and 1x1 maps, where oneDNN's convolution
kernels run far below the CPU's peak: their backward pass was 55-63% of GoogLeNet's fastest step on a 2-core
Intel Xeon (docs/measured.md, "Where the training step's time goes"). On such a map a convolution is one
matrix product, whose backward pass is two more:

- a stride-1 "same" convolution (odd kernel, half of it as padding) on a map so small that each output pixel
  sees every input pixel, as GoogLeNet's 3x3 and 5x5 kernels on 2x2 maps and all of them on 1x1: the
  flattened maps (N, C*H*W) by a dense (C*H*W, H*W*O) matrix of the taps each pair of pixels meets, which
  multiplies no padding (16 of a 3x3 kernel's 36 products per channel pair on 2x2, 1 of 9 on 1x1);
- a 1x1 convolution: the NHWC activations as they are, by the weights;
- any other (strided, not "same", or a kernel too small to join every pair of pixels): the patches
  ``F.unfold`` cuts, padding included, by the weights.

Timed in alternation there, in bf16 with channels_last and fused Adam at batch 64, the unfolded patches made
the step 0.83x as long when the convolutions on maps of at most 4 pixels were replaced, and 1.02x when all
those up to 7x7 were: hence ``MAX_PIXELS``; with the dense matrices, GoogLeNet's step took 0.44-0.69 of the
reference one, where the native convolutions' best took 0.80 in the same sittings. Whether it pays on a
machine is for the ``fast`` probe to measure, as every variant.

The parameters are the convolutions' own (the optimizer, ``state_dict`` and the articles' checkpoints see
the same values); only how each forward pass computes them changes, and the order in memory of the weights
it multiplies (``as_matrix_products``).
"""
import functools
import itertools

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
        if _takes_dense_taps(self, height, width):
            return self._every_pixel_to_every_pixel(images)
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

    def _every_pixel_to_every_pixel(self, images: torch.Tensor) -> torch.Tensor:
        """The flattened maps (N, C*H*W) by the dense (C*H*W, H*W*O) matrix of the taps each pair of pixels
        meets, gathered in one ``index_select`` (whose backward pass is one ``index_add_``), cast to autocast's
        precision after the gather: the fastest of the forms timed on GoogLeNet's 2x2 maps on a 2-core Intel
        Xeon (a view through ``unfold``, a product by a 0/1 matrix, and an ``autograd.Function`` with its own
        backward pass were slower there, forward and backward together)."""
        batch, channels, height, width = images.shape
        device = images.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else images.dtype
        pad_h, pad_w = self.padding
        pixels = height * width
        taps_last = self.weight.permute(1, 2, 3, 0)  # (C, kh, kw, O): a view, as ``as_matrix_products`` stores them
        if pixels == 1:  # the centre tap alone, (C, O): a view, unless autocast casts it
            dense = taps_last[:, pad_h, pad_w].to(dtype)
        else:
            reached = taps_last[:, pad_h - height + 1:pad_h + height, pad_w - width + 1:pad_w + width]
            taps = reached.reshape(channels, -1, self.out_channels)  # (C, taps, O)
            dense = taps.index_select(1, _pair_taps(height, width, images.device)).to(dtype).view(
                channels * pixels, pixels * self.out_channels)
        rows = images.to(dtype).reshape(batch, channels * pixels)  # (C, H, W) order: NCHW rows
        if self.bias is None:
            out = rows @ dense
        else:
            out = torch.addmm(self.bias.to(dtype).repeat(pixels), rows, dense)
        return out.view(batch, height, width, self.out_channels).permute(0, 3, 1, 2)


def _pair_taps(height: int, width: int, device: torch.device, keep: bool = True) -> torch.Tensor:
    """For each (input pixel, output pixel) pair in row-major order, the index of the tap joining them among
    the (2H-1) x (2W-1) taps of the kernel's centre that a map of H x W reaches. Eager code makes it once per
    map and device; compiled code makes it in the graph, a constant, where a kept tensor would be the graph's
    output (and, under ``cudagraphs``, memory of its pool that a later replay may overwrite)."""
    if keep and not torch.compiler.is_compiling():
        return _kept_pair_taps(height, width, device)
    reach_w = 2 * width - 1
    pairs = itertools.product(range(height), range(width), range(height), range(width))
    return torch.tensor([(i - y + height - 1) * reach_w + (j - x + width - 1) for i, j, y, x in pairs], device=device)


@functools.cache
def _kept_pair_taps(height: int, width: int, device: torch.device) -> torch.Tensor:
    """``_pair_taps`` made outside inference mode: the first call may come from an evaluation or an inference
    step (``torch.inference_mode``), and every training step after it saves the index for its backward pass,
    which an inference tensor refuses."""
    with torch.inference_mode(False):
        return _pair_taps(height, width, device, keep=False)


def _takes_dense_taps(conv: nn.Conv2d, height: int, width: int) -> bool:
    """Whether ``conv`` computes a map of ``height`` x ``width`` by ``_every_pixel_to_every_pixel``: a map of at
    most ``MAX_PIXELS``, a stride-1 "same" convolution with an odd kernel larger than 1x1 (a 1x1 one takes the
    NHWC rows as they are), whose padding reaches across the map, so that each output pixel sees every input
    pixel."""
    (kernel_h, kernel_w), (pad_h, pad_w) = conv.kernel_size, conv.padding
    return (height * width <= MAX_PIXELS and conv.stride == (1, 1) and (kernel_h, kernel_w) != (1, 1)
            and (pad_h, pad_w) == (kernel_h // 2, kernel_w // 2) and kernel_h % 2 == 1 and kernel_w % 2 == 1
            and pad_h >= height - 1 and pad_w >= width - 1)


def as_matrix_products(model: nn.Module, image_shape: tuple[int, int, int]) -> nn.Module:
    """``model`` with each plain ``nn.Conv2d`` (no groups, no dilation, zero padding given in pixels) made a
    ``SmallMapsAsMatmul``; in place, the same parameters. Each one that computes a map of an image of
    ``image_shape`` (C, H, W) as a matrix product stores its weights in the order the product reads them:
    taps-last, (C, kh, kw, O) in memory, for the dense taps, and (O, C, kh, kw) for the rows and the unfolded
    patches. Neither the forward pass nor the gradient then copies them into another (``index_select`` and
    ``reshape`` copy a tensor they cannot read as it is, AccumulateGrad a gradient whose strides are not its
    parameter's, and DDP a gradient whose strides are not its bucket's); the values and ``state_dict``'s keys
    are unchanged. Timed in alternation on a 2-core Intel Xeon, GoogLeNet's ``matmul`` steps took
    0.91-0.94 of their time with channels_last weights (docs/measured.md)."""
    for module in filter(_plain, model.modules()):
        module.__class__ = SmallMapsAsMatmul
    for module, (height, width) in _maps(model, image_shape).items():
        if _takes_dense_taps(module, height, width):
            module.weight.data = _row_major(module.weight.data.permute(1, 2, 3, 0)).permute(3, 0, 1, 2)
        elif height * width <= MAX_PIXELS:
            module.weight.data = _row_major(module.weight.data)
    return model


def _row_major(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` with a row-major layout's strides, its size-1 dimensions' included (``contiguous`` keeps
    whatever strides those have, and DDP compares them too)."""
    return tensor.clone(memory_format=torch.contiguous_format)


def _maps(model: nn.Module, image_shape: tuple[int, int, int]) -> dict[nn.Module, tuple[int, int]]:
    """The map (height, width) each plain convolution of ``model`` sees on one image of ``image_shape`` (C, H,
    W), from a forward pass without gradients on the model's device, in evaluation mode (which neither draws
    dropout's random numbers nor moves batch norm's statistics), each module's mode restored after."""
    seen, modes = {}, {module: module.training for module in model.modules()}

    def record(module: nn.Module, inputs: tuple) -> None:  # a pre-hook's result would replace the inputs
        seen.setdefault(module, tuple(inputs[0].shape[-2:]))

    handles = [module.register_forward_pre_hook(record) for module in filter(_plain, model.modules())]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *image_shape, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return seen


def small_map_convolutions(model: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """How many of ``model``'s convolutions ``as_matrix_products`` would compute as matrix products on an
    image of ``image_shape`` (C, H, W): none (VGGNet's maps are 14x14 and larger) makes the ``matmul`` variant
    the native one under another name."""
    return sum(height * width <= MAX_PIXELS for height, width in _maps(model, image_shape).values())


@functools.cache
def has_small_maps(model_name: str) -> bool:
    """Whether the registered model ``model_name`` has convolutions that a ``matmul`` variant computes as
    matrix products on a digit (GoogLeNet does, VGGNet not)."""
    return small_map_convolutions(models.build(model_name), data.IMAGE_SHAPE) > 0


def _plain(module: nn.Module) -> bool:
    """A convolution ``SmallMapsAsMatmul`` computes (or already does)."""
    return (type(module) in (nn.Conv2d, SmallMapsAsMatmul) and module.groups == 1 and module.dilation == (1, 1)
            and module.padding_mode == "zeros" and isinstance(module.padding, tuple))
