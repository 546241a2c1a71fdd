"""One training loop for generators: seeding, cosine learning rate, loss EMA, progress, resumable checkpoints guarded
by a fingerprint of what is being trained.

A step function gets (step, generator) and returns the loss; the loop owns zero_grad / backward / clip / step. The
generator passed to the step function is seeded from (seed, step), so batch draws after a resume are the ones an
uninterrupted run would have made.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from loragen.checkpoint import load_state, read_meta, save_state
from loragen.errors import LoragenError
from loragen.lr import cosine
from loragen.progress import progress_bar


def train(name: str, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer, total: int,
          step_fn: Callable[[int, torch.Generator], torch.Tensor], *, state_path: Path | None = None,
          fingerprint: dict | None = None, checkpoint_every: int = 500, seed: int = 0, clip: float | None = 1.0,
          show: bool = True) -> dict:
    """Run `total` optimiser steps (resuming from `state_path` when it holds a state of the same fingerprint);
    returns {"loss": EMA of the loss, "steps", "fit_s" (this call's seconds), "resumed_at"}. The caller removes the state
    file once it has saved the result, so a crash in between loses nothing."""
    fingerprint = json.loads(json.dumps(fingerprint or {}))
    step = 0
    if state_path is not None and state_path.exists():
        if read_meta(state_path)["fingerprint"] != fingerprint:
            raise LoragenError(f"{state_path} belongs to another training run (other data or config); remove it or use another folder")
        extra, meta = load_state(state_path, modules, {"opt": optimizer})
        step = meta["step"]
        torch.set_rng_state(extra["rng"])
    resumed_at = step
    sched = cosine(optimizer, total, step)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    ema, t0 = float("nan"), time.perf_counter()
    with progress_bar(show) as bar:
        job = bar.add_task(name, total=total, completed=step)
        while step < total:
            for m in modules.values():
                m.train()
            loss = step_fn(step, torch.Generator().manual_seed(seed * 1_000_003 + step))
            optimizer.zero_grad()
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            sched.step()
            step += 1
            ema = loss.item() if ema != ema else 0.98 * ema + 0.02 * loss.item()
            if step % 25 == 0 or step == total:
                bar.update(job, completed=step, description=f"{name} loss {ema:.4f}")
            if state_path is not None and step % checkpoint_every == 0 and step < total:
                save_state(state_path, modules, {"opt": optimizer}, {"rng": torch.get_rng_state()},
                           {"step": step, "fingerprint": fingerprint})
    for m in modules.values():
        m.eval()
    return {"loss": ema, "steps": total, "fit_s": time.perf_counter() - t0, "resumed_at": resumed_at}
