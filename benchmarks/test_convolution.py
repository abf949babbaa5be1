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
from models.googlenet import Inception
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


@contextlib.contextmanager
def paths_counted(monkeypatch):
    """How many times each path ran within: ``unfold`` (the unfolded patches), ``gradient`` (the native
    convolution whose weight gradient is a product) and ``native`` (the maps, in pixels, that ``nn.Conv2d``'s
    own convolution computed)."""
    counts = {"unfold": 0, "gradient": 0}
    unfold, apply = F.unfold, convolution._WeightGradientAsProduct.apply

    def counted(name, function):
        def call(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)
        return call

    with native_convolutions_counted(monkeypatch) as maps, monkeypatch.context() as patched:
        patched.setattr(F, "unfold", counted("unfold", unfold))
        patched.setattr(convolution._WeightGradientAsProduct, "apply", counted("gradient", apply))
        counts["native"] = maps
        yield counts


@pytest.mark.parametrize("kernel, stride, padding, map_size, path", [
    (3, 1, 1, (2, 2), "taps"), (3, 1, 1, (1, 1), "taps"), (5, 1, 2, (2, 2), "taps"), (3, 1, 1, (1, 2), "taps"),
    (3, 1, 1, (2, 1), "taps"), (5, 1, 2, (1, 3), "taps"),  # by a dense matrix of the taps
    (1, 1, 0, (2, 2), "rows"), (1, 1, 0, (1, 1), "rows"),  # the NHWC rows as they are
    (3, 2, 1, (2, 2), "unfold"), (3, 1, 1, (1, 3), "unfold"),  # strided, or a kernel too small to join every pair
    (3, 1, 1, (3, 3), "gradient"), (5, 1, 2, (4, 4), "gradient"), (1, 1, 0, (4, 4), "gradient"),  # up to 16
    (3, 1, 1, (2, 3), "gradient"),                                # pixels: the weight gradient as a product
    (3, 2, 1, (4, 4), "native"), (3, 1, 0, (4, 4), "native"), (3, 1, 1, (5, 4), "native"),  # the module's own
])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_convolution_as_a_matrix_product_computes_what_the_native_one_does(kernel, stride, padding, map_size,
                                                                              path, memory_format, precision,
                                                                              monkeypatch):
    """Values and gradients as the native convolution's, in fp32 and under bf16 autocast (whose result each
    path must return in bf16), and the path each map takes: the dense taps on a map where each output pixel
    sees every input pixel (non-square ones included), else the NHWC rows or unfolded patches; on a map of up
    to ``GRADIENT_PIXELS`` a "same" convolution's weight gradient as a product, and the module's own
    convolution for any other."""
    torch.manual_seed(0)
    native = nn.Conv2d(8, 6, kernel, stride=stride, padding=padding).to(memory_format=memory_format)
    product = convolution.as_matrix_products(copy.deepcopy(native), (8, *map_size))
    images = torch.randn(3, 8, *map_size).contiguous(memory_format=memory_format).requires_grad_()
    autocast = Variant(precision).autocast("cpu")
    with autocast:
        expected = native(images)
    with paths_counted(monkeypatch) as counts, autocast:
        found = product(images)
    assert counts == {"unfold": path == "unfold", "gradient": path == "gradient",
                      "native": [images[0, 0].numel()] if path == "native" else []}
    assert found.dtype == expected.dtype
    allowed = {"fp32": 1e-5, "bf16": 2e-2}[precision]
    torch.testing.assert_close(found, expected, rtol=allowed, atol=allowed)
    upstream = torch.randn_like(expected)
    for got, want in zip(torch.autograd.grad(found, (images, product.weight, product.bias), upstream),
                         torch.autograd.grad(expected, (images, native.weight, native.bias), upstream)):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=10 * allowed, atol=10 * allowed)


@pytest.mark.parametrize("kernel, stride, map_size, layout", [
    (3, 1, (2, 2), "taps_last"), (3, 1, (1, 1), "taps_last"), (5, 1, (2, 1), "taps_last"),  # the dense taps
    (1, 1, (2, 2), "row_major"), (1, 1, (1, 1), "row_major"), (3, 2, (2, 2), "row_major"),  # rows, unfolded
    (3, 1, (4, 4), "kept"), (1, 1, (4, 4), "kept"),  # the weight gradient as a product
])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_a_matrix_product_copies_no_weight_forward_or_backward(kernel, stride, map_size, layout, memory_format):
    """The weights of a convolution computed as a matrix product are stored in the order the product reads
    them, so that its step copies no tensor of the weight's size: in channels_last the dense taps' were copied
    for ``index_select`` and again for their gradient, which PyTorch lays out as its parameter (GoogLeNet's
    ``matmul`` steps took 0.91-0.94 of their time without those copies on a 2-core Intel Xeon), and DDP warned
    of a 1x1 kernel's gradient, whose strides differed from its bucket's. A weight gradient computed as a
    product comes in its weight's layout, whichever it is; a convolution on a larger map keeps its layout."""
    torch.manual_seed(0)
    native = nn.Conv2d(8, 6, kernel, stride=stride, padding=kernel // 2).to(memory_format=memory_format)
    product = convolution.as_matrix_products(copy.deepcopy(native), (8, *map_size))
    larger = convolution.as_matrix_products(copy.deepcopy(native), (8, 5, 5))
    read_as = product.weight.permute(1, 2, 3, 0) if layout == "taps_last" else product.weight
    assert read_as.stride() == (native.weight.stride() if layout == "kept" else torch.empty(read_as.shape).stride())
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


def test_the_weight_gradient_as_a_product_skips_what_is_not_asked_and_refuses_a_second_backward():
    """A frozen weight gets no gradient and the images' is the native one; a double backward, which would drop
    the terms through the tensors cast outside the graph, raises instead of returning wrong values."""
    torch.manual_seed(0)
    native = nn.Conv2d(4, 5, 3, padding=1)
    product = convolution.as_matrix_products(copy.deepcopy(native), (4, 4, 4))
    product.weight.requires_grad_(False)
    images = torch.randn(2, 4, 4, 4, requires_grad=True)
    found, = torch.autograd.grad(product(images).square().sum(), images)
    expected, = torch.autograd.grad(native(images).square().sum(), images)
    torch.testing.assert_close(found, expected)
    assert product.weight.grad is None
    once, = torch.autograd.grad(product(images).square().sum(), images, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        once.sum().backward()


@pytest.mark.parametrize("map_size", [(4, 4), (2, 2), (1, 1)])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_inception_blocks_1x1_convolutions_of_its_input_run_as_one(map_size, memory_format, precision):
    """The three 1x1 convolutions of an inception block's input run as one convolution of their weights side
    by side, never one by one, with the block's values and gradients, each gradient laid out as its parameter
    (AccumulateGrad and DDP's buckets compare strides)."""
    torch.manual_seed(0)
    block = Inception(16, 8, 6, 10, 4, 6, 5).to(memory_format=memory_format)
    merged = convolution.as_matrix_products(copy.deepcopy(block), (16, *map_size))
    assert type(merged) is convolution.SharedInputInception
    one_by_one = []
    for conv in (merged.branch1, merged.branch2[0], merged.branch3[0]):
        conv.register_forward_hook(lambda *args: one_by_one.append(args[0]))
    images = torch.randn(3, 16, *map_size).contiguous(memory_format=memory_format)
    own_images, block_images = images.clone().requires_grad_(), images.clone().requires_grad_()
    upstream = torch.randn(3, 8 + 10 + 6 + 5, *map_size)
    with Variant(precision).autocast("cpu"):
        found, expected = merged(own_images), block(block_images)
    assert one_by_one == [] and found.dtype == expected.dtype
    allowed = {"fp32": 1e-5, "bf16": 2e-2}[precision]
    torch.testing.assert_close(found, expected, rtol=allowed, atol=allowed)
    found.backward(upstream)
    expected.backward(upstream)
    torch.testing.assert_close(own_images.grad, block_images.grad, rtol=10 * allowed, atol=10 * allowed)
    for (name, got), want in zip(merged.named_parameters(), block.parameters()):
        assert got.grad.stride() == got.stride(), name
        torch.testing.assert_close(got.grad, want.grad, rtol=10 * allowed, atol=10 * allowed)


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
    """The optimizer, checkpoints and the articles' scripts see the same model; its stem's convolutions, on
    28x28 and 7x7 maps, still run the module's own, and the eight of inception blocks 3a and 3b on 4x4 maps
    (four each, the three 1x1 convolutions of the block's input as one) the native kernels but for the weight
    gradient."""
    model = models.build("googlenet")
    before = {name: parameter for name, parameter in model.named_parameters()}
    Variant(convolution="matmul").prepare_model(model)
    assert {name: parameter for name, parameter in model.named_parameters()} == before
    assert list(model.state_dict()) == list(models.build("googlenet").state_dict())
    with paths_counted(monkeypatch) as counts, torch.no_grad():
        model(torch.zeros(1, *data.IMAGE_SHAPE))
    assert counts == {"unfold": 0, "gradient": 8, "native": [28 * 28, 7 * 7, 7 * 7]}


@pytest.mark.skipif(bool(Variant(compile="compile").unsupported_on("cpu")),
                    reason=str(Variant(compile="compile").unsupported_on("cpu")))
@pytest.mark.filterwarnings("error::UserWarning")
def test_compiled_matrix_products_match_eager(monkeypatch):
    """The compiled modes are tried on top of ``matmul`` in the probe: a small net with a 4x4 map (the weight
    gradient as a product) and 2x2 maps, compiled, never reaching the module's own convolution, traced without a
    warning (Dynamo warned of the ``functools.cache`` that once held the taps' indices) and compiled once (when a
    global dict held them, Dynamo stored them there from the graph and compiled again on the next call)."""
    convolution._kept_pair_taps.cache_clear()  # compiled first: the indices are the graph's own constant
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 8, 1), nn.Flatten(), nn.Linear(32, 3))
    eager = Variant(convolution="matmul").prepare_model(copy.deepcopy(net), (4, 4, 4))
    compiled = Variant(compile="compile", convolution="matmul").prepare_model(net, (4, 4, 4))
    images = torch.randn(5, 4, 4, 4)
    with native_convolutions_counted(monkeypatch) as maps, torch._dynamo.config.patch(error_on_recompile=True):
        torch.testing.assert_close(compiled(images), eager(images), rtol=1e-5, atol=1e-5)
        compiled(images).sum().backward()  # the same graph: nothing it read has changed
        eager(images).sum().backward()
    assert maps == []
    for layer in (0, 2):
        torch.testing.assert_close(net[layer].weight.grad, eager[layer].weight.grad, rtol=1e-4, atol=1e-4)
