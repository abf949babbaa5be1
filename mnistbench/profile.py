"""Where a training step's time goes: ``torch.profiler`` over a few warm steps, by kind of work.

A step at a quarter of the device's peak is held by something other than its matrix products; the kinds
say what: convolutions forward and backward (the products), pooling, concatenation, element-wise work,
casts and copies (autocast's), Adam's update, allocation. Each operator's self time counts once (a
parent's time excludes its children's), on the device that ran it (a CUDA GPU's kernels, else the CPU's),
and every operator called from Adam's ``step`` or ``zero_grad`` counts as Adam's (its Python loop too).
Compiled variants run fused kernels of their own, which count as ``other``; MPS kernels are not profiled.
"""
import contextlib
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from . import convolution, devices, fast, training
from .variants import Variant

OPTIMIZER = "Adam's update"
# (kind, words of which one names an operator of that kind), in the order they are tried
KINDS = (
    ("convolution, backward", ("convolution_backward",)),
    ("convolution, forward", ("convolution",)),
    ("pooling", ("pool",)),
    ("concatenation", ("cat",)),
    ("patches (matmul convolutions)", ("im2col", "col2im")),
    ("casts and copies", ("copy", "clone", "contiguous")),
    ("matrix products (linear layers, matmul convolutions)", ("addmm", "aten::mm", "bmm", "linear")),
    ("loss", ("cross_entropy", "log_softmax", "nll_loss")),
    ("dropout", ("dropout", "bernoulli")),
    ("allocation and filling", ("empty", "zero", "fill", "ones_like", "full")),
    ("element-wise", ("relu", "threshold", "clamp", "add", "mul", "div", "sub", "sqrt", "lerp", "where", "sum")),
)


@dataclass(frozen=True)
class Profile:
    """One model's training step in one variant: its time, and its operators' self times by kind and by name."""

    model_name: str
    device: str
    variant: Variant
    batch_size: int
    step_ms: float  # median wall time of a step, unprofiled
    profiled_ms: float  # wall time of a step under the profiler, which its operators' self times cannot exceed
    kinds: dict[str, float]  # ms a step by kind of work, the busiest first
    operators: list[tuple[str, float, int]]  # (operator [with its input shapes], ms a step, calls a step), busiest first

    def table(self, top: int = 12) -> str:
        """Markdown: a header line, the kinds with their shares, and the ``top`` busiest operators."""
        counted = sum(self.kinds.values())
        lines = [f"{self.model_name} training step, batch {self.batch_size}, {self.variant} on {self.device}: "
                 f"{self.step_ms:.1f} ms (median, unprofiled); operators {counted:.1f} ms of "
                 f"{self.profiled_ms:.1f} ms a step under the profiler",
                 "", "| kind of work | ms a step | share |", "| --- | ---: | ---: |"]
        lines += [f"| {kind} | {ms:.1f} | {ms / counted:.0%} |" for kind, ms in self.kinds.items()]
        lines += ["", "| operator | ms a step | calls a step |", "| --- | ---: | ---: |"]
        lines += [f"| {name} | {ms:.2f} | {calls} |" for name, ms, calls in self.operators[:top]]
        return "\n".join(lines)


def kind_of(name: str, under_optimizer: bool) -> str:
    """The kind of work of the operator called ``name`` (``KINDS``); Adam's for any op called from it."""
    if under_optimizer or name.startswith("Optimizer."):
        return OPTIMIZER
    return next((kind for kind, words in KINDS if any(word in name for word in words)), "other")


def _under_optimizer(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer."):
            return True
        parent = parent.cpu_parent
    return False


def _shapes(event) -> str:
    """An operator's tensor arguments' shapes, e.g. ``[64,160,2,2] [320,160,3,3]``."""
    return " ".join(str(shape).replace(" ", "") for shape in event.input_shapes if shape)


def check(model_name: str, device: str, variant: Variant, steps: int) -> None:
    """``ValueError`` for what cannot be profiled: a variant the device cannot run, a ``matmul`` variant of a
    model without convolutions on small maps (it would run the native kernels under another name), an MPS
    device (its kernels are not profiled), ``steps`` < 1. Before the data are loaded, so that a wrong option
    costs nothing."""
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    if reason := variant.unsupported_on(device):
        raise ValueError(f"{variant} cannot run on {device}: {reason}")
    if wasted := convolution.runs_native(model_name, variant):
        raise ValueError(wasted)
    if torch.device(device).type == "mps":
        raise ValueError("the profiler does not see MPS kernels, only the CPU's dispatch of them: profile cpu or cuda")


def measure(model_name: str, device: str, train_set, batch_size: int, variant: Variant, steps: int = 5,
            by_shape: bool = False) -> Profile:
    """Profile ``steps`` training steps of ``model_name`` in ``variant`` on the first ``batch_size`` digits of
    ``train_set`` (a torchvision MNIST: ``data`` N x 28 x 28 uint8, ``targets``), after the warm-up a timed
    case takes and as many unprofiled steps, whose median is ``step_ms``; ``by_shape`` lists each operator
    once per shape of its tensor arguments (which of a network's layers cost most). ``ValueError`` for what
    ``check`` refuses or a batch larger than ``train_set``."""
    check(model_name, device, variant, steps)
    if batch_size > len(train_set):
        raise ValueError(f"a batch of {batch_size} is more than the {len(train_set)} training images")
    on_gpu = torch.device(device).type == "cuda"
    training_steps = fast.TrainingSteps(model_name, device, train_set, batch_size)
    with contextlib.closing(training_steps.steps(variant, batch_size)) as running:
        for _ in range(variant.warm_up_steps(training.WARM_UP_STEPS)):
            next(running)
        step_ms = statistics.median(next(running) for _ in range(steps)) * 1e3
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
        with profile(activities=activities, record_shapes=by_shape) as profiled:
            start = time.perf_counter()
            for _ in range(steps):
                next(running)
            devices.synchronize(device)
            profiled_ms = (time.perf_counter() - start) * 1e3 / steps
    kinds, operators, calls = defaultdict(float), defaultdict(float), defaultdict(int)
    for event in profiled.events():
        if event.device_type != DeviceType.CPU:  # a GPU's kernel: its time is already its operator's device time
            continue
        operator = f"{event.name} {_shapes(event)}".strip() if by_shape else event.name
        calls[operator] += 1
        us = event.self_device_time_total if on_gpu else event.self_cpu_time_total
        if us > 0:
            kinds[kind_of(event.name, _under_optimizer(event))] += us / 1e3 / steps
            operators[operator] += us / 1e3 / steps
    busiest = sorted(operators.items(), key=lambda item: -item[1])
    return Profile(model_name, device, variant, batch_size, step_ms, profiled_ms,
                   dict(sorted(kinds.items(), key=lambda item: -item[1])),
                   [(name, ms, calls[name] // steps) for name, ms in busiest])
