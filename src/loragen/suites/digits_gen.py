"""Suite `digits-gen`: class-conditional generation of scikit-learn digits with a tiny DiT, the Composer backbone.

Data: the 1,797 digits at 8×8, scaled to [-1, 1], split by a fixed seed into test (30%: 539 images), validation
(`val_share`, 15%: 269) and train (the rest: 989). The test split is the same images whatever `val_share` is; the
validation split is carved out of the other 70%. The DiT is trained on the train split with DDPM's ε-loss, and an EMA
of its weights is kept as the backbone (as DiT does). The digits classifier (the metric network) is trained on the
same split and scored on the test split. digits-FD is measured against the real features of the test split, or of the
validation split when settings are being chosen (so the test split is only used for final scores).
A task is a class, and its condition is the class label. `loragen base --suite digits-gen` builds both networks (as
does first use); they are cached as safetensors, and an interrupted backbone training resumes.
Shapes: N images, S = 8 image side, C = 10 classes, F classifier features.
"""

from __future__ import annotations

import hashlib
import json
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
from loragen.suites.suite import Suite, Task, TaskData, cache_root, rng
from loragen.training import train

STATE_FILE = "train_state.safetensors"  # the backbone's resumable training state, in the cache folder
TEST_SHARE = 0.3  # share of all images in the test split (fixed: the test images never change)


@dataclass(frozen=True)
class DigitsGenConfig:
    dit: str = "small"  # backbone size, a key of DIT_SIZES
    val_share: float = 0.15  # share of all images in the validation split, out of the 70% not in test; 0.0: none
    steps: int = 3000  # backbone optimiser steps (194 epochs of the 989-image train split at batch 64)
    batch_size: int = 64  # images per backbone step
    lr: float = 1e-3  # AdamW learning rate, cosine-decayed to 0
    ema: float = 0.999  # decay of the weight EMA that becomes the backbone
    classifier_epochs: int = 30  # epochs of the metric classifier
    checkpoint_every: int = 500  # backbone steps between resumable training states
    seed: int = 0

    def __post_init__(self):
        if self.dit not in DIT_SIZES:
            raise ConfigError(f"dit must be one of {sorted(DIT_SIZES)}; found {self.dit!r}")
        if not 0.0 <= self.val_share < 1.0 - TEST_SHARE:
            raise ConfigError(f"val_share must lie in [0, {1.0 - TEST_SHARE:.1f}) (the train split needs images); "
                              f"found {self.val_share}")

    def key(self) -> str:
        """Cache key: a different configuration never reuses another's networks. val_share 0.0 is left out, so the
        networks cached before the validation split existed keep their key."""
        fields = asdict(self)
        if fields["val_share"] == 0.0:
            del fields["val_share"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]

    @classmethod
    def from_dict(cls, saved: dict) -> DigitsGenConfig:
        """The config a generator recorded; one written before the validation split existed names no val_share and
        was trained on all 70% that is not test, i.e. val_share 0.0."""
        return cls(**({"val_share": 0.0} | saved))


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
        root = cache_root(cache_dir)
        self.cache_dir = root / "digits-gen" / self.config.key()
        x, y = load_digits_8x8()
        perm = torch.randperm(len(y), generator=rng(self.name, "split"))
        n_test, n_val = int(TEST_SHARE * len(y)), int(self.config.val_share * len(y))
        test, val, train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
        self._splits = {"test": TaskData(x[test], y[test]), "train": TaskData(x[train], y[train])}
        if n_val > 0:
            self._splits["val"] = TaskData(x[val], y[val])
        self._tasks = {f"digit-{c}": Task(f"digit-{c}", False, {"label": c}) for c in range(self.num_classes)}
        self._classifier: DigitsClassifier | None = None  # loaded once per suite object: every metric call uses it
        self._real_features: dict[str, torch.Tensor] = {}  # split -> (N_split, F) features, once per classifier

    # ---- data and conditions -------------------------------------------------------------------------------------
    def split(self, split: str) -> TaskData:
        """All classes of a split: 'train' (989 images), 'val' (269) or 'test' (539); with val_share 0.0, 'train'
        (1,258) or 'test'."""
        if split == "val" and split not in self._splits:
            raise ValueError(f"this digits-gen has no validation split (val_share = {self.config.val_share})")
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
            self._classifier, self._real_features = self._load_or_train_classifier(rebuild), {}
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
    def real_features(self, split: str = "test") -> torch.Tensor:
        """(N_split, F) classifier features of a real held-out split ('test' or 'val'): the reference of digits-FD."""
        if split not in ("test", "val"):
            raise ValueError(f"digits-FD is measured against a held-out split, 'test' or 'val'; found {split!r}")
        if split not in self._real_features:
            self._real_features[split] = self.classifier().features(self.split(split).x)
        return self._real_features[split]

    # ---- sampling and metrics ------------------------------------------------------------------------------------
    def sample(self, model: nn.Module, labels_N: torch.Tensor, steps: int = 50, seed: int = 0) -> torch.Tensor:
        """DDIM samples (N, 1, 8, 8) in [-1, 1] of `model(x_t, t, y)` (the backbone, or the backbone under adapters)."""
        x = self.diffusion.sample(model, labels_N, self.image_shape, steps, torch.Generator().manual_seed(seed))
        return x.clamp(-1.0, 1.0)

    def image_metrics(self, images_N1SS: torch.Tensor, labels_N: torch.Tensor, split: str = "test") -> dict[str, float]:
        """digits-FD against the real images of `split` ('test', or 'val' to choose settings), and class
        consistency (%)."""
        from loragen.suites.image_metrics import image_metrics

        return image_metrics(self.classifier(), images_N1SS, labels_N, self.real_features(split))

    def floor_fd(self, split: str = "test") -> float:
        """digits-FD of as many real training digits as `split` holds: what a perfect generator would score."""
        n, train = len(self.split(split).y), self.split("train")
        return self.image_metrics(train.x[:n], train.y[:n], split)["fd"]

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
