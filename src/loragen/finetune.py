"""LoRA fine-tuning of one task with PEFT, keeping the last N checkpoints with their validation accuracy."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from loragen.adapter import Adapter
from loragen.errors import ConfigError
from loragen.layout import LoraLayout
from loragen.suites.suite import Suite


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


def finetune(suite: Suite, base: nn.Module, layout: LoraLayout, task: str, cfg: FinetuneConfig) -> tuple[list[Adapter], float]:
    """Fine-tune LoRA on a task's training split; returns the last `keep_last` checkpoints and the wall time (s)."""
    t0 = time.perf_counter()
    train, val = suite.data(task, "train"), suite.data(task, "val")
    model = peft_model(base, layout, cfg.init_seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.data_seed)
    first_kept = cfg.steps - (cfg.keep_last - 1) * cfg.save_every
    kept: list[Adapter] = []
    order = torch.randperm(len(train.y), generator=g)
    cursor = 0
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
        if step >= first_kept and (step - first_kept) % cfg.save_every == 0:
            val_acc = suite.accuracy(model, val)
            meta = {"task": task, "step": step, "val_acc": val_acc, "train_loss": loss.item()}
            kept.append(Adapter(layout, lora_tensors(model, layout), meta))
    return kept, time.perf_counter() - t0
