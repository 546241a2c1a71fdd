"""Suite `digits-gen`: class-conditional generation of scikit-learn digits with a tiny DiT, the Composer backbone.

Data: the 1,797 digits at 8×8, scaled to [-1, 1], split 70/30 by a fixed seed. The DiT is trained on the train split
with DDPM's ε-loss, and an EMA of its weights is kept as the backbone (as DiT does). The digits classifier (the metric
network) is trained on the same split and scored on the test split, whose features are the reference for digits-FD.
A task is a class, and its condition is the class label. `loragen base --suite digits-gen` builds both networks (as
does first use); they are cached as safetensors, and an interrupted backbone training resumes.
Shapes: N images, S = 8 image side, C = 10 classes, F classifier features.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from loragen.conditions import Condition
from loragen.diffusion import Diffusion
from loragen.errors import ConfigError
from loragen.suites.digits_classifier import DigitsClassifier
from loragen.suites.dit import DIT_SIZES, DiT, DiTConfig
from loragen.suites.suite import Suite, Task, TaskData, rng
from loragen.training import train

STATE_FILE = "train_state.safetensors"  # the backbone's resumable training state, in the cache folder


@dataclass(frozen=True)
class DigitsGenConfig:
    dit: str = "small"  # backbone size, a key of DIT_SIZES
    steps: int = 3000  # backbone optimiser steps (150 epochs of the train split at batch 64)
    batch_size: int = 64  # images per backbone step
    lr: float = 1e-3  # AdamW learning rate, cosine-decayed to 0
    ema: float = 0.999  # decay of the weight EMA that becomes the backbone
    classifier_epochs: int = 30  # epochs of the metric classifier
    checkpoint_every: int = 500  # backbone steps between resumable training states
    seed: int = 0

    def __post_init__(self):
        if self.dit not in DIT_SIZES:
            raise ConfigError(f"dit must be one of {sorted(DIT_SIZES)}; found {self.dit!r}")

    def key(self) -> str:
        """Cache key: a different configuration never reuses another's networks."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


QUICK = DigitsGenConfig(dit="tiny", steps=30, classifier_epochs=2, checkpoint_every=10)  # tests: seconds


def load_digits_8x8() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as (N, 1, 8, 8) floats in [-1, 1] and (N,) labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32)[:, None] / 8.0 - 1.0, torch.tensor(d.target, dtype=torch.long)


class DigitsGen(Suite):
    """The built-in generation suite; everything offline and small enough for a 2-core CPU."""

    name = "digits-gen"
    target_modules = ["q", "v"]  # W_Q and W_V of every attention layer (Composer)
    metric = "digits-FD"
    num_classes = 10
    image_shape = (1, 8, 8)
    diffusion = Diffusion(prediction_type="epsilon")

    def __init__(self, config: DigitsGenConfig | None = None, quick: bool = False, cache_dir: str | Path | None = None):
        self.config = config or (QUICK if quick else DigitsGenConfig())
        root = Path(cache_dir or os.environ.get("LORAGEN_CACHE", Path.home() / ".cache" / "loragen"))
        self.cache_dir = root / "digits-gen" / self.config.key()
        x, y = load_digits_8x8()
        perm = torch.randperm(len(y), generator=rng(self.name, "split"))
        n_test = int(0.3 * len(y))
        self._splits = {"test": TaskData(x[perm[:n_test]], y[perm[:n_test]]),
                        "train": TaskData(x[perm[n_test:]], y[perm[n_test:]])}
        self._tasks = {f"digit-{c}": Task(f"digit-{c}", False, {"label": c}) for c in range(self.num_classes)}
        self._classifier: DigitsClassifier | None = None  # loaded once per suite object: every metric call uses it
        self._real_features: torch.Tensor | None = None

    # ---- data and conditions -------------------------------------------------------------------------------------
    def split(self, split: str) -> TaskData:
        """All classes of a split: 'train' (1,258 images) or 'test' (539)."""
        if split not in self._splits:
            raise ValueError(f"split must be one of {sorted(self._splits)}; found {split!r}")
        return self._splits[split]

    def data(self, task: str, split: str) -> TaskData:
        d, label = self.split(split), self.task(task).params["label"]
        return TaskData(d.x[d.y == label], d.y[d.y == label])

    def condition(self, task: str, draw: int = 0) -> Condition:
        return Condition(task=task, label=self.task(task).params["label"])

    def condition_pool(self, task: str) -> Condition:
        return self.condition(task)

    def label_conditions(self) -> list[Condition]:
        """The condition of every class, indexed by label."""
        return [self.condition(f"digit-{c}") for c in range(self.num_classes)]

    # ---- networks ------------------------------------------------------------------------------------------------
    @property
    def dit_config(self) -> DiTConfig:
        return DIT_SIZES[self.config.dit]

    def base_model(self, rebuild: bool = False, show: bool = True) -> DiT:
        """The DiT backbone (EMA weights) from the cache, or trained and cached on first use."""
        from safetensors.torch import load_file

        from loragen import atomic

        path = self.cache_dir / "dit.safetensors"
        model = DiT(self.dit_config)
        if path.exists() and not rebuild:
            model.load_state_dict(load_file(str(path)))
            return model.eval()
        t0 = time.perf_counter()
        model = self._train_backbone(show)
        atomic.save_safetensors(path, model.state_dict(), {"built_s": f"{time.perf_counter() - t0:.1f}",
                                                           "config": json.dumps(asdict(self.config))})
        (self.cache_dir / STATE_FILE).unlink(missing_ok=True)  # only once the backbone is safely written
        return model.eval()

    def _train_backbone(self, show: bool) -> DiT:
        """DDPM ε-loss on the train split, AdamW with cosine decay, EMA of the weights; resumable."""
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        cfg, data = self.config, self.split("train")
        torch.manual_seed(cfg.seed)
        model = DiT(self.dit_config)
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema))
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)

        def step_fn(step: int, g: torch.Generator) -> torch.Tensor:  # batch and noise from g: the same on resume
            idx = torch.randint(0, len(data.y), (cfg.batch_size,), generator=g)
            return self.diffusion.training_loss(model, data.x[idx], data.y[idx], generator=g)

        train("digits-gen backbone", {"model": model}, opt, cfg.steps, step_fn, keep={"ema": ema},
              after_step=lambda: ema.update_parameters(model), state_path=self.cache_dir / STATE_FILE,
              fingerprint=asdict(cfg), checkpoint_every=cfg.checkpoint_every, seed=cfg.seed, clip=None, show=show)
        return ema.module

    def classifier(self, rebuild: bool = False) -> DigitsClassifier:
        """The metric classifier: from the cache or trained on the train split (seconds), once per suite object."""
        if self._classifier is None or rebuild:
            self._classifier, self._real_features = self._load_or_train_classifier(rebuild), None
        return self._classifier

    def _load_or_train_classifier(self, rebuild: bool) -> DigitsClassifier:
        from safetensors.torch import load_file

        from loragen import atomic

        path = self.cache_dir / "classifier.safetensors"
        model = DigitsClassifier(num_classes=self.num_classes)
        if path.exists() and not rebuild:
            model.load_state_dict(load_file(str(path)))
            return model.eval()
        torch.manual_seed(self.config.seed)
        data = self.split("train")
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
        for _ in range(self.config.classifier_epochs):
            model.train()
            for idx in torch.randperm(len(data.y)).split(64):
                loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        atomic.save_safetensors(path, model.state_dict())
        return model.eval()

    @torch.no_grad()
    def real_features(self) -> torch.Tensor:
        """(N_test, F) classifier features of the real test split: the reference of digits-FD."""
        if self._real_features is None:
            self._real_features = self.classifier().features(self.split("test").x)
        return self._real_features

    # ---- sampling and metrics ------------------------------------------------------------------------------------
    def sample(self, model: nn.Module, labels_N: torch.Tensor, steps: int = 50, seed: int = 0) -> torch.Tensor:
        """DDIM samples (N, 1, 8, 8) in [-1, 1] of `model(x_t, t, y)` (the backbone, or the backbone under adapters)."""
        x = self.diffusion.sample(model, labels_N, self.image_shape, steps, torch.Generator().manual_seed(seed))
        return x.clamp(-1.0, 1.0)

    def image_metrics(self, images_N1SS: torch.Tensor, labels_N: torch.Tensor) -> dict[str, float]:
        """digits-FD against the real test split, and class consistency (%)."""
        from loragen.suites.image_metrics import image_metrics

        return image_metrics(self.classifier(), images_N1SS, labels_N, self.real_features())

    def floor_fd(self) -> float:
        """digits-FD of as many real training digits as the test split holds: what a perfect generator would score."""
        n, train = len(self.split("test").y), self.split("train")
        return self.image_metrics(train.x[:n], train.y[:n])["fd"]

    def balanced_labels(self, n: int) -> torch.Tensor:
        """(n,) labels cycling through the classes: a batch of mixed classes, equal counts when n is a multiple of C."""
        return torch.arange(n) % self.num_classes

    def base_summary(self, model: nn.Module) -> dict[str, str]:
        clf, test = self.classifier(), self.split("test")
        with torch.no_grad():
            acc = 100.0 * (clf(test.x).argmax(-1) == test.y).float().mean().item()
        labels = self.balanced_labels(500)
        m = self.image_metrics(self.sample(model.eval(), labels, steps=50), labels)
        return {"classifier test accuracy": f"{acc:.1f}%",
                "backbone digits-FD (500 samples, 50 DDIM steps)": f"{m['fd']:.2f}",
                "backbone class consistency": f"{m['class_acc']:.1f}%",
                "real train digits' FD to the test split (the floor)": f"{self.floor_fd():.2f}"}
