"""The per-class control for Composer: one LoRA per class, an embedding table of (A, B) pairs indexed by the label.

It is what a meta-generator could at best learn for a closed set of classes, without generating anything: trained
with the same loop, steps, batches and noise as Composer and the one-LoRA `static` control, it separates the gain of
per-class updates from the gain of generating them. It needs the one-hot `class` encoder: the label is read off it.
Shapes: C conditions, K classes, M target matrices, r rank, o / i rows / columns.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from loragen.errors import ConditionError


class PerClassLoRA(nn.Module):
    """`forward(cond_CK)` (one-hot class rows) -> its class's A (C, M, r, i) and B (C, M, o, r)."""

    def __init__(self, classes: int, blocks: int, rows: int, cols: int, rank: int):
        super().__init__()
        bound = 1.0 / math.sqrt(cols)  # PEFT's LoRA init per class: A ~ U(±1/√i) (kaiming_uniform, a = √5), B = 0
        self.a = nn.Parameter(torch.empty(classes, blocks, rank, cols).uniform_(-bound, bound))  # (K, M, r, i)
        self.b = nn.Parameter(torch.zeros(classes, blocks, rows, rank))  # (K, M, o, r): W' = W at the start

    def forward(self, cond_CK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        K = len(self.a)
        binary = cond_CK.ndim == 2 and cond_CK.shape[1] == K and bool(((cond_CK == 0) | (cond_CK == 1)).all())
        if not binary or bool((cond_CK.sum(1) != 1).any()):
            raise ConditionError(f"the per-class LoRA reads the label off one-hot class conditions (C, {K}); found a "
                                 f"{tuple(cond_CK.shape)} tensor that is not one")
        label_C = cond_CK.argmax(1)
        return self.a[label_C], self.b[label_C]
