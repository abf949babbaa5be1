"""PyTorch's fused CPU Adam stepped over each parameter as flat memory (``mnistbench.adam``): the same update as
its own step, no copy of a gradient, and every tensor as it was after the step, raised or not."""
import math

import pytest
import torch

from mnistbench import adam
from mnistbench.variants import Variant


def parameters() -> list[torch.nn.Parameter]:
    """A channels_last weight, a taps-last one (as ``mnistbench.convolution`` stores them), a contiguous one and
    a bias, with gradients laid out as each (as autograd leaves them)."""
    torch.manual_seed(0)
    shapes_and_layouts = [((6, 4, 3, 3), lambda t: t.contiguous(memory_format=torch.channels_last)),
                          ((6, 4, 3, 3), lambda t: t.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2)),
                          ((6, 4, 3, 3), lambda t: t), ((6,), lambda t: t)]
    return [torch.nn.Parameter(lay_out(torch.randn(shape))) for shape, lay_out in shapes_and_layouts]


def with_gradients(params: list[torch.nn.Parameter], seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for param in params:
        param.grad = torch.randn(param.shape, generator=generator).as_strided(param.shape, param.stride())


def layouts(params, optimizer) -> list:
    """Each parameter's, gradient's and moment's shape and strides."""
    return [(tuple(tensor.shape), tensor.stride()) for param in params
            for tensor in [param, param.grad] + [value for key, value in optimizer.state[param].items() if key != "step"]]


@pytest.mark.parametrize("reference", ["fused", "foreach"])
def test_the_flat_step_updates_as_pytorchs_own(reference):
    """Three steps: the same parameters and moments as PyTorch's fused step (bit for bit: the same kernel over
    the same elements) and its foreach one, each tensor laid out as before."""
    ours, theirs = parameters(), parameters()
    ours_adam = torch.optim.Adam(ours, lr=0.1, fused=True)
    theirs_adam = torch.optim.Adam(theirs, lr=0.1, **{reference: True})
    for seed in range(3):
        with_gradients(ours, seed)
        with_gradients(theirs, seed)
        adam.step(ours_adam)
        theirs_adam.step()
    exact = reference == "fused"
    for mine, other in zip(ours, theirs):
        torch.testing.assert_close(mine, other, rtol=0 if exact else 1e-6, atol=0 if exact else 1e-6)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(ours_adam.state[mine][key], theirs_adam.state[other][key],
                                       rtol=0 if exact else 1e-6, atol=0 if exact else 1e-6)
    assert layouts(ours, ours_adam) == layouts(theirs, theirs_adam)


def test_the_fused_variants_step_copies_no_gradient_where_pytorchs_does():
    """PyTorch's fused CPU step copies the gradient of each weight that is not contiguous (here two: the
    channels_last and the taps-last); the fused variant's step copies none."""
    def copied(step, params) -> int:
        with_gradients(params, 0)
        with torch.profiler.profile(record_shapes=True) as profiled:
            step()
        return sum(event.name == "aten::copy_" and math.prod(event.input_shapes[0]) == 6 * 4 * 3 * 3
                   for event in profiled.events())

    params = parameters()
    optimizer = torch.optim.Adam(params, fused=True)
    assert copied(optimizer.step, params) == 2
    assert copied(Variant(optimizer="fused").prepare_optimizer_step(optimizer), params) == 0


def test_a_step_that_raises_leaves_every_tensor_as_it_was(monkeypatch):
    params = parameters()
    optimizer = torch.optim.Adam(params, fused=True)
    with_gradients(params, 0)
    adam.step(optimizer)  # moments made
    before = layouts(params, optimizer)
    with_gradients(params, 1)

    def broken(*args, **kwargs):
        assert params[0].dim() == 1  # flat within the step
        raise RuntimeError("a kernel's error")

    monkeypatch.setattr(optimizer, "step", broken)
    with pytest.raises(RuntimeError, match="a kernel's error"):
        adam.step(optimizer)
    assert layouts(params, optimizer) == before


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")  # the case itself
def test_a_gradient_kept_in_a_graph_is_left_to_pytorchs_step():
    """A gradient made with ``create_graph`` is part of a graph: flattened and restored it would come back a
    view in it, which ``zero_grad(set_to_none=False)`` cannot detach in place."""
    param = torch.nn.Parameter(torch.randn(2, 3, 3, 3).contiguous(memory_format=torch.channels_last))
    (param ** 3).sum().backward(create_graph=True)
    kept = param.grad.grad_fn
    optimizer = torch.optim.Adam([param], fused=True)
    adam.step(optimizer)
    assert param.grad.grad_fn is kept
    optimizer.zero_grad(set_to_none=False)
    assert not param.grad.any()
    param.grad = None  # the cycle between the parameter and its gradient
