"""Model files: saved atomically, loaded with one clear error when they are not what they claim to be.

The file is a plain ``state_dict`` with the articles' module names, so the articles' own model classes
load it with ``strict=True``, and files saved by the articles' scripts load here, as do those saved from a model
wrapped in ``DistributedDataParallel`` or ``DataParallel`` (their keys start with ``module.``).
"""
import os
from pathlib import Path

import torch
from torch import nn

import models

from . import atomic


class CheckpointError(RuntimeError):
    """A model file is missing, unreadable, or holds weights of another network."""


def save(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model``'s ``state_dict`` as CPU tensors (so the articles' CPU script loads a model trained on a
    GPU without ``map_location``) to ``path`` through a temporary file and a rename, so that an
    interruption leaves either the old file or the new one, never half of one."""
    with atomic.replacing(path) as partial:
        torch.save({name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}, partial)


def load(model_name: str, path: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """A ``model_name`` network with the weights stored in ``path``, on ``device``, in eval mode."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a model file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        state_dict = torch.load(path, map_location=device, weights_only=True)
    # Whatever the bytes, torch.load fails in its own way: UnpicklingError, BadZipFile, EOFError, an
    # OSError for a cut-short archive, a KeyError for text...; each means the same thing here.
    except Exception as error:
        if "Unsupported global" in str(error):  # torch.save(model): a class pickled, which loading would run
            raise CheckpointError(f"{path}: holds pickled objects beyond tensors (a whole model saved with "
                                  f"torch.save(model)?), which are not loaded: save model.state_dict() instead") from None
        raise CheckpointError(f"{path}: not a PyTorch state_dict file ({type(error).__name__} while reading it)") from None
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path}: holds a {type(state_dict).__name__}, not a state_dict")
    model = models.build(model_name).to(device)
    torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state_dict, "module.")  # saved from a DDP model
    expected, found = set(model.state_dict()), set(state_dict)
    if wrapped := [key for key, value in state_dict.items() if isinstance(value, dict) and set(value) == expected]:
        raise CheckpointError(f"{path}: a checkpoint holding the {model_name} weights under {wrapped[0]!r} beside "
                              f"{len(state_dict) - 1} other entries, not a state_dict: save that entry alone")
    if expected != found:
        missing, unexpected = sorted(expected - found), sorted(found - expected)
        other = [name for name in models.names() if set(models.build(name).state_dict()) == found]
        keys = [f"{len(names)} {kind} keys such as {names[:2]}" for kind, names in (("missing", missing),
                                                                                   ("unexpected", unexpected)) if names]
        raise CheckpointError(f"{path}: not {model_name} weights ({', '.join(keys)})"
                              + (f": they are {other[0]}'s, --model {other[0]}" if other else ""))
    if bad := [name for name, tensor in state_dict.items()
               if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()]:
        # a run that diverged saved them: evaluated, they would read as a chance accuracy and a loss of nan
        raise CheckpointError(f"{path}: {len(bad)} tensors hold NaN or infinite values, such as {bad[:2]}: the "
                              f"training that saved them diverged")
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:  # same names, other shapes
        raise CheckpointError(f"{path}: not {model_name} weights ({str(error).splitlines()[-1].strip()})") from None
    return model.eval()
