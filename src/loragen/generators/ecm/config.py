"""Settings of a control module trained on the digits-control backbone: ECM, its ablations, or the full fine-tune."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

from loragen.errors import ConfigError
from loragen.suites.spatial_controls import CONTROLS

METHODS = ("ecm", "full_finetune")
SCALE_SAMPLINGS = ("early", "uniform")
CUTS_PER = ("batch", "sample")
SCALE_WEIGHTINGS = ("none", "inverse")
MAX_DECAY = 2.0  # early_decay's upper bound: at 2 the last scale is cut in half the images (K = 6)


@dataclass(frozen=True)
class ECMConfig:
    control: Literal["edges", "mask"] = "edges"  # the spatial control the module follows
    method: Literal["ecm", "full_finetune"] = "ecm"  # ecm: adapters on the frozen backbone; full_finetune: the whole
    # backbone trained with control tokens added to its input (ControlVAR-style baseline)
    adapters: int = 3  # ECM adapter blocks, spread evenly over the backbone's blocks
    width: int = 32  # Da: adapter and control-feature width
    heads: int = 2  # attention heads of an adapter block
    ffn_ratio: int = 4  # FFN hidden width = ffn_ratio · Da
    shared_ffn: bool = True  # one FFN for every adapter block with layer-specific gates; False: one FFN per block
    encoder_width: int = 16  # hidden channels of the control encoder (a small CNN over the control map)
    scale_sampling: Literal["early", "uniform"] = "early"  # early: each step trains on the scales up to a random last
    # scale, biased to early ones (ECM's early-centric sampling); uniform: every scale in every step (all L tokens)
    early_decay: float = 1.4  # early-centric sampling: P(last scale = k) ∝ early_decay^k, k = 0 … K − 1 (1.0: every
    # cut equally likely, so scale k is trained in a share (K − k) / K of the sequences; above 1, late cuts are likelier,
    # but each scale is still trained in fewer sequences than the one before it); 1.4: benchmarks/ecm.py's choice on
    # validation (docs/ecm.md: 66 of 130 tokens a sequence, a step ~32% faster than uniform sampling's)
    cut_per: Literal["batch", "sample"] = "sample"  # early-centric sampling draws one last scale per image (the batch
    # runs as one forward pass per distinct cut, so late scales get a few images in every step) or one for the whole
    # batch (late scales get a whole batch in a few steps); the bench chooses it
    scale_weighting: Literal["none", "inverse"] = "none"  # early-centric sampling: "none" averages the loss over the
    # tokens a step saw; "inverse" weights a scale-s token by 1 / P(the cut keeps scale s) and divides by the full
    # sequence length, so a step's loss is an unbiased estimate of uniform sampling's (late scales count as much as
    # there, from fewer tokens); the bench chooses it
    steps: int = 1500  # optimiser steps
    batch_size: int = 32  # images per step
    lr: float = 1e-2  # AdamW learning rate, cosine-decayed to 0 (benchmarks/ecm.py's choice on validation; 3e-2 diverges)
    augment: float = 0.5  # strength of the random affine warp of training images (DigitsControlConfig.augment);
    # the bench chooses it on validation
    class_dropout: float = 0.1  # labels dropped to the null class, as the backbone was trained (guidance keeps working)
    seed: int = 0

    def __post_init__(self):
        if self.control not in CONTROLS:
            raise ConfigError(f"control must be one of {CONTROLS}; found {self.control!r}")
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}; found {self.method!r}")
        if self.scale_sampling not in SCALE_SAMPLINGS:
            raise ConfigError(f"scale_sampling must be one of {SCALE_SAMPLINGS}; found {self.scale_sampling!r}")
        if self.cut_per not in CUTS_PER:
            raise ConfigError(f"cut_per must be one of {CUTS_PER}; found {self.cut_per!r}")
        if self.scale_weighting not in SCALE_WEIGHTINGS:
            raise ConfigError(f"scale_weighting must be one of {SCALE_WEIGHTINGS}; found {self.scale_weighting!r}")
        if self.adapters < 1 or self.width % self.heads:
            raise ConfigError(f"expected adapters >= 1 and width a multiple of heads; found {self.adapters}, "
                              f"{self.width}, {self.heads}")
        if not 0.0 < self.early_decay <= MAX_DECAY:
            raise ConfigError(f"early_decay must lie in (0, {MAX_DECAY:g}]; found {self.early_decay}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)
