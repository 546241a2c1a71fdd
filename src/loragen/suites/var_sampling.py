"""Next-scale sampling of a VAR model (Tian et al. 2024, §3.2): scale by scale, all of a scale's tokens at once.

At scale k the model sees the start token and the running f̂ of scales < k; the codes of scale k are drawn from its
logits after (1) classifier-free guidance, ramped linearly from 0 at the first scale to `guidance` at the last as in
VAR's sampler: logits = (1 + w_k)·cond − w_k·uncond; (2) the scale's temperature; (3) top-k and top-p filtering
(transformers' logits warpers). The drawn codes' contribution is added to f̂ and the next scale's input is read from
it. Without a KV cache the prefix is recomputed at each scale (Σ_k prefix_k token passes): at L = 130 this is cheap,
and a control module wrapped around the backbone is timed under the same loop.
Shapes: B batch, T prefix tokens, C latent channels, V codebook size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from loragen.suites.var import prefix_lengths
from loragen.suites.var_tokenizer import MultiScaleVQ

# (inputs (2B, T − 1, C), labels (2B,)) -> logits (2B, T, V); rows B.. carry the null class (the unguided branch)
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplingConfig:
    guidance: float = 1.5  # classifier-free guidance weight at the last scale (0 at the first, linear between)
    top_k: int = 0  # keep the k most likely codes (0: all)
    top_p: float = 1.0  # keep the smallest set of codes with this much probability (1.0: all)
    temperatures: tuple[float, ...] | float = 1.0  # one per scale, or one for all

    def __post_init__(self):
        if self.guidance < 0 or self.top_k < 0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"expected guidance >= 0, top_k >= 0 and top_p in (0, 1]; found {self.guidance}, "
                             f"{self.top_k}, {self.top_p}")
        temps = self.temperatures if isinstance(self.temperatures, tuple) else (self.temperatures,)
        if min(temps) <= 0:
            raise ValueError(f"temperatures must be > 0; found {self.temperatures}")

    def temperature(self, k: int, scales: int) -> float:
        if isinstance(self.temperatures, tuple):
            if len(self.temperatures) != scales:
                raise ValueError(f"expected one temperature per scale ({scales}); found {len(self.temperatures)}")
            return self.temperatures[k]
        return self.temperatures


def temperature_schedule(scales: int, early: float, late: float, switch: int) -> tuple[float, ...]:
    """ECM's inference schedule: temperature `early` for scales < `switch`, `late` from there on."""
    return tuple(early if k < switch else late for k in range(scales))


@torch.no_grad()
def sample_codes(model: ModelFn, tokenizer: MultiScaleVQ, labels_B: torch.Tensor, null_class: int,
                 config: SamplingConfig = SamplingConfig(), generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The codes of every scale [(B, p_k²)] drawn from `model` for class labels (decode them with the tokenizer)."""
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    scales, B = tokenizer.config.scales, len(labels_B)
    starts = prefix_lengths(scales)
    labels = torch.cat([labels_B, torch.full_like(labels_B, null_class)])  # (2B,): guided | unguided
    C, H = tokenizer.config.channels, tokenizer.side
    inputs = torch.zeros(2 * B, 0, C)
    f_hat, codes = torch.zeros(B, C, H, H), []
    for k in range(len(scales)):
        logits = model(inputs, labels)[:, starts[k] : starts[k + 1]]  # (2B, p², V)
        cond, uncond = logits.chunk(2)
        w = config.guidance * k / max(len(scales) - 1, 1)
        scores = ((1 + w) * cond - w * uncond).flatten(0, 1) / config.temperature(k, len(scales))  # (B·p², V)
        if config.top_k:
            scores = TopKLogitsWarper(config.top_k)(None, scores)
        if config.top_p < 1.0:
            scores = TopPLogitsWarper(config.top_p)(None, scores)
        idx = torch.multinomial(scores.softmax(-1), 1, generator=generator).view(B, -1)  # (B, p²)
        codes.append(idx)
        f_hat = f_hat + tokenizer.scale_contribution(k, idx)
        if k + 1 < len(scales):
            nxt = tokenizer.next_input(f_hat, k + 1)  # (B, p_{k+1}², C)
            inputs = torch.cat([inputs, torch.cat([nxt, nxt])], 1)
    return codes
