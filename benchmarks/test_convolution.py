"""Convolutions on small maps as matrix products (``mnistbench.convolution``): the same values and gradients
as the backend's convolutions, eager and compiled, and only where a map is small."""
import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
from mnistbench import convolution, data
from mnistbench.variants import Variant


@contextlib.contextmanager
def native_convolutions_counted(monkeypatch):
    """The map size (pixels) of every convolution computed by ``nn.Conv2d``'s own kernels within."""
    maps, native = [], nn.Conv2d._conv_forward

    def counted(module, images, weight, bias):
        maps.append(images.shape[-2:].numel())
        return native(module, images, weight, bias)

    with monkeypatch.context() as patched:
        patched.setattr(nn.Conv2d, "_conv_forward", counted)
        yield maps


@pytest.mark.parametrize("kernel, stride, padding, map_size, unfolded", [
    (3, 1, 1, (2, 2), 0), (3, 1, 1, (1, 1), 0), (5, 1, 2, (2, 2), 0), (3, 1, 1, (1, 2), 0),  # by a dense matrix
    (3, 1, 1, (2, 1), 0), (5, 1, 2, (1, 3), 0),                                             # of the taps
    (1, 1, 0, (2, 2), 0), (1, 1, 0, (1, 1), 0),  # the NHWC rows as they are
    (3, 2, 1, (2, 2), 1), (3, 1, 1, (1, 3), 1),  # strided, or a kernel too small to join every pair: unfolded
    (3, 1, 1, (3, 3), 0),  # a 9-pixel map: the module's own convolution
])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_convolution_as_a_matrix_product_computes_what_the_native_one_does(kernel, stride, padding, map_size,
                                                                              unfolded, memory_format, precision,
                                                                              monkeypatch):
    """Values and gradients as the native convolution's, in fp32 and under bf16 autocast (whose result each
    path must return in bf16), and the path each map takes: the dense taps on a map where each output pixel
    sees every input pixel (non-square ones included), else the NHWC rows or unfolded patches."""
    torch.manual_seed(0)
    native = nn.Conv2d(8, 6, kernel, stride=stride, padding=padding)
    product = convolution.as_matrix_products(copy.deepcopy(native), (8, *map_size))
    images = torch.randn(3, 8, *map_size).contiguous(memory_format=memory_format).requires_grad_()
    autocast = Variant(precision).autocast("cpu")
    with autocast:
        expected = native(images)
    unfolds, unfold = [], F.unfold
    monkeypatch.setattr(F, "unfold", lambda *args, **kwargs: unfolds.append(1) or unfold(*args, **kwargs))
    with native_convolutions_counted(monkeypatch) as maps, autocast:
        found = product(images)
    pixels = map_size[0] * map_size[1]
    assert maps == ([] if pixels <= convolution.MAX_PIXELS else [pixels])
    assert len(unfolds) == unfolded and found.dtype == expected.dtype
    allowed = {"fp32": 1e-5, "bf16": 2e-2}[precision]
    torch.testing.assert_close(found, expected, rtol=allowed, atol=allowed)
    upstream = torch.randn_like(expected)
    for got, want in zip(torch.autograd.grad(found, (images, product.weight, product.bias), upstream),
                         torch.autograd.grad(expected, (images, native.weight, native.bias), upstream)):
        torch.testing.assert_close(got, want, rtol=10 * allowed, atol=10 * allowed)


@pytest.mark.parametrize("kernel, stride, map_size, taps_last", [
    (3, 1, (2, 2), True), (3, 1, (1, 1), True), (5, 1, (2, 1), True),  # the dense taps
    (1, 1, (2, 2), False), (1, 1, (1, 1), False), (3, 2, (2, 2), False),  # the NHWC rows, unfolded patches
])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_a_matrix_product_copies_no_weight_forward_or_backward(kernel, stride, map_size, taps_last, memory_format):
    """The weights of a convolution computed as a matrix product are stored in the order the product reads
    them, so that its step copies no tensor of the weight's size: in channels_last the dense taps' were copied
    for ``index_select`` and again for their gradient, which PyTorch lays out as its parameter (GoogLeNet's
    ``matmul`` steps took 0.91-0.94 of their time without those copies on a 2-core Intel Xeon), and DDP warned
    of a 1x1 kernel's gradient, whose strides differed from its bucket's. A convolution on a larger map keeps
    its layout."""
    torch.manual_seed(0)
    native = nn.Conv2d(8, 6, kernel, stride=stride, padding=kernel // 2).to(memory_format=memory_format)
    product = convolution.as_matrix_products(copy.deepcopy(native), (8, *map_size))
    larger = convolution.as_matrix_products(copy.deepcopy(native), (8, 3, 3))
    read_as = product.weight.permute(1, 2, 3, 0) if taps_last else product.weight
    assert read_as.stride() == torch.empty(read_as.shape).stride()
    assert larger.weight.stride() == native.weight.stride()
    torch.testing.assert_close(product.weight, native.weight, rtol=0, atol=0)
    images = torch.randn(3, 8, *map_size).contiguous(memory_format=memory_format).requires_grad_()
    with torch.profiler.profile(record_shapes=True) as profiled:
        product(images).square().sum().backward()
    copied = [event.input_shapes[0] for event in profiled.events() if event.name in ("aten::copy_", "aten::clone")]
    assert all(math.prod(shape) != native.weight.numel() for shape in copied)
    assert product.weight.grad.stride() == product.weight.stride()  # as DDP's bucket views are laid out
    product(images).square().sum().backward()  # accumulated in place, as the first gradient was kept
    native(images).square().sum().backward()
    torch.testing.assert_close(product.weight.grad, 2 * native.weight.grad, rtol=1e-5, atol=1e-5)


def test_a_map_first_seen_in_inference_mode_still_trains():
    """The taps' indices are made once per map size and device; made first inside ``torch.inference_mode`` (an
    evaluation, or an inference step, first on a pytest-xdist worker), they would be an inference tensor,
    which every later training step refuses to save for its backward pass."""
    convolution._kept_pair_taps.cache_clear()
    torch.manual_seed(0)
    conv = convolution.as_matrix_products(nn.Conv2d(4, 5, 3, padding=1), (4, 2, 2))
    images = torch.randn(2, 4, 2, 2)
    with torch.inference_mode():
        conv(images)
    conv(images).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_only_googlenets_convolutions_see_maps_small_enough():
    """GoogLeNet takes MNIST's 28x28 digits down to 2x2 and 1x1 maps; VGGNet's smallest are 14x14, where
    ``matmul`` would change nothing."""
    assert convolution.small_map_convolutions(models.build("vgg"), data.IMAGE_SHAPE) == 0
    googlenet = models.build("googlenet")
    every = sum(isinstance(module, nn.Conv2d) for module in googlenet.modules())
    assert 0 < convolution.small_map_convolutions(googlenet, data.IMAGE_SHAPE) < every


def test_the_model_keeps_its_parameters_and_state_dict_keys_and_only_small_maps_change(monkeypatch):
    """The optimizer, checkpoints and the articles' scripts see the same model; its convolutions on maps of
    more than 4 pixels still run the native kernels."""
    model = models.build("googlenet")
    before = {name: parameter for name, parameter in model.named_parameters()}
    Variant(convolution="matmul").prepare_model(model)
    assert {name: parameter for name, parameter in model.named_parameters()} == before
    assert list(model.state_dict()) == list(models.build("googlenet").state_dict())
    with native_convolutions_counted(monkeypatch) as maps, torch.no_grad():
        model(torch.zeros(1, *data.IMAGE_SHAPE))
    every = sum(isinstance(module, nn.Conv2d) for module in model.modules())
    assert len(maps) == every - convolution.small_map_convolutions(models.build("googlenet"), data.IMAGE_SHAPE)
    assert min(maps) > convolution.MAX_PIXELS


@pytest.mark.skipif(bool(Variant(compile="compile").unsupported_on("cpu")),
                    reason=str(Variant(compile="compile").unsupported_on("cpu")))
@pytest.mark.filterwarnings("error::UserWarning")
def test_compiled_matrix_products_match_eager(monkeypatch):
    """The compiled modes are tried on top of ``matmul`` in the probe: a small net with 2x2 maps, compiled,
    never reaching the native convolution, traced without a warning (Dynamo warned of the ``functools.cache``
    that once held the taps' indices) and compiled once (when a global dict held them, Dynamo stored them there
    from the graph and compiled again on the next call)."""
    convolution._kept_pair_taps.cache_clear()  # compiled first: the indices are the graph's own constant
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Flatten(), nn.Linear(32, 3))
    eager = Variant(convolution="matmul").prepare_model(copy.deepcopy(net), (4, 2, 2))
    compiled = Variant(compile="compile", convolution="matmul").prepare_model(net, (4, 2, 2))
    images = torch.randn(5, 4, 2, 2)
    with native_convolutions_counted(monkeypatch) as maps, torch._dynamo.config.patch(error_on_recompile=True):
        torch.testing.assert_close(compiled(images), eager(images), rtol=1e-5, atol=1e-5)
        compiled(images).sum().backward()  # the same graph: nothing it read has changed
        eager(images).sum().backward()
    assert maps == []
    torch.testing.assert_close(net[0].weight.grad, eager[0].weight.grad, rtol=1e-4, atol=1e-4)
