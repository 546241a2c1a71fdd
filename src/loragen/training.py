"""One training loop for generators and backbones: seeding, learning-rate schedule, loss EMA, progress, resumable
checkpoints guarded by a fingerprint of what is being trained.

A step function gets (step, generator) and returns the loss; the loop owns zero_grad / backward / clip / step. The
generator passed to the step function is seeded from (seed, step), so batch draws after a resume are the ones an
uninterrupted run would have made; the global RNG (e.g. a module's own noise) is saved with the state.

Stages: a fit in stages (pdiff: an autoencoder, then a latent denoiser) calls `train` once per stage on one state
file. A stage runs the global steps first_step .. first_step + total - 1 with its own optimiser and schedule, and keeps
the earlier stages' modules in its state (`keep`). On a resume, a stage the state has gone past only restores its
modules from it, and the stage the state belongs to continues.

Several processes (`accelerate launch`, process_group.py): every process runs the loop on its share of each step's
batch; gradients and the reported loss are averaged over the processes; only the main process shows progress and
writes states, which hold every process's RNG state, so a resume (with the same number of processes) continues as
the uninterrupted run would. One process, the default, runs exactly as without a launcher.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import nn

from loragen.checkpoint import load_state, read_meta, save_state
from loragen.errors import LoragenError
from loragen.lr import cosine
from loragen.process_group import process_group
from loragen.progress import progress_bar

SCHEDULES = ("cosine", "constant")


def train(name: str, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer, total: int,
          step_fn: Callable[[int, torch.Generator], torch.Tensor], *, keep: dict[str, nn.Module] | None = None,
          after_step: Callable[[], None] | None = None, first_step: int = 0,
          schedule: Literal["cosine", "constant"] = "cosine", state_path: Path | None = None,
          fingerprint: dict | None = None, checkpoint_every: int = 500, seed: int = 0, clip: float | None = 1.0,
          show: bool = True) -> dict:
    """Run `total` optimiser steps on `modules` (resuming from `state_path` when it holds a state of the same
    fingerprint); returns {"loss": EMA of the loss, "steps", "fit_s" (seconds of this stage over every call that ran
    it, the interrupted ones included up to their last saved state), "resumed_at" (steps of
    this stage done before this call)}. `keep`: modules saved in the state but not trained (a weight EMA, a finished
    stage); `after_step` runs after every optimiser step (e.g. the weight EMA's update). The caller removes the state
    file once it has saved the result, so a crash in between loses nothing."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; found {schedule!r}")
    fingerprint = json.loads(json.dumps(fingerprint or {}))
    saved, end = modules | (keep or {}), first_step + total
    pg = process_group()
    if pg.world > 1:  # each process its own global RNG (noise of its samples); a resume restores each one's state
        torch.manual_seed((seed * 1_000_003 + first_step) * 7919 + pg.rank)
    step, ema, spent = first_step, float("nan"), 0.0  # spent: this stage's seconds in earlier calls
    if state_path is not None and state_path.exists():
        meta = read_meta(state_path)
        if meta.get("fingerprint") != fingerprint:
            raise LoragenError(f"{state_path} belongs to another training run (other data or config); remove it or use another folder")
        if meta["step"] >= end:  # a later stage's state: this stage is finished and its weights are in the state
            load_state(state_path, saved, {})
            step = end
        elif meta["step"] >= first_step:  # this stage's state (an earlier stage's is ignored: this stage starts afresh)
            if meta.get("processes", 1) != pg.world:
                raise LoragenError(f"{state_path} was saved by a run of {meta.get('processes', 1)} processes; expected "
                                   f"the same number to resume it, found {pg.world}. Relaunch with that number, or "
                                   "remove the state to train afresh")
            try:
                extra, meta = load_state(state_path, saved, {"opt": optimizer})
                torch.set_rng_state(extra["rng" if pg.rank == 0 else f"rng.{pg.rank}"])
            except KeyError as e:
                raise LoragenError(f"{state_path} lacks {e} (written by an older loragen?); remove it to train afresh") from e
            step, ema, spent = meta["step"], meta.get("loss", float("nan")), meta.get("stage_s", 0.0)
    resumed_at = step - first_step
    sched = cosine(optimizer, total, resumed_at) if schedule == "cosine" else None
    params = [p for g in optimizer.param_groups for p in g["params"]]
    pg.broadcast([t for m in saved.values() for t in m.state_dict().values()])  # every process starts from the main's
    t0 = time.perf_counter()
    with progress_bar(show and pg.is_main) as bar, torch.enable_grad():  # also when called under no_grad (test-time training)
        job = bar.add_task(name, total=total, completed=resumed_at)
        while step < end:
            for m in modules.values():
                m.train()
            loss = step_fn(step, torch.Generator().manual_seed(seed * 1_000_003 + step))
            optimizer.zero_grad()
            loss.backward()
            if pg.world > 1:
                loss = _average_gradients(pg, params, loss)
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            if after_step is not None:
                after_step()
            if sched is not None:
                sched.step()
            step += 1
            ema = loss.item() if ema != ema else 0.98 * ema + 0.02 * loss.item()
            if step % 25 == 0 or step == end:
                bar.update(job, completed=step - first_step, description=f"{name} loss {ema:.4f}")
            if state_path is not None and step % checkpoint_every == 0 and step < end:
                rngs = pg.gather(torch.get_rng_state())
                if pg.is_main:
                    save_state(state_path, saved, {"opt": optimizer},
                               {"rng": rngs[0]} | {f"rng.{r}": x for r, x in enumerate(rngs) if r > 0},
                               {"step": step, "fingerprint": fingerprint, "loss": ema,
                                "stage_s": spent + time.perf_counter() - t0} | ({"processes": pg.world} if pg.world > 1 else {}))
    for m in modules.values():
        m.eval()
    return {"loss": ema, "steps": total, "fit_s": spent + time.perf_counter() - t0, "resumed_at": resumed_at}


def _average_gradients(pg, params: list[nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
    """Average the gradients and the loss over the processes (one all-reduce); a parameter no process gave a gradient
    keeps none (AdamW skips it, as in one process). Returns the averaged loss."""
    has = torch.tensor([float(p.grad is not None) for p in params])
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    mean_loss = loss.detach().reshape(1).clone()
    pg.average(grads + [has, mean_loss])
    for p, g, h in zip(params, grads, has.tolist()):
        p.grad = g if h > 0 else None
    return mean_loss[0]
