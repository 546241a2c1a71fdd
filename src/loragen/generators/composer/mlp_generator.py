"""The ablation of Composer's Transformer: an MLP from the condition straight to every A and B (Composer Table:
Transformer vs MLP). It does not see the pretrained weights.
Shapes: C conditions, E condition size, H hidden width, M target matrices, r rank, o / i rows / columns.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MLPGenerator(nn.Module):
    """`forward(cond_CE)` -> A (C, M, r, i), B (C, M, o, r)."""

    def __init__(self, blocks: int, rows: int, cols: int, cond_dim: int, rank: int, hidden: int = 256):
        super().__init__()
        self.shape = (blocks, rows, cols, rank)
        self.body = nn.Sequential(nn.Linear(cond_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.LayerNorm(hidden))
        self.head_a = nn.Linear(hidden, blocks * rank * cols)
        self.head_b = nn.Linear(hidden, blocks * rows * rank)
        nn.init.normal_(self.head_a.weight, std=1.0 / math.sqrt(3 * cols * hidden))  # A at PEFT's LoRA init scale
        nn.init.zeros_(self.head_a.bias)
        nn.init.zeros_(self.head_b.weight)  # B = 0: W' = W at the start
        nn.init.zeros_(self.head_b.bias)

    def forward(self, cond_CE: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        M, o, i, r = self.shape
        h = self.body(cond_CE)  # (C, H)
        return self.head_a(h).view(-1, M, r, i), self.head_b(h).view(-1, M, o, r)
