"""Suite `digits-domains`: one task per image domain of scikit-learn digits, made by continuous transforms.

The base model is a small MLP classifier pretrained on canonical digits (upsampled to 16×16). A domain rotates the
digits by an angle (degrees) and thickens or thins their strokes by a continuous amount (grey-scale morphology,
interpolated between whole dilation/erosion steps). Tasks sit on a grid of angle × thickness; about 20% never enter the
zoo: interior grid points (interpolation) and points outside the grid (extrapolation). A task's condition is K exemplar
images from its training split.

Shapes: N images, H = W = 16 pixels, C = 10 classes.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from loragen.conditions import Condition
from loragen.suites.suite import Suite, Task, TaskData, rng

SIZE = 16  # H = W after upsampling the 8×8 digits
ANGLES = (-75.0, -50.0, -25.0, 0.0, 25.0, 50.0, 75.0)  # grid axis 1: rotation in degrees
THICKNESS = (-0.5, 0.0, 0.5, 1.0)  # grid axis 2: <0 thins (erosion), >0 thickens (dilation); 1.0 = one 3×3 step
HELD_OUT_INTERIOR = ((-50.0, 0.0), (0.0, 0.5), (25.0, 0.0), (50.0, 0.5))  # inside the grid: interpolation
HELD_OUT_OUTSIDE = ((100.0, 0.25), (-25.0, 1.5))  # outside the grid: extrapolation


class DigitsMLP(nn.Module):
    """256 → 128 → 64 → 10 MLP; LoRA goes on fc1, fc2 and the head fc3."""

    def __init__(self, hidden: tuple[int, int] = (128, 64)):
        super().__init__()
        self.fc1 = nn.Linear(SIZE * SIZE, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], 10)

    def features(self, x_NHW: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc1(x_NHW.flatten(1)))  # (N, 128)
        return F.gelu(self.fc2(h))  # (N, 64)

    def forward(self, x_NHW: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.features(x_NHW))  # (N, C) logits


@dataclass(frozen=True)
class Domain:
    angle: float  # rotation, degrees, counter-clockwise
    thickness: float  # stroke change in 3×3 morphology steps; negative thins

    @property
    def name(self) -> str:
        return f"rot{self.angle:+04.0f}_thk{self.thickness:+.2f}"


def _morph(x_NHW: torch.Tensor, thickness: float) -> torch.Tensor:
    """Continuous stroke thickness: whole 3×3 dilation (or erosion) steps, then a linear blend for the fraction."""
    sign = 1.0 if thickness >= 0 else -1.0
    steps, frac = divmod(abs(thickness), 1.0)
    x = x_NHW.unsqueeze(1)  # (N, 1, H, W)
    step = lambda t: sign * F.max_pool2d(sign * t, 3, stride=1, padding=1)  # noqa: E731 dilation (+) / erosion (-)
    for _ in range(int(steps)):
        x = step(x)
    x = x + frac * (step(x) - x)
    return x.squeeze(1)


def _rotate(x_NHW: torch.Tensor, angle: float) -> torch.Tensor:
    theta = math.radians(angle)
    rot = torch.tensor([[math.cos(theta), -math.sin(theta), 0.0], [math.sin(theta), math.cos(theta), 0.0]])
    grid = F.affine_grid(rot.expand(len(x_NHW), 2, 3), (len(x_NHW), 1, SIZE, SIZE), align_corners=False)
    return F.grid_sample(x_NHW.unsqueeze(1), grid, align_corners=False, padding_mode="zeros").squeeze(1)


def transform(x_NHW: torch.Tensor, domain: Domain) -> torch.Tensor:
    """Apply a domain to canonical 16×16 digits in [0, 1]: thickness first, then rotation."""
    return _rotate(_morph(x_NHW, domain.thickness), domain.angle).clamp(0.0, 1.0)


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits as (N, 16, 16) floats in [0, 1] and (N,) labels."""
    from sklearn.datasets import load_digits as sk_load

    d = sk_load()
    x = torch.tensor(d.images, dtype=torch.float32) / 16.0  # (N, 8, 8)
    x = F.interpolate(x.unsqueeze(1), size=(SIZE, SIZE), mode="bilinear", align_corners=False).squeeze(1)
    return x, torch.tensor(d.target, dtype=torch.long)


class DigitsDomains(Suite):
    """The built-in image suite; everything offline and small enough for a 2-core CPU."""

    name = "digits-domains"
    target_modules = ["fc1", "fc2", "fc3"]
    metric = "accuracy"

    def __init__(self, n_train: int = 256, n_val: int = 128, k_exemplars: int = 32, cache_dir: str | Path | None = None):
        self.n_train, self.n_val, self.k_exemplars = n_train, n_val, k_exemplars
        self.cache_dir = Path(cache_dir or os.environ.get("LORAGEN_CACHE", Path.home() / ".cache" / "loragen"))
        self._images, self._labels = load_digits()
        perm = torch.randperm(len(self._labels), generator=torch.Generator().manual_seed(0))
        n_test = int(0.3 * len(perm))
        self._test_idx, self._pool_idx = perm[:n_test], perm[n_test:]  # test pool never trains anything
        domains = [Domain(a, t) for a in ANGLES for t in THICKNESS]
        held = {Domain(a, t) for a, t in HELD_OUT_INTERIOR}
        self._tasks = {d.name: Task(d.name, d in held, {"angle": d.angle, "thickness": d.thickness, "where": "grid"})
                       for d in domains}
        for a, t in HELD_OUT_OUTSIDE:
            d = Domain(a, t)
            self._tasks[d.name] = Task(d.name, True, {"angle": a, "thickness": t, "where": "outside"})
        self._data_cache: dict[tuple[str, str], TaskData] = {}

    # ---- tasks ---------------------------------------------------------------------------------------------------
    def _domain(self, name: str) -> Domain:
        p = self.task(name).params
        return Domain(p["angle"], p["thickness"])

    def data(self, task: str, split: str) -> TaskData:
        """Split 'train' / 'val' (disjoint draws from the pool) or 'test' (the shared held-out pool), transformed."""
        key = (task, split)
        if key not in self._data_cache:
            domain = self._domain(task)
            if split == "test":
                idx = self._test_idx
            elif split in ("train", "val"):
                g = rng(self.name, task)
                order = self._pool_idx[torch.randperm(len(self._pool_idx), generator=g)]
                idx = order[: self.n_train] if split == "train" else order[self.n_train : self.n_train + self.n_val]
            else:
                raise ValueError(f"split must be 'train', 'val' or 'test'; found {split!r}")
            self._data_cache[key] = TaskData(transform(self._images[idx], domain), self._labels[idx])
        return self._data_cache[key]

    def condition(self, task: str, draw: int = 0) -> Condition:
        """K exemplar images from the task's training split; `draw` picks another random K-subset."""
        train = self.data(task, "train")
        g = rng(self.name, task, "exemplars", draw)
        idx = torch.randperm(len(train.y), generator=g)[: self.k_exemplars]
        return Condition(task=task, images=train.x[idx].clone())

    def condition_pool(self, task: str) -> Condition:
        """The whole training split: generators draw their own K-subsets from it."""
        return Condition(task=task, images=self.data(task, "train").x)

    # ---- base model ----------------------------------------------------------------------------------------------
    def build_base(self, epochs: int = 40, seed: int = 0) -> nn.Module:
        """Pretrain the MLP on canonical digits of the pool (the test pool is never seen)."""
        torch.manual_seed(seed)
        model = DigitsMLP()
        x, y = self._images[self._pool_idx], self._labels[self._pool_idx]
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
        for _ in range(epochs):
            for idx in torch.randperm(len(y)).split(64):
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return model.eval()

    def base_model(self, rebuild: bool = False) -> nn.Module:
        """The pretrained base, from the cache (safetensors) or built and cached on first use."""
        from safetensors.torch import load_file

        from loragen import atomic

        path = self.cache_dir / "digits-domains" / "base.safetensors"
        model = DigitsMLP()
        if path.exists() and not rebuild:
            model.load_state_dict(load_file(str(path)))
            return model.eval()
        t0 = time.perf_counter()
        model = self.build_base()
        atomic.save_safetensors(path, model.state_dict(), {"built_s": f"{time.perf_counter() - t0:.2f}"})
        return model

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)
