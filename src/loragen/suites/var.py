"""A tiny class-conditional VAR transformer (Tian et al. 2024): next-scale prediction over the multi-scale VQ codes.

The sequence is the K scales' tokens, coarse to fine (L = Σ p_k² tokens). Its first token is the start token (class
embedding + a learned start position); the inputs of scale k > 1 are the running f̂ after scales < k, area-downsampled
to p_k (MultiScaleVQ.teacher_inputs), embedded by a linear layer. Every token gets a learned position and a learned
level (scale) embedding. A block-causal mask lets a token attend to every token of its own and earlier scales, so
the logits of a prefix of whole scales do not depend on what follows it: training on such a prefix is exact (ECM's
early-centric sampling relies on this). Blocks are the DiT's adaLN-Zero blocks, conditioned on the class embedding;
the label `num_classes` is the null class that training drops labels to (class dropout) for classifier-free guidance.
The network is pure; `embed`, the blocks and `logits` are public so that a control module can run the backbone
block by block and add to its token stream.
Shapes: B batch, T ≤ L tokens of a prefix of whole scales, C latent channels, D width, V codebook size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from loragen.errors import ConfigError
from loragen.suites.dit import DiTBlock, modulate
from loragen.suites.var_tokenizer import TokenizerConfig


@dataclass(frozen=True)
class VARConfig:
    width: int = 96  # D: token width
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio · D
    num_classes: int = 10  # labels 0 … num_classes − 1; num_classes itself is the null class

    def __post_init__(self):
        if self.width % self.heads:
            raise ConfigError(f"width must be a multiple of heads; found {self.width} and {self.heads}")


def block_causal_mask(scales: tuple[int, ...]) -> torch.Tensor:
    """(L, L) bool, True where token i may attend token j: j's scale is i's or an earlier one."""
    level = scale_levels(scales)
    return level[None, :] <= level[:, None]


def scale_levels(scales: tuple[int, ...]) -> torch.Tensor:
    """(L,) the scale index of every token."""
    return torch.cat([torch.full((p * p,), k) for k, p in enumerate(scales)])


def prefix_lengths(scales: tuple[int, ...]) -> list[int]:
    """[0, p_1², p_1² + p_2², …, L]: where each scale's tokens start (and the last entry, where they end)."""
    out = [0]
    for p in scales:
        out.append(out[-1] + p * p)
    return out


class VAR(nn.Module):
    def __init__(self, config: VARConfig, tokenizer: TokenizerConfig):
        super().__init__()
        self.config, self.scales = config, tokenizer.scales
        D, L = config.width, tokenizer.tokens
        self.class_embed = nn.Embedding(config.num_classes + 1, D)  # + the null class of guidance
        self.start_pos = nn.Parameter(0.02 * torch.randn(1, 1, D))
        self.word_embed = nn.Linear(tokenizer.channels, D)
        self.pos = nn.Parameter(0.02 * torch.randn(1, L, D))
        self.level_embed = nn.Embedding(len(tokenizer.scales), D)
        nn.init.normal_(self.class_embed.weight, std=0.02)
        nn.init.normal_(self.level_embed.weight, std=0.02)
        self.register_buffer("levels", scale_levels(tokenizer.scales), persistent=False)  # (L,)
        self.register_buffer("mask", block_causal_mask(tokenizer.scales), persistent=False)  # (L, L)
        self.blocks = nn.ModuleList(DiTBlock(D, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))
        nn.init.zeros_(self.final_ada[1].weight)  # adaLN-Zero for the output norm too
        nn.init.zeros_(self.final_ada[1].bias)
        self.head = nn.Linear(D, tokenizer.codebook)

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def embed(self, inputs_BTC: torch.Tensor, labels_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token stream (B, T, D) of the start token and inputs_BTC (B, T − 1, C), and the condition (B, D)."""
        c = self.class_embed(labels_B)  # (B, D)
        h = torch.cat([c[:, None] + self.start_pos, self.word_embed(inputs_BTC)], 1)  # (B, T, D)
        T = h.shape[1]
        return h + self.pos[:, :T] + self.level_embed(self.levels[:T]), c

    def attn_mask(self, T: int) -> torch.Tensor:
        """(T, T): the block-causal mask of a prefix of T tokens."""
        return self.mask[:T, :T]

    def logits(self, h_BTD: torch.Tensor, c_BD: torch.Tensor) -> torch.Tensor:
        """(B, T, V) next-code logits from the last block's token stream."""
        shift, scale = self.final_ada(c_BD).chunk(2, -1)
        return self.head(modulate(self.final_norm(h_BTD), shift, scale))

    def forward(self, inputs_BTC: torch.Tensor, labels_B: torch.Tensor) -> torch.Tensor:
        """(B, T, V) logits of the codes of a prefix of whole scales, T = 1 + inputs' length."""
        h, c = self.embed(inputs_BTC, labels_B)
        mask = self.attn_mask(h.shape[1])
        for block in self.blocks:
            h = block(h, c, mask)
        return self.logits(h, c)
