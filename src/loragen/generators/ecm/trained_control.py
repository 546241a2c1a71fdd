"""Training, saving and loading a control module on the digits-control backbone (ECM or the full fine-tune).

Training (teacher-forced, the VAR loss): each step draws a batch of train images with their controls, cuts each
sequence after a last scale k' and minimises the cross-entropy of the codes of scales ≤ k' under the control.
With `scale_sampling="early"` (ECM's early-centric sampling) k' is drawn with P(k' = k) ∝ early_decay^k, per image
or per batch (`cut_per`), so a step sees mostly the early scales' few tokens; the block-causal mask makes a cut
sequence's logits exactly those of the full one. With "uniform" every step sees all scales. ECM trains only its
module; the backbone is frozen. The full fine-tune trains a copy of the backbone with its control tokens.
A folder holds config.json, module.safetensors and, for the full fine-tune, backbone.safetensors; an interrupted
training resumes from its state file there.
Shapes: B batch, T tokens of a prefix, S control side.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from loragen import atomic
from loragen.errors import LoragenError
from loragen.generators.ecm.config import ECMConfig
from loragen.generators.ecm.control_module import ControlTokens, ECMControl
from loragen.suites.digits_control import DigitsControl
from loragen.suites.spatial_controls import check_control, control_map
from loragen.suites.var import VAR, prefix_lengths
from loragen.suites.var_sampling import ModelFn
from loragen.training import train

# prefixes this short share one forward pass in a training step (digits-control: scales 1-3, 1/5/14 tokens): a pass
# has a fixed cost (~4 ms of a 130 ms uniform step on 2 cores, measured) that outweighs padding a few images to 14
SHARED_PASS_TOKENS = 16
CONFIG_FILE, MODULE_FILE, BACKBONE_FILE, STATE_FILE = "config.json", "module.safetensors", "backbone.safetensors", "train_state.safetensors"


def last_scale_probs(config: ECMConfig, scales: int) -> torch.Tensor:
    """(K,) probability of each last scale k' per training step: early-centric (∝ decay^k) or all scales always."""
    if config.scale_sampling == "uniform":
        return F.one_hot(torch.tensor(scales - 1), scales).float()
    w = config.early_decay ** torch.arange(scales, dtype=torch.float64)
    return (w / w.sum()).float()


def token_weights(config: ECMConfig, scales: tuple[int, ...]) -> torch.Tensor:
    """(L,) loss weight of each token position: 1 / P(the step's cut keeps the token's scale) with "inverse" scale
    weighting (P(k' >= s); 1 everywhere under uniform sampling), else 1."""
    sizes = torch.tensor([p * p for p in scales])
    if config.scale_weighting == "none":
        return torch.ones(int(sizes.sum()))
    kept = last_scale_probs(config, len(scales)).flip(0).cumsum(0).flip(0)  # (K,) P(k' >= s)
    return torch.repeat_interleave(1.0 / kept, sizes)


def expected_tokens(config: ECMConfig, scales: tuple[int, ...]) -> float:
    """Mean tokens per sequence a training step sees under the config's scale sampling."""
    return float((last_scale_probs(config, len(scales)) * torch.tensor(prefix_lengths(scales)[1:]).float()).sum())


@dataclass
class TrainedControl:
    """A control module with the backbone it runs on (the suite's frozen one, or the full fine-tune's own copy)."""

    config: ECMConfig
    module: nn.Module
    backbone: VAR
    suite: DigitsControl  # the suite whose backbone (or a copy of it) the module runs on
    history: list[dict] = field(default_factory=list)  # [{"step", "train_s", "val_control_f1"}] when evaluated in training
    fit: dict = field(default_factory=dict)  # the training loop's summary

    @property
    def trainable_params(self) -> int:
        """Parameters training changed: the module's, and the backbone's for the full fine-tune."""
        n = sum(p.numel() for p in self.module.parameters())
        return n + (sum(p.numel() for p in self.backbone.parameters()) if self.config.method == "full_finetune" else 0)

    def logits(self, inputs_BTC: torch.Tensor, labels_B: torch.Tensor, control_B1SS: torch.Tensor) -> torch.Tensor:
        return self.module(self.backbone, inputs_BTC, labels_B, control_B1SS)

    def model_fn(self, control_B1SS: torch.Tensor) -> ModelFn:
        """The controlled model for `sample_codes`: the control of each image, for its guided and unguided rows."""
        control = check_control(control_B1SS, self.suite.side)
        both = torch.cat([control, control])
        return lambda inputs, labels: self.logits(inputs, labels, both)

    def save(self, out: Path) -> None:
        """The module (and a fine-tuned backbone) as safetensors; the settings and the suite's config as JSON, the
        config last (a folder without it is unfinished)."""
        out.mkdir(parents=True, exist_ok=True)
        atomic.save_safetensors(out / MODULE_FILE, self.module.state_dict())
        if self.config.method == "full_finetune":
            atomic.save_safetensors(out / BACKBONE_FILE, self.backbone.state_dict())
        atomic.write_json(out / CONFIG_FILE, {"ecm": asdict(self.config), "suite": asdict(self.suite.config),
                                              "history": self.history, "fit": self.fit})


def build_module(config: ECMConfig, backbone: VAR) -> nn.Module:
    return ECMControl(config, backbone) if config.method == "ecm" else ControlTokens(config, backbone)


def load_control(folder: str | Path, suite: DigitsControl | None = None) -> TrainedControl:
    """A trained control module from its folder, on its suite's backbone (or its saved fine-tuned copy); `suite`
    None: the suite it was trained on, rebuilt from its saved config."""
    from safetensors.torch import load_file

    from loragen.suites.digits_control import DigitsControlConfig

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / MODULE_FILE).is_file():
        raise LoragenError(f"{folder} is not a trained control module (expected {CONFIG_FILE} and {MODULE_FILE} in it)")
    saved = json.loads((folder / CONFIG_FILE).read_text())
    config, suite_config = ECMConfig(**saved["ecm"]), DigitsControlConfig(**saved["suite"])
    if suite is None:
        suite = DigitsControl(suite_config)
    elif suite.config != suite_config:
        raise LoragenError(f"{folder} was trained on another digits-control backbone ({suite_config}); found {suite.config}")
    backbone = suite.base_model()
    if config.method == "full_finetune":
        backbone = copy.deepcopy(backbone)
        backbone.load_state_dict(load_file(str(folder / BACKBONE_FILE)))
    module = build_module(config, backbone)
    module.load_state_dict(load_file(str(folder / MODULE_FILE)))
    return TrainedControl(config, module.eval(), backbone.eval(), suite, saved.get("history", []),
                          saved.get("fit", {}))


def _setup(suite: DigitsControl, config: ECMConfig, show: bool) -> tuple[nn.Module, VAR, list[nn.Parameter]]:
    """A fresh module, the backbone it trains on (the frozen one, or a trainable copy) and the trained parameters."""
    frozen = suite.base_model(show=show)
    backbone = frozen if config.method == "ecm" else copy.deepcopy(frozen).requires_grad_(True)
    module = build_module(config, backbone)
    return module, backbone, list(module.parameters()) + (list(backbone.parameters()) if backbone is not frozen else [])


def forward_passes(lengths_B: torch.Tensor, shared_upto: int = SHARED_PASS_TOKENS) -> list[tuple[int, torch.Tensor]]:
    """(prefix length T, rows (B,) bool) of each forward pass of a step whose images are cut at prefix lengths
    `lengths_B`: one pass per distinct length, except that prefixes of at most `shared_upto` tokens share one pass,
    padded to the longest of them (exact under the block-causal mask; the loss skips the padding)."""
    short = lengths_B <= shared_upto
    passes = [(int(lengths_B[short].max()), short)] if short.any() else []
    return passes + [(T, lengths_B == T) for T in lengths_B[~short].unique().tolist()]


def _objective(suite: DigitsControl, config: ECMConfig, module: nn.Module, backbone: VAR
               ) -> Callable[[int, torch.Generator], torch.Tensor]:
    """The training loss of a step: a batch of warped train images, their controls, a last scale k' (scale
    sampling), labels dropped at class_dropout."""
    n, starts = len(suite.split("train").y), prefix_lengths(backbone.scales)
    probs, weights = last_scale_probs(config, len(backbone.scales)), token_weights(config, backbone.scales)  # (K,), (L,)

    def loss(step: int, g: torch.Generator) -> torch.Tensor:
        batch = suite.train_batch(torch.randint(0, n, (config.batch_size,), generator=g), config.augment, g)
        if config.cut_per == "sample" and config.scale_sampling == "early":
            cuts = torch.multinomial(probs, config.batch_size, replacement=True, generator=g)  # (B,) k' per image
        else:
            cuts = torch.multinomial(probs, 1, generator=g).expand(config.batch_size)
        labels = batch.labels.clone()
        labels[torch.rand(len(labels), generator=g) < config.class_dropout] = backbone.null_class
        control = control_map(config.control, batch.images)  # (B, 1, S, S)
        lengths = torch.tensor(starts)[cuts + 1]  # (B,) tokens of scales 0 … k' per image
        total, tokens = 0.0, 0
        for T, rows in forward_passes(lengths):
            logits = module(backbone, batch.inputs[rows, : T - 1], labels[rows], control[rows])  # (b, T, V)
            ce = F.cross_entropy(logits.transpose(1, 2), batch.codes[rows, :T], reduction="none")  # (b, T)
            own = torch.arange(T) < lengths[rows, None]  # (b, T): each image's own prefix (a shared pass pads)
            total = total + (ce * weights[:T] * own).sum()
            tokens += int(own.sum())
        if config.scale_weighting == "inverse":
            return total / (config.batch_size * starts[-1])  # unbiased for the mean over every image's L tokens
        return total / tokens  # the mean over every token the step saw

    return loss


def training_rounds(suite: DigitsControl, config: ECMConfig, steps: int) -> Callable[[], None]:
    """A fresh module and a function that runs `steps` optimiser steps of the training loop on it (for timing):
    every call draws the same batches and cut scales, those of training's first `steps` steps."""
    torch.manual_seed(config.seed)
    module, backbone, params = _setup(suite, config, show=False)
    loss_fn, opt = _objective(suite, config, module, backbone), torch.optim.AdamW(params, lr=config.lr)
    return lambda: train("timing", {"module": module}, opt, steps, loss_fn, seed=config.seed, show=False)


def train_control(suite: DigitsControl, config: ECMConfig, out: str | Path | None = None, show: bool = True,
                  evaluate: Callable[[TrainedControl], float] | None = None, eval_every: int = 0) -> TrainedControl:
    """Train a control module (resuming from `out` when it holds an interrupted run); saved to `out` if given.
    `evaluate` (e.g. the validation edge F1) is called every `eval_every` steps; its time is not training time."""
    out = Path(out) if out is not None else None
    if out is not None and (out / CONFIG_FILE).is_file() and (out / MODULE_FILE).is_file():
        done = load_control(out, suite)
        if done.config == config:
            return done
        raise LoragenError(f"{out} holds a control module trained with other settings; remove it or use another folder")
    torch.manual_seed(config.seed)
    module, backbone, params = _setup(suite, config, show)
    trained = TrainedControl(config, module, backbone, suite)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    modules = {"module": module} | ({"backbone": backbone} if config.method == "full_finetune" else {})
    loss_fn = _objective(suite, config, module, backbone)
    clock = {"eval_s": 0.0, "t0": time.perf_counter(), "done": 0}  # done: steps finished by the last step_fn

    def step_fn(step: int, g: torch.Generator) -> torch.Tensor:
        clock["done"] = step + 1
        return loss_fn(step, g)

    def after_step() -> None:  # a resumed run's history starts at the resume
        if clock["done"] % eval_every:
            return
        t = time.perf_counter()
        module.eval()
        score = evaluate(trained)
        module.train()
        trained.history.append({"step": clock["done"], "train_s": t - clock["t0"] - clock["eval_s"],
                                "val_control_f1": score})
        clock["eval_s"] += time.perf_counter() - t

    state = out / STATE_FILE if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    trained.fit = train(f"{config.method} ({config.control})", modules, opt, config.steps, step_fn,
                        after_step=after_step if evaluate is not None and eval_every else None, state_path=state,
                        fingerprint=asdict(config) | {"backbone": suite.config.key()}, seed=config.seed, show=show)
    trained.fit["s_per_step"] = (trained.fit["fit_s"] - clock["eval_s"]) / config.steps
    module.eval()
    backbone.eval()
    if out is not None:
        trained.save(out)
        state.unlink(missing_ok=True)
    return trained
