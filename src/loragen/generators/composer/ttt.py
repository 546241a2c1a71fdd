"""Per-instance test-time training (TTT), the baseline Composer is measured against: a fresh LoRA of Composer's rank
per condition, fitted for a few steps on that condition's training images with Composer's own loop (the `static`
generator on one label). Shapes: B batch, C distinct classes.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch
from torch import nn

from loragen.generators.composer.generator import ComposerConfig, ComposerGenerator, sample_grouped


class TestTimeTraining:
    """Per-instance TTT: a fresh LoRA of the same rank per condition, fitted for a few steps on that class's images."""

    def __init__(self, suite, backbone: nn.Module, cfg: ComposerConfig, steps: int, lr: float):
        self.suite, self.backbone = suite, backbone
        self.cfg = replace(cfg, generator="static", steps=steps, lr=lr, context_share=1.0, checkpoint_every=steps)
        self.fits: dict[int, ComposerGenerator] = {}
        self.fit_s: dict[int, float] = {}

    def fit(self, label: int) -> ComposerGenerator:
        t0 = time.perf_counter()
        self.fits[label] = ComposerGenerator.fit(self.suite, self.cfg, backbone=self.backbone, show=False, labels=[label])
        self.fit_s[label] = time.perf_counter() - t0
        return self.fits[label]

    @torch.no_grad()
    def sample(self, labels_B: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
        """Each sample under its class's TTT adapter (fitted on first use), grouped by class in one batch."""
        conds = self.suite.label_conditions()
        classes, group_B = labels_B.unique(return_inverse=True)
        for y in classes.tolist():
            if y not in self.fits:
                self.fit(y)
        per_class = [self.fits[y].updates(self.fits[y].encode([conds[y]]))[0] for y in classes.tolist()]
        tensors_C = {k: torch.cat([t[k] for t in per_class]) for k in per_class[0]}
        return sample_grouped(self.suite, self.backbone, self.fits[classes[0].item()].layout, tensors_C, group_B,
                              labels_B, steps, seed)
