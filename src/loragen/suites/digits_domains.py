"""Suite `digits-domains`: one task per image domain of scikit-learn digits, made by continuous transforms.

The base model is a small MLP classifier pretrained on canonical digits (upsampled to 16×16). A domain is a point in
six continuous factors from five transform families: stroke thickness (grey-scale morphology, interpolated between
whole dilation/erosion steps), rotation, zoom, translation (x, y) and contrast. Tasks are sampled uniformly inside
RANGES ("inside": a held-out one tests interpolation); extrapolation tasks push one factor outside its range
(OUTSIDE) and never enter any training set. A task's condition is K unlabelled exemplar images of its training split.

Shapes: N images, H = W = 16 pixels, C = 10 classes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from loragen.conditions import Condition
from loragen.suites.suite import Fold, Suite, Task, TaskData, cache_root, rng, spread_folds

SIZE = 16  # H = W after upsampling the 8×8 digits
# the sampled range of each factor: tasks inside it are the training distribution (and interpolation tests)
RANGES = {
    "angle": (-60.0, 60.0),  # rotation, degrees counter-clockwise
    "thickness": (-0.5, 1.0),  # <0 thins (erosion), >0 thickens (dilation); 1.0 = one 3×3 step
    "zoom": (0.75, 1.25),  # >1 enlarges the digit
    "shift_x": (-0.2, 0.2),  # translation, in half-widths of the image (0.2 = 1.6 pixels)
    "shift_y": (-0.2, 0.2),
    "contrast": (0.4, 1.0),  # ink and background pulled toward grey: x -> 0.5 + contrast · (x - 0.5)
}
# extrapolation: one factor drawn from one of these intervals (outside RANGES), the others inside
OUTSIDE = {
    "angle": ((-90.0, -70.0), (70.0, 90.0)),
    "thickness": ((1.25, 1.75),),
    "zoom": ((0.55, 0.65), (1.35, 1.45)),
    "shift_x": ((-0.35, -0.28), (0.28, 0.35)),
    "shift_y": ((-0.35, -0.28), (0.28, 0.35)),
    "contrast": ((0.2, 0.3),),
}


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
    angle: float = 0.0  # rotation, degrees, counter-clockwise
    thickness: float = 0.0  # stroke change in 3×3 morphology steps; negative thins
    zoom: float = 1.0  # scale factor of the digit
    shift_x: float = 0.0  # translation in half-widths, + right
    shift_y: float = 0.0  # translation in half-widths, + down
    contrast: float = 1.0  # 1: unchanged; 0: uniform grey

    @property
    def name(self) -> str:
        return (f"rot{self.angle:+04.0f}_thk{self.thickness:+.2f}_zm{self.zoom:.2f}_sh{self.shift_x:+.2f}{self.shift_y:+.2f}"
                f"_ct{self.contrast:.2f}")


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


def _affine(x_NHW: torch.Tensor, angle: float, zoom: float, shift_x: float, shift_y: float) -> torch.Tensor:
    """Rotate by `angle`, scale by `zoom` and translate by (shift_x, shift_y), in one resampling."""
    theta = math.radians(angle)
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]) / zoom  # output -> input
    shift = torch.tensor([shift_x, shift_y])
    mat = torch.cat([rot, (-rot @ shift)[:, None]], 1)  # (2, 3)
    grid = F.affine_grid(mat.expand(len(x_NHW), 2, 3), (len(x_NHW), 1, SIZE, SIZE), align_corners=False)
    return F.grid_sample(x_NHW.unsqueeze(1), grid, align_corners=False, padding_mode="zeros").squeeze(1)


def transform(x_NHW: torch.Tensor, domain: Domain) -> torch.Tensor:
    """Apply a domain to canonical 16×16 digits in [0, 1]: thickness, then rotation / zoom / translation, then
    contrast."""
    x = _affine(_morph(x_NHW, domain.thickness), domain.angle, domain.zoom, domain.shift_x, domain.shift_y).clamp(0.0, 1.0)
    return 0.5 + domain.contrast * (x - 0.5)


def sample_domains(n: int, seed: int, outside: bool = False) -> list[Domain]:
    """n domains with every factor uniform in RANGES; with `outside`, factor i mod 6 is drawn from OUTSIDE instead
    (each extrapolation task leaves the range in one family, the families taking turns)."""
    g = rng("digits-domains", "domains", "outside" if outside else "inside", seed)
    out = []
    for i in range(n):
        u = torch.rand(len(RANGES), generator=g).tolist()
        values = {k: lo + ui * (hi - lo) for (k, (lo, hi)), ui in zip(RANGES.items(), u)}
        if outside:
            factor = list(RANGES)[i % len(RANGES)]
            intervals = OUTSIDE[factor]
            lo, hi = intervals[int(torch.randint(len(intervals), (1,), generator=g))]
            values[factor] = lo + float(torch.rand(1, generator=g)) * (hi - lo)
        out.append(Domain(**values))
    return out


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits as (N, 16, 16) floats in [0, 1] and (N,) labels."""
    from sklearn.datasets import load_digits as sk_load

    d = sk_load()
    x = torch.tensor(d.images, dtype=torch.float32) / 16.0  # (N, 8, 8)
    x = F.interpolate(x.unsqueeze(1), size=(SIZE, SIZE), mode="bilinear", align_corners=False).squeeze(1)
    return x, torch.tensor(d.target, dtype=torch.long)


class DigitsDomains(Suite):
    """The built-in image suite; everything offline and small enough for a 2-core CPU.

    `n_tasks` domains inside RANGES and `n_extrapolation` outside them. The fixed split (the demo's) holds out every
    fifth inside task and all outside tasks; k-fold studies use `folds(k)` instead."""

    name = "digits-domains"
    target_modules = ["fc1", "fc2", "fc3"]
    metric = "accuracy"

    def __init__(self, n_tasks: int = 120, n_extrapolation: int = 20, task_seed: int = 0, n_train: int = 256,
                 n_val: int = 128, k_exemplars: int = 32, cache_dir: str | Path | None = None):
        if n_tasks < 2 or n_extrapolation < 0:
            raise ValueError(f"need n_tasks >= 2 and n_extrapolation >= 0; found {n_tasks} and {n_extrapolation}")
        self.n_train, self.n_val, self.k_exemplars = n_train, n_val, k_exemplars
        self.cache_dir = cache_root(cache_dir)
        self._images, self._labels = load_digits()
        perm = torch.randperm(len(self._labels), generator=torch.Generator().manual_seed(0))
        n_test = int(0.3 * len(perm))
        self._test_idx, self._pool_idx = perm[:n_test], perm[n_test:]  # test pool never trains anything
        self._tasks: dict[str, Task] = {}
        for i, d in enumerate(sample_domains(n_tasks, task_seed)):
            self.add_domain(d, heldout=i % 5 == 4, where="inside")
        for i, d in enumerate(sample_domains(n_extrapolation, task_seed, outside=True)):
            self.add_domain(d, heldout=True, where="outside", family=list(RANGES)[i % len(RANGES)])
        self._data_cache: dict[tuple[str, str], TaskData] = {}

    # ---- tasks ---------------------------------------------------------------------------------------------------
    def add_domain(self, domain: Domain, heldout: bool = True, where: str = "sweep", family: str | None = None) -> Task:
        """Register a task for a domain (e.g. points of an interpolation sweep); its name is the domain's."""
        if domain.name in self._tasks:
            raise ValueError(f"suite already holds a task {domain.name!r}; expected a new domain")
        params = {**asdict(domain), "where": where} | ({"family": family} if family else {})
        self._tasks[domain.name] = task = Task(domain.name, heldout, params)
        return task

    def folds(self, k: int) -> list[Fold]:
        """k folds over the inside tasks (each held out once); outside tasks are spread over the folds' test sets
        and never trained on in any fold."""
        return spread_folds(self.name, [t.name for t in self.tasks() if t.params["where"] == "inside"],
                            [t.name for t in self.tasks() if t.params["where"] != "inside"], k)

    def _domain(self, name: str) -> Domain:
        p = self.task(name).params
        return Domain(**{k: p[k] for k in RANGES})

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
