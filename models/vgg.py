"""VGGNet: the small VGG-style network of the VGG article (two conv blocks, two linear layers).

Module names and order follow the article's ``VGGNet`` exactly (``features``, ``classifier``),
so a ``state_dict`` saved by the article's script loads here with ``strict=True``.
"""
import torch
from torch import nn


class VGGNet(nn.Module):
    """Two blocks of two 3x3 convolutions (32 then 64 channels), each closed by a 2x2 max pool,
    then a 3136-128-10 classifier with dropout; 467,818 parameters for 10 classes."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * 7 * 7, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # flatten rather than the article's .view: same values, and it also accepts channels_last.
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg(num_classes: int = 10) -> VGGNet:
    """Build the VGG article's network for 1x28x28 inputs."""
    return VGGNet(num_classes)
