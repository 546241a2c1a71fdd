"""The control for Composer: one LoRA shared by every input (A, B learned directly, the condition ignored).

Trained with the same loop, steps, batches and noise as the meta-generator, it shows how much of a gain comes from the
extra training alone; per-instance test-time training is this module fitted on one condition's data.
Shapes: C conditions, E condition size, M target matrices, r rank, o / i rows / columns.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class StaticLoRA(nn.Module):
    """`forward(cond_CE)` -> the same A (C, M, r, i) and B (C, M, o, r) for every condition."""

    def __init__(self, blocks: int, rows: int, cols: int, rank: int):
        super().__init__()
        bound = 1.0 / math.sqrt(cols)  # PEFT's LoRA init: A ~ U(±1/√i) (kaiming_uniform, a = √5), B = 0
        self.a = nn.Parameter(torch.empty(blocks, rank, cols).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.zeros(blocks, rows, rank))

    def forward(self, cond_CE: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        C = len(cond_CE)
        return self.a.expand(C, -1, -1, -1), self.b.expand(C, -1, -1, -1)
