"""ComposerGenerator: trained with the backbone's own diffusion loss; composes low-rank updates per condition.

1. The backbone is frozen. Its W_Q and W_V of every attention layer form the LoRA layout (rank r, alpha = r, so
   ΔW = B·A unscaled).
2. Each step draws a context-aware batch. The distinct conditions in it are encoded and turned into (A, B) once each,
   and every sample gets its condition's pair through per-sample batched LoRA (loragen.adapters.batched). The loss is the
   backbone's DDPM ε-loss; the optimiser is AdamW with lr 1e-4 and weight decay 0.05 (Composer §4).
3. Inference: finalize() (stored tokens); (A, B) are computed once per distinct condition and reused at every
   sampling step.
The same loop, with the same batches and noise, trains the controls: `static` (one LoRA shared by all inputs) and
`per-class` (one LoRA per class label). `static` fitted on one condition's data is per-instance test-time training.
Shapes: B batch, C distinct conditions, K labels, E condition size, M target matrices, r rank, o / i rows / columns.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Literal

import torch
from torch import nn

from loragen import atomic
from loragen.adapters.adapter import Adapter
from loragen.adapters.batched import batched_lora, grouped_lora
from loragen.adapters.layout import LoraLayout
from loragen.conditions import ENCODERS, Condition, get_encoder
from loragen.errors import ConfigError, LoragenError
from loragen.generators.composer.context_batches import context_batch
from loragen.generators.composer.meta_generator import ATTENTIONS, MetaGenerator
from loragen.generators.composer.mlp_generator import MLPGenerator
from loragen.generators.composer.per_class_lora import PerClassLoRA
from loragen.generators.composer.static_lora import StaticLoRA
from loragen.training import train
from loragen.process_group import process_group

GENERATORS = ("transformer", "mlp", "static", "per-class")
CONFIG_FILE, WEIGHTS_FILE, STATE_FILE = "composer.json", "composer.safetensors", "train_state.safetensors"


@dataclass
class ComposerConfig:
    # Composer | the MLP ablation | the controls: one LoRA shared by all inputs, one LoRA per class (encoder "class")
    generator: Literal["transformer", "mlp", "static", "per-class"] = "transformer"
    attention: Literal["global-local", "standard"] = "global-local"  # meta-generator attention (meta_generator.py)
    rank: int = 8  # r of every W_Q / W_V update (Composer's default)
    width: int = 128  # D: meta-generator width (the MLP's hidden width)
    layers: int = 2  # meta-generator Transformer layers
    heads: int = 4  # meta-generator attention heads
    prompt_tokens: int = 4  # P: tokens the condition becomes
    context_share: float = 0.75  # context-aware batches: the share of a batch drawn from one class (Composer's α)
    steps: int = 1500  # optimiser steps
    batch_size: int = 64  # images per step
    lr: float = 1e-4  # AdamW learning rate, constant (Composer §4)
    weight_decay: float = 0.05  # AdamW weight decay (Composer §4)
    encoder: str = "class"  # condition encoder (loragen.conditions)
    checkpoint_every: int = 250  # steps between resumable training states
    seed: int = 0  # init, batches and noise

    def __post_init__(self):
        if self.generator not in GENERATORS:
            raise ConfigError(f"generator must be one of {GENERATORS}; found {self.generator!r}")
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"attention must be one of {ATTENTIONS}; found {self.attention!r}")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"encoder must be one of {ENCODERS}; found {self.encoder!r}")
        if self.generator == "per-class" and self.encoder != "class":
            raise ConfigError(f"the per-class generator indexes its table by class label and needs encoder 'class'; "
                              f"found {self.encoder!r}")
        if not 0.0 <= self.context_share <= 1.0:
            raise ConfigError(f"context_share must lie in [0, 1]; found {self.context_share}")
        for name in ("rank", "width", "layers", "heads", "prompt_tokens", "steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1; found {getattr(self, name)}")


def _network(config: ComposerConfig, weights_MOI: torch.Tensor, cond_dim: int) -> nn.Module:
    M, o, i = weights_MOI.shape
    if config.generator == "transformer":
        return MetaGenerator(weights_MOI, cond_dim, config.rank, config.width, config.layers, config.heads,
                             config.prompt_tokens, config.attention)
    if config.generator == "mlp":
        return MLPGenerator(M, o, i, cond_dim, config.rank, config.width)
    if config.generator == "per-class":
        return PerClassLoRA(cond_dim, M, o, i, config.rank)  # the class encoder's one-hot has one column per class
    return StaticLoRA(M, o, i, config.rank)


def target_weights(backbone: nn.Module, layout: LoraLayout) -> torch.Tensor:
    """(M, o, i) the pretrained target matrices; all must have one shape (the heads are shared by all blocks)."""
    named = dict(backbone.named_modules())
    shapes = {(m.out_features, m.in_features) for m in layout.modules}
    if len(shapes) != 1:
        raise ConfigError(f"Composer needs target matrices of one shape; found {sorted(shapes)}")
    return torch.stack([named[m.name].weight.detach() for m in layout.modules])


@torch.no_grad()
def sample_grouped(suite, backbone: nn.Module, layout: LoraLayout, tensors_C: dict[str, torch.Tensor],
                   group_B: torch.Tensor, labels_B: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
    """Sample with update group_B[b] (of the C in `tensors_C`) for sample b: the batch runs sorted by group through
    grouped LoRA (no per-sample copies of the updates), and the images come back in the order of `labels_B`."""
    order = torch.argsort(group_B, stable=True)
    counts = torch.bincount(group_B, minlength=len(next(iter(tensors_C.values())))).tolist()
    with grouped_lora(backbone, layout, tensors_C, counts):
        images = suite.sample(backbone, labels_B[order], steps, seed)
    return images[torch.argsort(order)]


class ComposerGenerator:
    """Per-condition low-rank updates of a frozen backbone's W_Q / W_V."""

    name = "composer"

    def __init__(self, config: ComposerConfig, layout: LoraLayout, net: nn.Module, suite_info: dict, cond_dim: int):
        self.config, self.layout, self.net, self.cond_dim = config, layout, net, cond_dim
        self.suite_info = suite_info  # {"name": ..., "config": ...}: the backbone this generator belongs to
        self.encoder = get_encoder(config.encoder, num_classes=suite_info.get("num_classes", 10))
        self.fit_summary: dict | None = None

    # ---- training -----------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, suite, config: ComposerConfig, backbone: nn.Module | None = None, out: str | Path | None = None,
            show: bool = True, labels: list[int] | None = None, desc: str | None = None) -> "ComposerGenerator":
        """Train on the suite's train split (only `labels`, if given: test-time training) with the frozen backbone.
        With `out`, the training state is saved every `checkpoint_every` steps, an interrupted fit resumes, and the
        finished generator is written there."""
        backbone = (backbone if backbone is not None else suite.base_model(show=show)).eval().requires_grad_(False)
        layout = LoraLayout.from_model(backbone, suite.target_modules, config.rank, alpha=float(config.rank))
        torch.manual_seed(config.seed)
        cond_KE = get_encoder(config.encoder, num_classes=suite.num_classes).encode(suite.label_conditions())
        gen = cls(config, layout, _network(config, target_weights(backbone, layout), cond_KE.shape[1]),
                  {"name": suite.name, "config": asdict(suite.config), "num_classes": suite.num_classes}, cond_KE.shape[1])
        data = suite.split("train")
        if labels is not None:
            keep = torch.isin(data.y, torch.tensor(labels))
            data = type(data)(data.x[keep], data.y[keep])
        opt = torch.optim.AdamW(gen.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)

        pg = process_group()  # several processes: each computes its slice of the batch drawn in every process

        def step_fn(step: int, g: torch.Generator) -> torch.Tensor:  # batch and noise from g: the same on resume
            idx = context_batch(data.y, config.batch_size, config.context_share, g)[pg.local(config.batch_size)]
            with gen.applied(backbone, cond_KE[data.y[idx]]):
                return suite.diffusion.training_loss(backbone, data.x[idx], data.y[idx], generator=pg.fork(g))

        state_path = Path(out) / STATE_FILE if out else None
        summary = train(desc or f"composer ({config.generator})", {"net": gen.net}, opt, config.steps, step_fn,
                        schedule="constant", state_path=state_path,
                        fingerprint={"config": asdict(config), "suite": gen.suite_info, "labels": labels},
                        checkpoint_every=config.checkpoint_every, seed=config.seed, clip=None, show=show)
        gen.finalize()
        gen.fit_summary = summary
        if out and pg.is_main:
            gen.save(out, overwrite=True)
            state_path.unlink(missing_ok=True)
        pg.barrier()  # the other processes return once the result is there
        return gen

    def finalize(self) -> None:
        """Inference form: the meta-generator keeps its stored tokens and drops the weight projection."""
        if isinstance(self.net, MetaGenerator):
            self.net.finalize()
        self.net.eval()

    # ---- composition --------------------------------------------------------------------------------------------
    def updates(self, cond_BE: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The update of each distinct condition, {"<module>.lora_A": (C, r, i), "<module>.lora_B": (C, o, r)}, and
        (B,) which of them each sample has: the network runs once per distinct condition (C ≤ B)."""
        unique_CE, group_B = torch.unique(cond_BE, dim=0, return_inverse=True)
        a_CMri, b_CMor = self.net(unique_CE)
        out = {}
        for k, m in enumerate(self.layout.modules):
            out[f"{m.name}.lora_A"], out[f"{m.name}.lora_B"] = a_CMri[:, k], b_CMor[:, k]
        return out, group_B

    def tensors(self, cond_BE: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample adapter tensors {"<module>.lora_A": (B, r, i), "<module>.lora_B": (B, o, r)}; samples of one
        condition share its pair."""
        per_condition, group_B = self.updates(cond_BE)
        return {k: v[group_B] for k, v in per_condition.items()}

    def encode(self, conditions: list[Condition]) -> torch.Tensor:
        return self.encoder.encode(conditions)

    @contextlib.contextmanager
    def applied(self, backbone: nn.Module, cond_BE: torch.Tensor) -> Iterator[nn.Module]:
        """`with gen.applied(backbone, cond_BE): backbone(x_B...)` runs sample b under its condition's update."""
        with batched_lora(backbone, self.layout, self.tensors(cond_BE)):
            yield backbone

    @torch.no_grad()
    def sample(self, suite, backbone: nn.Module, labels_B: torch.Tensor, steps: int = 50, seed: int = 0) -> torch.Tensor:
        """Images (B, ...) for class labels: (A, B) once per distinct label, reused over all `steps` DDIM steps."""
        conditions = suite.label_conditions()
        tensors_C, group_B = self.updates(self.encode([conditions[int(y)] for y in labels_B]))
        return sample_grouped(suite, backbone, self.layout, tensors_C, group_B, labels_B, steps, seed)

    @torch.no_grad()
    def adapters(self, conditions: list[Condition]) -> list[Adapter]:
        """One Adapter (a PEFT folder when saved) per condition: its W_Q / W_V update for the backbone."""
        t = self.tensors(self.encode(conditions))
        return [Adapter(self.layout, {k: v[n].clone() for k, v in t.items()},
                        {"task": c.task, "generator": f"{self.name}-{self.config.generator}"}) for n, c in enumerate(conditions)]

    # ---- persistence --------------------------------------------------------------------------------------------
    def save(self, path: str | Path, overwrite: bool = False) -> None:
        """Write composer.json + composer.safetensors into `path` (the inference form)."""
        path = Path(path)
        if (path / WEIGHTS_FILE).exists() and not overwrite:
            raise LoragenError(f"{path} already holds a generator; pass overwrite=True (CLI: --overwrite)")
        self.finalize()
        atomic.save_safetensors(path / WEIGHTS_FILE, self.net.state_dict())
        atomic.write_json(path / CONFIG_FILE, {"generator": self.name, "config": asdict(self.config), "suite": self.suite_info,
                                               "layout": self.layout.to_dict(), "cond_dim": self.cond_dim,
                                               "fit_summary": self.fit_summary})

    @classmethod
    def load(cls, path: str | Path) -> "ComposerGenerator":
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise LoragenError(f"expected a trained Composer generator ({CONFIG_FILE}, {WEIGHTS_FILE}) in {path}; found none")
        meta = json.loads((path / CONFIG_FILE).read_text())
        if meta.get("generator") != cls.name:
            raise LoragenError(f"{path} holds a {meta.get('generator')!r} generator, not a Composer one")
        saved = dict(meta["config"])
        if "alpha" in saved:  # written before context_share was named so
            saved["context_share"] = saved.pop("alpha")
        config, layout = ComposerConfig(**saved), LoraLayout.from_dict(meta["layout"])
        m = layout.modules[0]
        net = _network(config, torch.zeros(len(layout.modules), m.out_features, m.in_features), meta["cond_dim"])
        gen = cls(config, layout, net, meta["suite"], meta["cond_dim"])
        gen.finalize()
        net.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        gen.fit_summary = meta.get("fit_summary")
        return gen
