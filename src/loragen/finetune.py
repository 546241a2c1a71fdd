"""LoRA fine-tuning of one task with PEFT, keeping the last N checkpoints with their validation accuracy."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from loragen.adapters.adapter import Adapter
from loragen.adapters.layout import LoraLayout
from loragen.errors import ConfigError
from loragen.suites.suite import Suite, TaskData


@dataclass
class FinetuneConfig:
    rank: int = 4  # LoRA rank r of every target module
    alpha: float = 8.0  # LoRA alpha; update scale alpha / r
    steps: int = 600  # optimiser steps per task
    batch_size: int = 64  # examples per step
    lr: float = 5e-3  # AdamW learning rate (constant: the last checkpoints explore one basin, as in p-diff)
    weight_decay: float = 0.0  # AdamW weight decay on the LoRA matrices
    keep_last: int = 10  # N: checkpoints kept per task, the last N saves
    save_every: int = 10  # steps between saved checkpoints; spacing trades diversity against quality
    init_seed: int = 0  # seed of LoRA A's init, the same for every task so that all adapters share one frame
    data_seed: int = 0  # seed of the batch order

    def __post_init__(self):
        if self.keep_last < 1 or self.save_every < 1 or self.rank < 1:
            raise ConfigError(f"keep_last, save_every and rank must be >= 1; found {self.keep_last}, {self.save_every}, {self.rank}")
        if (self.keep_last - 1) * self.save_every >= self.steps:
            raise ConfigError(
                f"keeping {self.keep_last} checkpoints every {self.save_every} steps needs more than "
                f"{(self.keep_last - 1) * self.save_every} steps; found steps={self.steps}"
            )


@dataclass(frozen=True)
class LrSchedule:
    """A fine-tune's lr per optimiser step as a multiple of FinetuneConfig.lr: a linear ramp up to `peak` over `warmup`
    steps (step s at peak · s / (warmup + 1)), then a linear fall back to 1 over `decay` steps (0: it stays at `peak`).
    The default is the constant lr. A warm start can afford a high lr at first, since its adapter starts close; the
    ramp keeps Adam's first steps, which move every weight by about the full lr whatever its gradient, from throwing
    the start away, and the fall keeps the high lr from shaking a run out of the basin it has reached."""

    peak: float = 1.0
    warmup: int = 0
    decay: int = 0

    def __post_init__(self):
        if self.peak <= 0 or self.warmup < 0 or self.decay < 0:
            raise ConfigError(f"an lr schedule needs peak > 0 and warmup, decay >= 0 steps; found peak={self.peak}, "
                              f"warmup={self.warmup}, decay={self.decay}")

    def __call__(self, done: int) -> float:
        """The multiple of the lr for the optimiser step after `done` steps (LambdaLR's argument)."""
        if done < self.warmup:
            return self.peak * (done + 1) / (self.warmup + 1)
        if self.decay == 0:
            return self.peak
        return self.peak + (1.0 - self.peak) * min(1.0, (done - self.warmup) / self.decay)


def peft_model(base: nn.Module, layout: LoraLayout, init_seed: int):
    """A PEFT-wrapped copy of `base` with fresh LoRA on the layout's modules (A from `init_seed`, B = 0)."""
    from peft import LoraConfig, get_peft_model

    ranks = {m.rank for m in layout.modules}
    alphas = {m.alpha for m in layout.modules}
    if len(ranks) != 1 or len(alphas) != 1:
        raise ConfigError(f"fine-tuning needs one rank and alpha for all modules; found ranks {ranks}, alphas {alphas}")
    config = LoraConfig(r=ranks.pop(), lora_alpha=alphas.pop(), lora_dropout=0.0, target_modules=layout.target_names,
                        modules_to_save=[f.name for f in layout.full] or None)
    torch.manual_seed(init_seed)
    return get_peft_model(copy.deepcopy(base), config)


def lora_tensors(model, layout: LoraLayout) -> dict[str, torch.Tensor]:
    """Canonical adapter tensors out of a PEFT model."""
    named = dict(model.base_model.model.named_modules())
    out = {}
    for m in layout.modules:
        mod = named[m.name]
        out[f"{m.name}.lora_A"] = mod.lora_A["default"].weight.detach().clone()
        out[f"{m.name}.lora_B"] = mod.lora_B["default"].weight.detach().clone()
    for f in layout.full:  # PEFT trains a copy of the module inside ModulesToSaveWrapper
        trained = named[f.name].modules_to_save["default"]
        out[f"{f.name}.weight"] = trained.weight.detach().clone()
        if f.bias:
            out[f"{f.name}.bias"] = trained.bias.detach().clone()
    return out


def _load_adapter(model, layout: LoraLayout, adapter: Adapter) -> None:
    """Start a PEFT model from an adapter's tensors instead of the fresh init (warm start)."""
    if adapter.layout != layout:
        raise ConfigError(f"a warm start needs an adapter of the fine-tuning layout: {layout.describe_difference(adapter.layout)}")
    named = dict(model.base_model.model.named_modules())
    with torch.no_grad():
        for m in layout.modules:
            named[m.name].lora_A["default"].weight.copy_(adapter.tensors[f"{m.name}.lora_A"])
            named[m.name].lora_B["default"].weight.copy_(adapter.tensors[f"{m.name}.lora_B"])
        for f in layout.full:
            trained = named[f.name].modules_to_save["default"]
            trained.weight.copy_(adapter.tensors[f"{f.name}.weight"])
            if f.bias:
                trained.bias.copy_(adapter.tensors[f"{f.name}.bias"])


def train_lora(suite: Suite, base: nn.Module, layout: LoraLayout, train: TaskData, cfg: FinetuneConfig,
               on_step: Callable[[int, nn.Module, float], bool | None], init: Adapter | None = None,
               schedule: LrSchedule = LrSchedule()) -> None:
    """The LoRA fine-tuning loop on `train` (AdamW, seeded batch order); `on_step(step, model, loss)` runs after every
    step (step 0: before the first, for curves) and ends the loop early when it returns True. `init` starts from an
    adapter instead of LoRA's init; `schedule` sets the lr per step (default: constant, as the zoo fine-tunes)."""
    model = peft_model(base, layout, cfg.init_seed)
    if init is not None:
        _load_adapter(model, layout, init)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    g = torch.Generator().manual_seed(cfg.data_seed)
    order, cursor = torch.randperm(len(train.y), generator=g), 0
    if on_step(0, model, float("nan")):
        return
    for step in range(1, cfg.steps + 1):
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(train.y), generator=g), 0
        idx = order[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        model.train()
        loss = F.cross_entropy(suite.forward(model, train.x[idx]), train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        lr.step()
        if on_step(step, model, loss.item()):
            return


def finetune(suite: Suite, base: nn.Module, layout: LoraLayout, task: str, cfg: FinetuneConfig) -> tuple[list[Adapter], float]:
    """Fine-tune LoRA on a task's training split; returns the last `keep_last` checkpoints and the wall time (s)."""
    t0 = time.perf_counter()
    val = suite.data(task, "val")
    first_kept = cfg.steps - (cfg.keep_last - 1) * cfg.save_every
    kept: list[Adapter] = []

    def keep(step: int, model, loss: float) -> None:
        if step >= first_kept and (step - first_kept) % cfg.save_every == 0:
            meta = {"task": task, "step": step, "val_acc": suite.accuracy(model, val), "train_loss": loss}
            kept.append(Adapter(layout, lora_tensors(model, layout), meta))

    train_lora(suite, base, layout, suite.data(task, "train"), cfg, keep)
    return kept, time.perf_counter() - t0


def validation_curve(suite: Suite, base: nn.Module, layout: LoraLayout, task: str, cfg: FinetuneConfig,
                     init: Adapter | None = None, every: int = 10, stop_at: float | None = None,
                     schedule: LrSchedule = LrSchedule()) -> list[tuple[int, float, float]]:
    """(step, validation accuracy, seconds since start) every `every` steps of fine-tuning, from LoRA's init or from
    `init` (warm start, usually with an lr `schedule` of its own: `train_lora`); with `stop_at`, only until the first check at
    or above that accuracy. Evaluation time is not counted in the seconds."""
    val, curve = suite.data(task, "val"), []
    clock = {"t": time.perf_counter(), "eval": 0.0}

    def record(step: int, model, loss: float) -> bool:
        if step % every == 0:
            t = time.perf_counter()
            curve.append((step, suite.accuracy(model, val), t - clock["t"] - clock["eval"]))
            clock["eval"] += time.perf_counter() - t
            return stop_at is not None and curve[-1][1] >= stop_at
        return False

    train_lora(suite, base, layout, suite.data(task, "train"), cfg, record, init, schedule)
    return curve


def multitask(suite: Suite, base: nn.Module, layout: LoraLayout, tasks: list[str], cfg: FinetuneConfig) -> Adapter:
    """One LoRA trained on the pooled training data of `tasks` (Text-to-LoRA's multi-task baseline); the checkpoint
    with the best pooled validation accuracy is kept (checked every `save_every` steps)."""
    train = TaskData(torch.cat([suite.data(t, "train").x for t in tasks]), torch.cat([suite.data(t, "train").y for t in tasks]))
    val = TaskData(torch.cat([suite.data(t, "val").x for t in tasks]), torch.cat([suite.data(t, "val").y for t in tasks]))
    best: dict = {"acc": -1.0}

    def keep(step: int, model, loss: float) -> None:
        if step > 0 and step % cfg.save_every == 0:
            acc = suite.accuracy(model, val)
            if acc > best["acc"]:
                best.update(acc=acc, tensors=lora_tensors(model, layout), step=step)

    train_lora(suite, base, layout, train, cfg, keep)
    return Adapter(layout, best["tensors"], {"task": "multitask", "step": best["step"], "val_acc": best["acc"], "tasks": len(tasks)})
