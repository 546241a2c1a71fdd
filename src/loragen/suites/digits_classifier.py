"""The digits-gen metric network: a small CNN classifier on 8×8 digits whose penultimate features define digits-FD.

Shapes: B batch, S = 8 image side, F = 64 feature size, C = 10 classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DigitsClassifier(nn.Module):
    def __init__(self, features: int = 64, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 4 * 4, features)
        self.head = nn.Linear(features, num_classes)

    def features(self, x_B1SS: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> (B, F), the space digits-FD is measured in."""
        h = F.gelu(self.conv1(x_B1SS))  # (B, 32, 8, 8)
        h = F.avg_pool2d(F.gelu(self.conv2(h)), 2)  # (B, 64, 4, 4)
        return F.gelu(self.fc(h.flatten(1)))  # (B, F)

    def forward(self, x_B1SS: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x_B1SS))  # (B, C) logits
