"""Metrics of adapters: task accuracy with the adapter merged, and novelty (distance to the nearest zoo checkpoint)."""

from __future__ import annotations

import torch
from torch import nn

from loragen.adapters.adapter import Adapter
from loragen.adapters.apply import merged
from loragen.adapters.layout import LoraLayout
from loragen.suites.suite import Suite, TaskData


def accuracy(suite: Suite, model: nn.Module, layout: LoraLayout, vector: torch.Tensor | None, data: TaskData) -> float:
    """Accuracy (%) of the base model with the adapter vector merged (None: the base model itself)."""
    if vector is None:
        return suite.accuracy(model, data)
    with merged(model, Adapter.from_vector(layout, vector)):
        return suite.accuracy(model, data)


def novelty(vectors_NP: torch.Tensor, zoo_MP: torch.Tensor) -> torch.Tensor:
    """(N,) L2 distance from each vector to its nearest zoo checkpoint."""
    return torch.cdist(vectors_NP, zoo_MP).min(1).values


def noise_at_novelty(anchor_P: torch.Tensor, zoo_MP: torch.Tensor, target: float, n: int, seed: int = 0) -> torch.Tensor:
    """(n, P) copies of a zoo checkpoint plus Gaussian noise, each scaled (by bisection) so that its distance to the
    nearest zoo checkpoint equals `target`: the memorisation control of Zeng et al. 2025 (arXiv 2506.07998)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        direction = torch.randn(anchor_P.shape, generator=g)
        direction /= direction.norm()
        lo, hi = 0.0, 4.0 * target + 1e-12
        while novelty((anchor_P + hi * direction)[None], zoo_MP).item() < target:
            hi *= 2
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if novelty((anchor_P + mid * direction)[None], zoo_MP).item() < target else (lo, mid)
        out.append(anchor_P + 0.5 * (lo + hi) * direction)
    return torch.stack(out)
