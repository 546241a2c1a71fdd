"""Learning-rate schedules of the training loop (loragen.training)."""

from __future__ import annotations

import math

import torch


def cosine(opt: torch.optim.Optimizer, total: int, done: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay to 0 over `total` steps, positioned after `done` steps (resume)."""
    for group in opt.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)),
                                             last_epoch=done - 1)
