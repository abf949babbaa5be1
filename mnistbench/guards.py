"""Failures that end one benchmark case but not the run: a batch that does not fit the GPU's memory.

What a device cannot run at all never becomes a case (``Variant.unsupported_on`` skips it with the reason);
an error from a mode the device supports, a ``torch.compile`` failure included, is a fault and fails its case.
"""
import contextlib
import gc

import pytest
import torch
import torch._dynamo


def free_accelerator_memory() -> None:
    """Release what a finished case holds: Dynamo's compiled code keeps its CUDA-graph pools and their
    outputs alive after the model is gone, and would count in the next case's peak memory."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def skip_unrunnable(case: str):
    """Turn an out-of-memory error inside the block into a pytest skip that names ``case`` and the reason,
    after releasing the memory the failure left behind."""
    reason = None
    try:
        yield
    except torch.OutOfMemoryError as error:
        reason = f"{case}: out of memory: {str(error).splitlines()[0]}"
    # Outside the except clause the exception and its frames are gone, so the memory can be released.
    if reason is not None:
        free_accelerator_memory()
        pytest.skip(reason)
