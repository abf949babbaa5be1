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

Two more products where the backend's kernels run below them on the maps just above, both measured on the
same Xeon (docs/measured.md): on maps of up to ``GRADIENT_PIXELS`` (GoogLeNet's 4x4) a "same" convolution
keeps the backend's forward pass and images' gradient and computes its weight gradient as one product of the
patches (``_WeightGradientAsProduct``); and each inception block's three 1x1 convolutions of its input run as
one, their weights side by side (``SharedInputInception``).

The parameters are the convolutions' own (the optimizer, ``state_dict`` and the articles' checkpoints see
the same values); only how each forward pass computes them changes, and the order in memory of the weights
it multiplies (``as_matrix_products``).
"""
import dataclasses
import functools
import itertools

import torch
import torch.nn.functional as F
from torch import nn

import models
from models.googlenet import Inception

from . import data

MAX_PIXELS = 4  # the largest map (height x width) computed as a matrix product
GRADIENT_PIXELS = 16  # the largest map whose weight gradient is one matrix product (``_WeightGradientAsProduct``)


class SmallMapsAsMatmul(nn.Conv2d):
    """An ``nn.Conv2d`` whose forward pass on a map of at most ``MAX_PIXELS`` pixels is a matrix product (its
    result laid out NHWC, as the product leaves it); on one of at most ``GRADIENT_PIXELS`` a "same"
    convolution's weight gradient is one, and any other runs the module's own convolution."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.convolve(images, self.weight, self.bias)

    def convolve(self, images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """This module's convolution of ``images`` by ``weight`` and ``bias`` (its own, or the merged weights of
        convolutions of the same shape, ``SharedInputInception``)."""
        batch, channels, height, width = images.shape
        if not _computed_as_product(height, width):
            if height * width <= GRADIENT_PIXELS and _same(self):
                return _WeightGradientAsProduct.apply(images, weight, bias, self.padding)
            return self._conv_forward(images, weight, bias)
        if _takes_dense_taps(self, height, width):
            return self._every_pixel_to_every_pixel(images, weight, bias)
        (kernel_h, kernel_w), (stride_h, stride_w), (pad_h, pad_w) = self.kernel_size, self.stride, self.padding
        out_h = (height + 2 * pad_h - kernel_h) // stride_h + 1
        out_w = (width + 2 * pad_w - kernel_w) // stride_w + 1
        if (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w) == (1, 1, 1, 1, 0, 0):
            patches = images.permute(0, 2, 3, 1).reshape(-1, channels)  # (N*H*W, C): NHWC rows
        else:  # (N, C*kh*kw, L) -> (N*L, C*kh*kw), L = out_h*out_w positions in row-major order
            patches = F.unfold(images, self.kernel_size, padding=self.padding, stride=self.stride)
            patches = patches.transpose(1, 2).reshape(batch * out_h * out_w, -1)
        out_channels = weight.shape[0]
        weights = weight.reshape(out_channels, -1).t()  # (C*kh*kw, O), unfold's order (C, kh, kw)
        rows = patches @ weights if bias is None else torch.addmm(bias, patches, weights)
        return rows.view(batch, out_h, out_w, out_channels).permute(0, 3, 1, 2)

    def _every_pixel_to_every_pixel(self, images: torch.Tensor, weight: torch.Tensor,
                                    bias: torch.Tensor | None) -> torch.Tensor:
        """The flattened maps (N, C*H*W) by the dense (C*H*W, H*W*O) matrix of the taps each pair of pixels
        meets, gathered in one ``index_select`` (whose backward pass is one ``index_add_``), cast to autocast's
        precision after the gather: the fastest of the forms timed on GoogLeNet's 2x2 maps on a 2-core Intel
        Xeon (a view through ``unfold``, a product by a 0/1 matrix, and an ``autograd.Function`` with its own
        backward pass were slower there, forward and backward together)."""
        batch, channels, height, width = images.shape
        dtype = _computing_dtype(images)
        pad_h, pad_w = self.padding
        pixels = height * width
        out_channels = weight.shape[0]
        taps_last = weight.permute(1, 2, 3, 0)  # (C, kh, kw, O): a view, as ``as_matrix_products`` stores them
        if pixels == 1:  # the centre tap alone, (C, O): a view, unless autocast casts it
            dense = taps_last[:, pad_h, pad_w].to(dtype)
        else:
            reached = taps_last[:, pad_h - height + 1:pad_h + height, pad_w - width + 1:pad_w + width]
            taps = reached.reshape(channels, -1, out_channels)  # (C, taps, O)
            dense = taps.index_select(1, _pair_taps(height, width, images.device)).to(dtype).view(
                channels * pixels, pixels * out_channels)
        rows = images.to(dtype).reshape(batch, channels * pixels)  # (C, H, W) order: NCHW rows
        if bias is None:
            out = rows @ dense
        else:
            out = torch.addmm(bias.to(dtype).repeat(pixels), rows, dense)
        return out.view(batch, height, width, out_channels).permute(0, 3, 1, 2)


def _computing_dtype(images: torch.Tensor) -> torch.dtype:
    """The precision a convolution of ``images`` computes in: autocast's on their device where it is on, else
    theirs."""
    device = images.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else images.dtype


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
    most ``MAX_PIXELS``, a "same" convolution with a kernel larger than 1x1 (a 1x1 one takes the NHWC rows as
    they are), whose padding reaches across the map, so that each output pixel sees every input pixel."""
    (pad_h, pad_w) = conv.padding
    return (_computed_as_product(height, width) and _same(conv) and conv.kernel_size != (1, 1)
            and pad_h >= height - 1 and pad_w >= width - 1)


def _computed_as_product(height: int, width: int) -> bool:
    """Whether a convolution's map of ``height`` x ``width`` is computed as a matrix product: at most
    ``MAX_PIXELS``."""
    return height * width <= MAX_PIXELS


def _same(conv: nn.Conv2d) -> bool:
    """A stride-1 convolution with an odd kernel and half of it as padding: its output has its input's size."""
    return conv.stride == (1, 1) and all(kernel % 2 == 1 and pad == kernel // 2
                                         for kernel, pad in zip(conv.kernel_size, conv.padding))


class _WeightGradientAsProduct(torch.autograd.Function):
    """A "same" convolution by the backend's kernels, forward and for the images' gradient, whose weight
    gradient is one matrix product: the output's gradient (N*H*W, O), transposed, by the patches (N*H*W,
    C*kh*kw) cut from the padded NHWC images, their columns in the weight's order (taps first for
    channels_last). On the 4x4 maps of GoogLeNet's first inception blocks, in bf16 on a 2-core Intel Xeon,
    oneDNN's weight gradient took 2-5x as long as the patches and the product together (a 3x3 kernel from 128
    to 192 channels: 1.9 against 0.5 ms, where its forward pass and images' gradient took 0.4 ms each). Under
    autocast it computes in autocast's precision, as the native convolution does, and returns each gradient in
    its input's precision (the bias's summed in fp32 at least), the weight's in the weight's layout. Its
    backward pass is not differentiable again (what it saved was cast outside the graph): a double backward
    raises."""

    @staticmethod
    def forward(ctx, images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                padding: tuple[int, int]) -> torch.Tensor:
        dtype = _computing_dtype(images)
        with torch.autocast(images.device.type, enabled=False):
            cast_images, cast_weight = images.to(dtype), weight.to(dtype)
            out = F.conv2d(cast_images, cast_weight, None if bias is None else bias.to(dtype), padding=padding)
        ctx.save_for_backward(cast_images, cast_weight)
        ctx.padding, ctx.images_dtype = padding, images.dtype
        ctx.weight_layout = (weight.stride(), weight.dtype)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable  # its saved tensors were cast outside the graph
    def backward(ctx, grad: torch.Tensor):
        images, weight = ctx.saved_tensors
        grad = grad.to(images.dtype)
        out_channels, channels, kernel_h, kernel_w = weight.shape
        pad_h, pad_w = ctx.padding
        grad_images = None
        if ctx.needs_input_grad[0]:
            grad_images = torch.ops.aten.convolution_backward(
                grad, images, weight, None, [1, 1], [pad_h, pad_w], [1, 1], False, [0, 0], 1,
                [True, False, False])[0].to(ctx.images_dtype)
        rows = grad.permute(0, 2, 3, 1).reshape(-1, out_channels)  # (N*H*W, O)
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            padded = F.pad(images.permute(0, 2, 3, 1), (0, 0, pad_w, pad_w, pad_h, pad_h))  # (N, H+2p, W+2p, C)
            patches = padded.unfold(1, kernel_h, 1).unfold(2, kernel_w, 1)  # (N, H, W, C, kh, kw): a view
            if weight.is_contiguous():  # the product laid out as the weight: channels, then taps
                product = (rows.t() @ patches.reshape(rows.shape[0], -1)).view(weight.shape)
            else:  # taps, then channels: channels_last
                patches = patches.permute(0, 1, 2, 4, 5, 3).reshape(rows.shape[0], -1)  # (N*H*W, kh*kw*C)
                product = (rows.t() @ patches).view(out_channels, kernel_h, kernel_w, channels).permute(0, 3, 1, 2)
            grad_weight = _laid_out(product, *ctx.weight_layout)
        if ctx.needs_input_grad[2]:  # summed in fp32 at least, as oneDNN accumulates
            grad_bias = rows.sum(0, dtype=torch.promote_types(rows.dtype, torch.float32)).to(ctx.bias_dtype)
        return grad_images, grad_weight, grad_bias, None


class SharedInputInception(Inception):
    """An inception block whose three 1x1 convolutions of the block's input (branch 1's, and the reductions
    before branches 2 and 3) run as one, their weights side by side: one product of the input where there were
    three, and one gradient of it to add up (TensorRT's horizontal fusion of layers that share an input). On a
    2-core Intel Xeon it made GoogLeNet's bf16 ``matmul`` step 0.90 of its time (docs/measured.md). The
    parameters are the block's own, concatenated anew in each forward pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = (self.branch1, self.branch2[0], self.branch3[0])
        weight = torch.cat([conv.weight for conv in first])
        bias = torch.cat([conv.bias for conv in first])
        sizes = [conv.out_channels for conv in first]
        out1, reduced3, reduced5 = self.branch1.convolve(x, weight, bias).split(sizes, 1)
        # the reductions' ReLUs not in place: each reduction is a view of the one product
        return torch.cat([out1, self.branch2[2](F.relu(reduced3)), self.branch3[2](F.relu(reduced5)),
                          self.branch4(x)], 1)


def as_matrix_products(model: nn.Module, image_shape: tuple[int, int, int]) -> nn.Module:
    """``model`` with each plain ``nn.Conv2d`` (no groups, no dilation, zero padding given in pixels) made a
    ``SmallMapsAsMatmul`` and each inception block a ``SharedInputInception``; in place, the same parameters.
    Each convolution that computes a map of an image of ``image_shape`` (C, H, W) as a matrix product stores
    its weights in the order the product reads them: taps-last, (C, kh, kw, O) in memory, for the dense taps,
    and (O, C, kh, kw) for the rows and the unfolded patches, as do the 1x1 convolutions a block runs as one.
    Neither the forward pass nor the gradient then copies them into another (``index_select`` and ``reshape``
    copy a tensor they cannot read as it is, AccumulateGrad a gradient whose strides are not its parameter's,
    and DDP a gradient whose strides are not its bucket's); the values and ``state_dict``'s keys are unchanged.
    Timed in alternation on a 2-core Intel Xeon, GoogLeNet's ``matmul`` steps took 0.91-0.94 of their time with
    channels_last weights (docs/measured.md)."""
    for module in filter(_plain, model.modules()):
        module.__class__ = SmallMapsAsMatmul
    blocks = [block for block in model.modules() if type(block) is Inception]
    # the 1x1 convolutions a block runs as one: row-major, as their concatenation lays out the gradient
    shared = {conv for block in blocks for conv in (block.branch1, block.branch2[0], block.branch3[0])}
    for module, (height, width) in _maps(model, image_shape).items():  # each block's branches one by one
        if _takes_dense_taps(module, height, width):
            module.weight.data = _row_major(module.weight.data.permute(1, 2, 3, 0)).permute(3, 0, 1, 2)
        elif _computed_as_product(height, width) or module in shared:
            module.weight.data = _row_major(module.weight.data)
    for block in blocks:
        block.__class__ = SharedInputInception
    return model


def _laid_out(values: torch.Tensor, stride: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """``values`` in ``dtype`` with the strides ``stride``, the size-1 dimensions' included (AccumulateGrad keeps
    a gradient laid out as its parameter, and DDP compares those too): a view where ``values`` is laid out so,
    else a copy."""
    if values.dtype == dtype and all(have == want for have, want, size in zip(values.stride(), stride, values.shape)
                                     if size > 1):
        return values.as_strided(values.shape, stride)
    return torch.empty_strided(values.shape, stride, dtype=dtype, device=values.device).copy_(values)


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
    image of ``image_shape`` (C, H, W): none (VGGNet's maps are 14x14 and larger, and it has no inception
    block) makes the ``matmul`` variant the native one under another name."""
    return sum(_computed_as_product(height, width) for height, width in _maps(model, image_shape).values())


@functools.cache
def has_small_maps(model_name: str) -> bool:
    """Whether the registered model ``model_name`` has convolutions that a ``matmul`` variant computes as
    matrix products on a digit (GoogLeNet does, VGGNet not)."""
    return small_map_convolutions(models.build(model_name), data.IMAGE_SHAPE) > 0


def runs_native(model_name: str, variant) -> str | None:
    """Why ``variant`` (a ``variants.Variant``) would time ``model_name``'s native kernels under a ``matmul``
    name (the model has no convolution the variant computes otherwise), or None."""
    if variant.convolution != "matmul" or has_small_maps(model_name):
        return None
    return (f"{model_name} has no convolution on maps of at most {MAX_PIXELS} pixels: {variant} would run "
            f"{dataclasses.replace(variant, convolution='native')}'s kernels")


def _plain(module: nn.Module) -> bool:
    """A convolution ``SmallMapsAsMatmul`` computes (or already does)."""
    return (type(module) in (nn.Conv2d, SmallMapsAsMatmul) and module.groups == 1 and module.dilation == (1, 1)
            and module.padding_mode == "zeros" and isinstance(module.padding, tuple))
