"""Failures that end one benchmark case but not the run: GPU out-of-memory and torch.compile errors."""
import contextlib
import gc

import pytest
import torch
import torch._dynamo.exc


def free_accelerator_memory() -> None:
    """Release what a finished case holds: Dynamo's compiled code keeps its CUDA-graph pools and their
    outputs alive after the model is gone, and would count in the next case's peak memory."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def skip_unrunnable(case: str):
    """Turn an out-of-memory error or a ``torch.compile`` failure inside the block into a pytest skip
    that names ``case`` and the reason, after releasing the memory the failure left behind."""
    reason = None
    try:
        yield
    except torch.OutOfMemoryError as error:
        reason = f"{case}: out of memory: {str(error).splitlines()[0]}"
    except torch._dynamo.exc.TorchDynamoException as error:
        reason = f"{case}: torch.compile failed: {type(error).__name__}: {str(error).strip().splitlines()[0]}"
    # Outside the except clauses the exception and its frames are gone, so the memory can be released.
    if reason is not None:
        free_accelerator_memory()
        pytest.skip(reason)
