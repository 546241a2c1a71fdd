"""Statistics of per-task results: bootstrap confidence intervals of a mean."""

from __future__ import annotations

import torch


def bootstrap_ci(values: list[float], level: float = 0.95, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over `values` (tasks resampled with replacement)."""
    if not values:
        raise ValueError("a confidence interval needs at least one value; found none")
    v = torch.tensor(values, dtype=torch.float64)
    idx = torch.randint(len(v), (n, len(v)), generator=torch.Generator().manual_seed(seed))
    means = v[idx].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return lo, hi
