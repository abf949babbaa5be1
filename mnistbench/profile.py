"""Where a training step's time goes: ``torch.profiler`` over a few warm steps, by kind of work.

A step at a quarter of the device's peak is held by something other than its matrix products; the kinds
say what: convolutions forward and backward (the products), pooling, concatenation, element-wise work,
casts and copies (autocast's), Adam's update, allocation. Each operator's self time counts once (a
parent's time excludes its children's), on the device that ran it (a GPU's kernels, else the CPU's), and
every operator called from Adam's ``step`` counts as Adam's (its Python loop too).
"""
import statistics
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile

from . import devices, fast
from .variants import Variant

WARM_UP_STEPS = 3
OPTIMIZER = "Adam's update"
# (kind, words of which one names an operator of that kind), in the order they are tried
KINDS = (
    ("convolution, backward", ("convolution_backward",)),
    ("convolution, forward", ("convolution",)),
    ("pooling", ("pool",)),
    ("concatenation", ("cat",)),
    ("casts and copies", ("copy", "_to_copy", "clone", "contiguous")),
    ("linear layers", ("addmm", "aten::mm", "bmm", "linear")),
    ("loss", ("cross_entropy", "log_softmax", "nll_loss")),
    ("dropout", ("dropout", "bernoulli")),
    ("allocation and filling", ("empty", "zero", "fill", "ones_like", "full")),
    ("element-wise", ("relu", "threshold", "add", "mul", "div", "sub", "sqrt", "lerp", "where", "sum")),
)


@dataclass(frozen=True)
class Profile:
    model_name: str
    device: str
    variant: Variant
    batch_size: int
    step_ms: float  # median wall time of a step, outside the profiler
    kinds: dict[str, float]  # ms a step by kind of work, profiled
    operators: list[tuple[str, float, int]]  # (operator, ms a step, calls a step), the busiest first

    def table(self, top: int = 12) -> str:
        profiled = sum(self.kinds.values())
        lines = [f"{self.model_name} training step, batch {self.batch_size}, {self.variant} on {self.device}: "
                 f"{self.step_ms:.1f} ms (median, unprofiled); {profiled:.1f} ms of operators profiled",
                 "", "| kind of work | ms a step | share |", "| --- | ---: | ---: |"]
        lines += [f"| {kind} | {ms:.1f} | {ms / profiled:.0%} |" for kind, ms in self.kinds.items()]
        lines += ["", "| operator | ms a step | calls a step |", "| --- | ---: | ---: |"]
        lines += [f"| {name} | {ms:.2f} | {calls} |" for name, ms, calls in self.operators[:top]]
        return "\n".join(lines)


def kind_of(name: str, under_optimizer: bool) -> str:
    """The kind of work of the operator called ``name`` (``KINDS``); Adam's for any op called from its step."""
    if under_optimizer:
        return OPTIMIZER
    return next((kind for kind, words in KINDS if any(word in name for word in words)), "other")


def _under_optimizer(event) -> bool:
    parent = event
    while parent is not None:
        if parent.name.startswith("Optimizer.step#"):
            return True
        parent = parent.cpu_parent
    return False


def measure(model_name: str, device: str, train_set, batch_size: int, variant: Variant, steps: int = 5) -> Profile:
    """Profile ``steps`` training steps of ``model_name`` in ``variant`` on a batch of ``train_set``'s digits
    after ``WARM_UP_STEPS``; step times (ms) from as many unprofiled steps before them."""
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    if reason := variant.unsupported_on(device):
        raise ValueError(f"{variant} cannot run on {device}: {reason}")
    running = fast._Probe(model_name, device, train_set, batch_size).steps(variant, batch_size)
    for _ in range(variant.warm_up_steps(WARM_UP_STEPS)):
        next(running)
    step_ms = statistics.median(next(running) for _ in range(steps)) * 1e3
    on_gpu = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as profiled:
        for _ in range(steps):
            next(running)
        devices.synchronize(device)
    running.close()
    kinds, operators, calls = defaultdict(float), defaultdict(float), defaultdict(int)
    for event in profiled.events():
        us = event.self_device_time_total if on_gpu else event.self_cpu_time_total
        if us <= 0:
            continue
        kinds[kind_of(event.name, _under_optimizer(event))] += us / 1e3 / steps
        operators[event.name] += us / 1e3 / steps
        calls[event.name] += 1
    busiest = sorted(operators.items(), key=lambda item: -item[1])
    return Profile(model_name, device, variant, batch_size, step_ms,
                   dict(sorted(kinds.items(), key=lambda item: -item[1])),
                   [(name, ms, calls[name] // steps) for name, ms in busiest])
