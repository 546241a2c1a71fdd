"""Normalisation of adapter vectors before the autoencoder (Cond P-Diff §3.2, "task normalization").

Statistics are one mean and one std per matrix segment (each LoRA A and B), because A (near its init) and B (from
zero) live on very different scales. Modes:
  task   — z-score per task and per segment (the paper's choice). A new condition has no statistics of its own, so
           the generator samples them: `stat_features` (the segment means and log-stds, 2S numbers) are appended to the
           latent and diffused with it, and `denormalize` takes them back. The paper does not say how it
           de-normalises for a condition; this makes seen and unseen conditions go through one path.
  global — z-score per segment over the whole zoo (the paper's "batch norm." ablation, without task statistics).
  none   — identity.
Shapes: M vectors, P parameters, S segments, T tasks, F = 2S statistic features (0 unless mode is task).
"""

from __future__ import annotations

from typing import Literal

import torch

Mode = Literal["task", "global", "none"]
MODES = ("task", "global", "none")


class Normalizer:
    def __init__(self, mode: Mode, segment_ids_P: torch.Tensor, n_tasks: int):
        if mode not in MODES:
            raise ValueError(f"normalization must be one of {MODES}; found {mode!r}")
        self.mode, self.seg = mode, segment_ids_P
        self.n_seg = int(segment_ids_P.max()) + 1
        self.mean_TS = torch.zeros(n_tasks, self.n_seg)
        self.std_TS = torch.ones(n_tasks, self.n_seg)

    @property
    def n_features(self) -> int:
        return 2 * self.n_seg if self.mode == "task" else 0  # F

    def _segment_stats(self, x_MP: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cnt = torch.bincount(self.seg, minlength=self.n_seg).float() * x_MP.shape[0]
        s1 = torch.zeros(self.n_seg).index_add_(0, self.seg, x_MP.sum(0))
        s2 = torch.zeros(self.n_seg).index_add_(0, self.seg, (x_MP**2).sum(0))
        mean = s1 / cnt
        std = (s2 / cnt - mean**2).clamp_min(0).sqrt().clamp_min(1e-8)
        return mean, std

    def fit(self, x_MP: torch.Tensor, task_M: torch.Tensor) -> "Normalizer":
        if self.mode == "global":
            mean, std = self._segment_stats(x_MP)
            self.mean_TS[:], self.std_TS[:] = mean, std
        elif self.mode == "task":
            for t in range(self.mean_TS.shape[0]):
                self.mean_TS[t], self.std_TS[t] = self._segment_stats(x_MP[task_M == t])
        return self

    def normalize(self, x_MP: torch.Tensor, task_M: torch.Tensor) -> torch.Tensor:
        return (x_MP - self.mean_TS[task_M][:, self.seg]) / self.std_TS[task_M][:, self.seg]

    def stat_features(self, task_M: torch.Tensor) -> torch.Tensor:
        """(M, F): each row's task statistics as [segment means, log segment stds]; empty unless mode is task."""
        if self.mode != "task":
            return torch.zeros(len(task_M), 0)
        return torch.cat([self.mean_TS[task_M], self.std_TS[task_M].log()], 1)

    def denormalize(self, z_MP: torch.Tensor, features_MF: torch.Tensor) -> torch.Tensor:
        """Undo normalisation; in task mode with the (generated) statistic features, else with the fitted ones."""
        if self.mode == "task":
            mean_MS, std_MS = features_MF[:, : self.n_seg], features_MF[:, self.n_seg :].exp()
        else:
            mean_MS, std_MS = self.mean_TS[:1].expand(len(z_MP), -1), self.std_TS[:1].expand(len(z_MP), -1)
        return z_MP * std_MS[:, self.seg] + mean_MS[:, self.seg]

    def state(self) -> dict[str, torch.Tensor]:
        return {"mean_TS": self.mean_TS, "std_TS": self.std_TS}

    def load_state(self, s: dict[str, torch.Tensor]) -> None:
        self.mean_TS, self.std_TS = s["mean_TS"].clone(), s["std_TS"].clone()
