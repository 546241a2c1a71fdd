"""Context-aware batches (Composer §3, "Context-Aware Training Strategy"): a share α (`context_share`) of each batch
comes from one class, the rest from the other classes.

α·b samples of one class teach the generator to adapt the same way to similar inputs (consistency). The (1 − α)·b
samples of other classes keep its updates apart (diversity). α = 0 is a plain uniform batch; α = 1 is one class only.
Shapes: N pool size, b batch size.
"""

from __future__ import annotations

import torch

from loragen.errors import ConfigError


def context_batch(labels_N: torch.Tensor, batch_size: int, context_share: float, generator: torch.Generator) -> torch.Tensor:
    """(b,) indices into the pool: round(α·b) of one random class, the rest drawn from the other classes."""
    if not 0.0 <= context_share <= 1.0:
        raise ConfigError(f"context_share must lie in [0, 1]; found {context_share}")
    same = round(context_share * batch_size)
    if same == 0:
        return torch.randint(0, len(labels_N), (batch_size,), generator=generator)
    classes = labels_N.unique()
    anchor = classes[torch.randint(0, len(classes), (1,), generator=generator)]
    pools = (labels_N == anchor).nonzero().squeeze(1), (labels_N != anchor).nonzero().squeeze(1)
    if same < batch_size and len(pools[1]) == 0:
        raise ConfigError(f"context_share = {context_share} needs samples of other classes; the pool holds one class only")
    picks = [pool[torch.randint(0, len(pool), (k,), generator=generator)]
             for pool, k in zip(pools, (same, batch_size - same)) if k > 0]
    return torch.cat(picks)
