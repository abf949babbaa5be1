"""Test-set accuracy and loss: what the articles never measured, and what makes a speed honest."""
import torch
import torch.nn.functional as F
from torch import nn

from .pipelines import normalized_images
from .variants import Variant


@torch.inference_mode()
def evaluate(model: nn.Module, dataset, device: str, *, variant: Variant = Variant(), batch_size: int = 1000,
             mean: float = 0.5, std: float = 0.5) -> tuple[float, float]:
    """Accuracy (0..1) and mean cross-entropy of ``model`` over the whole of ``dataset``, in eval mode."""
    was_training = model.training
    model.eval()
    images = normalized_images(dataset.data, mean, std)
    correct, total_loss = 0, 0.0
    for start in range(0, len(images), batch_size):
        batch = variant.prepare_images(images[start : start + batch_size].to(device))
        labels = dataset.targets[start : start + batch_size].to(device)
        with variant.autocast(device):
            logits = model(batch).float()
        total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
    model.train(was_training)
    return correct / len(images), total_loss / len(images)
