"""PyTorch's fused Adam on a CPU, stepped over each parameter as the flat memory it updates.

The CPU kernel of ``torch.optim.Adam(fused=True)`` (torch 2.11 and 2.14, ATen's ``FusedAdamKernel.cpp``) walks
a parameter, its gradient and its two moments as flat memory, element by element, and first copies each
gradient that is not contiguous into a contiguous tensor it never reads. A channels_last weight's gradient,
or a taps-last one's (``mnistbench.convolution``), is then transposed for nothing at every step: 20 of
GoogLeNet's 116 parameters in its bf16 ``matmul`` variant, whose fused update took 7.7-8.7 ms a step on a
2-core Intel Xeon against 4.7-5.7 ms without those copies, and its training step 0.96 of its time
(docs/measured.md). ``step`` hands the kernel each such tensor as the flat view of its memory that the
kernel reads anyway, and gives each its shape and strides back after, when the step raises too: the same
update, element for element, and the same ``state_dict``.
"""
import contextlib

import torch


def step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, with each CPU parameter that is dense but not contiguous, and whose gradient and
    moments share its strides (PyTorch lays them out so), shown to it as a flat contiguous view of its memory;
    the optimizer's own step hooks see them flat too."""
    with _flat(optimizer):
        optimizer.step()


@contextlib.contextmanager
def _flat(optimizer: torch.optim.Optimizer):
    """Within: the parameters ``step`` flattens, their gradients and moments, flat; after: as they were."""
    state = optimizer.state
    flattened = [(parameter, parameter.shape, parameter.stride()) for group in optimizer.param_groups
                 for parameter in group["params"] if _flattens(parameter, state)]
    try:
        for parameter, _, _ in flattened:
            parameter.data = _flat_view(parameter.data)  # first: a gradient must have its parameter's shape
            parameter.grad = _flat_view(parameter.grad)
            state[parameter].update({key: _flat_view(value) for key, value in _moments(parameter, state)})
        yield
    finally:
        for parameter, shape, stride in flattened:
            parameter.data = _strided_view(parameter.data, shape, stride)
            parameter.grad = _strided_view(parameter.grad, shape, stride)
            state[parameter].update({key: _strided_view(value, shape, stride)
                                     for key, value in _moments(parameter, state)})


def _flattens(parameter: torch.Tensor, state) -> bool:
    """Whether ``step`` flattens ``parameter``: on a CPU, with a gradient outside any graph (one kept by
    ``create_graph`` would come back a view in it), not contiguous but dense, and its gradient and moments laid
    out as it is (the kernel pairs their elements by their place in memory)."""
    if (parameter.device.type != "cpu" or parameter.grad is None or parameter.grad.requires_grad
            or parameter.is_contiguous()):
        return False
    by_stride = sorted(range(parameter.dim()), key=lambda dim: -parameter.stride(dim))
    return parameter.permute(by_stride).is_contiguous() and all(
        tensor.shape == parameter.shape and tensor.stride() == parameter.stride()
        for tensor in [parameter.grad] + [value for _, value in _moments(parameter, state)])


def _moments(parameter: torch.Tensor, state) -> list[tuple[str, torch.Tensor]]:
    """``parameter``'s tensors in the optimizer's ``state`` but its step count: Adam's moments, as many elements
    as it has (after a flat step, flat)."""
    return [(key, value) for key, value in state.get(parameter, {}).items()
            if key != "step" and isinstance(value, torch.Tensor) and value.numel() == parameter.numel()]


def _flat_view(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``'s memory as one contiguous dimension (a dense tensor's, in the order its elements lie)."""
    return _strided_view(tensor, (tensor.numel(),), (1,))


def _strided_view(tensor: torch.Tensor, shape: torch.Size | tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """A view of ``tensor``'s memory, from where it starts, with ``shape`` and ``stride``: ``_flat_view`` and its
    inverse."""
    return tensor.as_strided(shape, stride, tensor.storage_offset())
