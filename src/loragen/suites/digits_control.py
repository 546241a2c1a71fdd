"""Suite `digits-control`: a tiny VAR on 16×16 digits, the frozen backbone that ECM control modules steer.

Data: digits-gen's splits (the same test / validation / train images, 539 / 269 / 989), bilinearly upsampled from
8×8 to 16×16. The backbone is a multi-scale VQ tokenizer (var_tokenizer.py: 8×8 latent, scales 1, 2, 3, 4, 6, 8)
and a class-conditional next-scale transformer (var.py), both trained on the train split and chosen by their loss on
the validation split. `loragen base --suite digits-control` builds both (as does first use); they are cached as
safetensors, and an interrupted training resumes.
Metrics reuse digits-gen's: images are average-pooled back to 8×8 and read by its metric classifier, for digits-FD
(against the same round trip of the real held-out split) and class consistency; control fidelity is in
spatial_controls.py.
Shapes: N images, S = 16 image side, L tokens of all scales, C latent channels.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from loragen.errors import ConfigError
from loragen.suites.digits_gen import QUICK as GEN_QUICK
from loragen.suites.digits_gen import DigitsGen, DigitsGenConfig
from loragen.suites.spatial_controls import ControlKind, control_map, control_metrics
from loragen.suites.suite import TaskData, cache_root
from loragen.suites.var import VAR, VARConfig
from loragen.suites.var_sampling import SamplingConfig, sample_codes
from loragen.suites.var_tokenizer import MultiScaleVQ, TokenizerConfig
from loragen.training import train

SIDE = 16  # S: image side of the suite
SIZES = {  # name -> (tokenizer, transformer)
    "tiny": (TokenizerConfig(channels=8, codebook=32, scales=(1, 2, 4, 8), hidden=16),
             VARConfig(width=32, depth=2, heads=2, mlp_ratio=2)),  # tests: seconds
    "small": (TokenizerConfig(), VARConfig()),  # the suite's backbone
}


@dataclass(frozen=True)
class DigitsControlConfig:
    size: str = "small"  # tokenizer and transformer sizes, a key of SIZES
    tokenizer_steps: int = 2000  # tokenizer optimiser steps, batch `batch_size`
    var_steps: int = 2500  # transformer optimiser steps
    batch_size: int = 32  # images per step (both networks)
    tokenizer_lr: float = 2e-3  # AdamW, cosine-decayed to 0
    var_lr: float = 1e-3  # AdamW, cosine-decayed to 0
    class_dropout: float = 0.1  # share of training labels replaced by the null class (for guidance)
    augment: float = 0.0  # strength a of the random affine augmentation of the transformer's training images (0: none):
    # rotation up to 10°·a, scale 1 ± 0.1·a, shift up to 1.5·a pixels
    checkpoint_every: int = 500  # steps between resumable training states
    seed: int = 0

    def __post_init__(self):
        if self.size not in SIZES:
            raise ConfigError(f"size must be one of {sorted(SIZES)}; found {self.size!r}")
        if not 0.0 <= self.class_dropout < 1.0:
            raise ConfigError(f"class_dropout must lie in [0, 1); found {self.class_dropout}")

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


QUICK = DigitsControlConfig(size="tiny", tokenizer_steps=30, var_steps=30, batch_size=16, checkpoint_every=10)


def random_affine(images_N1SS: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """Images under a random rotation, scaling and shift each (see DigitsControlConfig.augment); the background
    (-1) fills what moves in. torch's affine_grid / grid_sample do the warping."""
    n, side = len(images_N1SS), images_N1SS.shape[-1]
    u = lambda: 2 * torch.rand(n, generator=g) - 1  # noqa: E731  uniform in [-1, 1]
    angle, scale = torch.deg2rad(10.0 * strength * u()), 1 + 0.1 * strength * u()
    shift = 1.5 * strength * torch.stack([u(), u()], 1) * 2 / side  # pixels in grid units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(images_N1SS.shape), align_corners=False)
    return F.grid_sample(images_N1SS + 1, grid, align_corners=False, padding_mode="zeros") - 1  # zeros = background


@dataclass
class TeacherData:
    """A split as the transformer trains on it: inputs (N, L − 1, C), target codes (N, L), labels (N,), images."""

    inputs: torch.Tensor
    codes: torch.Tensor
    labels: torch.Tensor
    images: torch.Tensor


class DigitsControl:
    """The built-in control suite; a backbone and metrics, no zoo (ECM trains control modules, not LoRAs)."""

    name = "digits-control"
    side = SIDE

    def __init__(self, config: DigitsControlConfig | None = None, quick: bool = False, cache_dir: str | Path | None = None):
        self.config = config or (QUICK if quick else DigitsControlConfig())
        self.tokenizer_config, self.var_config = SIZES[self.config.size]
        self.cache_dir = cache_root(cache_dir) / "digits-control" / self.config.key()
        # digits-gen's splits and metric classifier (its default config: the classifier digits-gen's bench uses)
        self.gen = DigitsGen(GEN_QUICK if quick else DigitsGenConfig(), cache_dir=cache_dir)
        self._tokenizer: MultiScaleVQ | None = None
        self._var: VAR | None = None
        self._teacher: dict[str, TeacherData] = {}
        self._real_features: dict[str, torch.Tensor] = {}
        self._splits: dict[str, TaskData] = {}

    # ---- data ----------------------------------------------------------------------------------------------------
    def split(self, split: str) -> TaskData:
        """A split ('train', 'val' or 'test') of digits-gen at 16×16, images in [-1, 1]."""
        if split not in self._splits:
            d = self.gen.split(split)
            self._splits[split] = TaskData(F.interpolate(d.x, size=(SIDE, SIDE), mode="bilinear", align_corners=False), d.y)
        return self._splits[split]

    def teacher(self, split: str) -> TeacherData:
        """A split's images as codes and teacher-forced inputs of the cached tokenizer (once per suite object)."""
        if split not in self._teacher:
            d = self.split(split)
            self._teacher[split] = self._encode(d.x, d.y)
        return self._teacher[split]

    def _encode(self, images_N1SS: torch.Tensor, labels_N: torch.Tensor) -> TeacherData:
        """Images as the transformer trains on them: the tokenizer's codes and teacher-forced inputs."""
        tokenizer = self._tokenizer or self.networks()[0]  # while the transformer trains, only the tokenizer is set
        codes = tokenizer.encode(images_N1SS)
        return TeacherData(tokenizer.teacher_inputs(codes), torch.cat(codes, 1), labels_N, images_N1SS)

    def train_batch(self, idx_B: torch.Tensor, augment: float, g: torch.Generator) -> TeacherData:
        """Train images idx_B, randomly warped (strength `augment`, draws from g), as codes and teacher inputs."""
        if not augment:
            d = self.teacher("train")
            return TeacherData(d.inputs[idx_B], d.codes[idx_B], d.labels[idx_B], d.images[idx_B])
        d = self.split("train")
        return self._encode(random_affine(d.x[idx_B], augment, g), d.y[idx_B])

    def controls(self, kind: ControlKind, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Controls (N, 1, S, S) of kind `kind` computed from a split's images, and the images' labels (N,)."""
        d = self.split(split)
        return control_map(kind, d.x), d.y

    # ---- networks ------------------------------------------------------------------------------------------------
    def networks(self, rebuild: bool = False, show: bool = True) -> tuple[MultiScaleVQ, VAR]:
        """The frozen tokenizer and transformer, from the cache or trained (and cached) on first use."""
        if self._var is None or rebuild:
            self._tokenizer, self._teacher = None, {}
            tokenizer = self._load_or_train("tokenizer", MultiScaleVQ(self.tokenizer_config), rebuild, show)
            self._tokenizer = tokenizer.requires_grad_(False).eval()  # the transformer trains on its codes
            var = self._load_or_train("var", VAR(self.var_config, self.tokenizer_config), rebuild, show)
            self._var = var.requires_grad_(False).eval()
        return self._tokenizer, self._var

    def base_model(self, rebuild: bool = False, show: bool = True) -> VAR:
        """The transformer (after the tokenizer it needs); `loragen base` builds both."""
        return self.networks(rebuild, show)[1]

    def _load_or_train(self, name: str, model: torch.nn.Module, rebuild: bool, show: bool) -> torch.nn.Module:
        from safetensors.torch import load_file

        from loragen import atomic

        path = self.cache_dir / f"{name}.safetensors"
        if path.exists() and not rebuild:
            model.load_state_dict(load_file(str(path)))
            return model
        t0 = time.perf_counter()
        state = self.cache_dir / f"{name}_state.safetensors"
        val_loss = self._train_tokenizer(model, state, show) if name == "tokenizer" else self._train_var(model, state, show)
        atomic.save_safetensors(path, model.state_dict(), {"built_s": f"{time.perf_counter() - t0:.1f}",
                                                           "val_loss": f"{val_loss:.5f}",
                                                           "config": json.dumps(asdict(self.config))})
        state.unlink(missing_ok=True)  # only once the network is safely written
        return model

    def _train_tokenizer(self, model: MultiScaleVQ, state: Path, show: bool) -> float:
        """Reconstruction + VQ loss on the train split; returns the validation reconstruction MSE."""
        cfg, data = self.config, self.split("train")
        torch.manual_seed(cfg.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.tokenizer_lr, weight_decay=0.0)

        def step_fn(step: int, g: torch.Generator) -> torch.Tensor:
            return model(data.x[torch.randint(0, len(data.y), (cfg.batch_size,), generator=g)])[1]

        train("digits-control tokenizer", {"tokenizer": model}, opt, cfg.tokenizer_steps, step_fn, state_path=state,
              fingerprint=asdict(cfg) | {"net": "tokenizer"}, checkpoint_every=cfg.checkpoint_every, seed=cfg.seed,
              show=show)
        with torch.no_grad():
            val = self.split("val").x
            return F.mse_loss(model.decode(model.encode(val)), val).item()

    def _train_var(self, model: VAR, state: Path, show: bool) -> float:
        """Cross-entropy over every code of every scale (VAR), labels dropped to the null class at
        `class_dropout`; returns the validation cross-entropy (with labels)."""
        cfg, n = self.config, len(self.split("train").y)
        torch.manual_seed(cfg.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.var_lr, weight_decay=0.05)

        def step_fn(step: int, g: torch.Generator) -> torch.Tensor:
            batch = self.train_batch(torch.randint(0, n, (cfg.batch_size,), generator=g), cfg.augment, g)
            labels = batch.labels.clone()
            labels[torch.rand(len(labels), generator=g) < cfg.class_dropout] = model.null_class
            logits = model(batch.inputs, labels)  # (B, L, V)
            return F.cross_entropy(logits.flatten(0, 1), batch.codes.flatten())

        train("digits-control transformer", {"var": model}, opt, cfg.var_steps, step_fn, state_path=state,
              fingerprint=asdict(cfg) | {"net": "var"}, checkpoint_every=cfg.checkpoint_every, seed=cfg.seed,
              show=show)
        with torch.no_grad():
            val = self.teacher("val")
            return F.cross_entropy(model(val.inputs, val.labels).flatten(0, 1), val.codes.flatten()).item()

    def build_seconds(self) -> float:
        """Seconds the cached tokenizer and transformer took to train (as recorded when they were built)."""
        from safetensors import safe_open

        self.networks()
        total = 0.0
        for name in ("tokenizer", "var"):
            with safe_open(str(self.cache_dir / f"{name}.safetensors"), framework="pt") as f:
                total += float(f.metadata()["built_s"])
        return total

    # ---- sampling and metrics ------------------------------------------------------------------------------------
    def generate(self, model, labels_N: torch.Tensor, sampling: SamplingConfig = SamplingConfig(), seed: int = 0
                 ) -> torch.Tensor:
        """Images (N, 1, S, S) in [-1, 1] drawn from `model(inputs, labels)` (the backbone, or the backbone under a
        control, wrapped to take guided + unguided rows)."""
        tokenizer, var = self.networks()
        codes = sample_codes(model, tokenizer, labels_N, var.null_class, sampling, torch.Generator().manual_seed(seed))
        return tokenizer.decode(codes)

    def real_features(self, split: str) -> torch.Tensor:
        """(N, F) classifier features of a held-out split after the 16 → 8 round trip: the reference of digits-FD."""
        if split not in ("val", "test"):
            raise ValueError(f"digits-FD is measured against a held-out split, 'test' or 'val'; found {split!r}")
        if split not in self._real_features:
            with torch.no_grad():
                self._real_features[split] = self.gen.classifier().features(F.avg_pool2d(self.split(split).x, 2))
        return self._real_features[split]

    def image_metrics(self, images_N1SS: torch.Tensor, labels_N: torch.Tensor, split: str = "test") -> dict[str, float]:
        """digits-FD against `split` and class consistency (%), read by digits-gen's classifier at 8×8."""
        from loragen.suites.image_metrics import image_metrics

        return image_metrics(self.gen.classifier(), F.avg_pool2d(images_N1SS, 2), labels_N, self.real_features(split))

    def metrics(self, kind: ControlKind, control_N1SS: torch.Tensor, images_N1SS: torch.Tensor, labels_N: torch.Tensor,
                split: str = "test") -> dict[str, float]:
        """Image metrics and control fidelity of generated images."""
        return self.image_metrics(images_N1SS, labels_N, split) | control_metrics(kind, control_N1SS, images_N1SS)

    def base_summary(self, model=None) -> dict[str, str]:
        tokenizer, var = self.networks()
        test = self.split("test")
        codes = tokenizer.encode(test.x)
        recon = tokenizer.decode(codes)
        labels = test.y[:500]
        images = self.generate(var, labels)
        m = self.metrics("edges", control_map("edges", test.x[:500]), images, labels)
        return {"tokenizer reconstruction MSE (test)": f"{F.mse_loss(recon, test.x).item():.4f}",
                "tokenizer codes used (test)": f"{len(torch.cat(codes, 1).unique())} / {tokenizer.config.codebook}",
                "backbone digits-FD (500 samples)": f"{m['fd']:.2f}",
                "backbone class consistency": f"{m['class_acc']:.1f}%",
                "backbone edge F1 to unrelated test digits of its class": f"{m['control_f1']:.1f}%",
                "reconstructed test digits' FD (the tokenizer's floor)": f"{self.image_metrics(recon[:500], labels)['fd']:.2f}"}
