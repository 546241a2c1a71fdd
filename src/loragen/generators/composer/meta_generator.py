"""Composer's meta-generator: a Transformer that maps a condition to low-rank updates W' = W + A·B of target matrices.

Tokens (Composer §3, "Transformer Meta-Parameter Generator"):
1. P prompt tokens: a learned linear map of the condition embedding (a class one-hot here, a text embedding would do).
2. M blocks of 2r component tokens, one block per target matrix (W_Q, W_V of every attention layer). The initial
   tokens are a learned linear projection of the pretrained weight: L · W · R, with L (2r, o) and R (i, D). It is
   bilinear in its factors and linear in W, and it has (2r·o + i·D) parameters (18 K on digits-gen); a dense map from
   o·i to 2r·D would have 34 M per matrix there. Learned block and slot embeddings are added.
3. Attention ("global-local"): prompt tokens attend to prompt tokens only. A component token attends to every prompt
   token and to the tokens of its own block. The first token of each block also attends to the first tokens of all
   the other blocks. "standard" lets every token attend to every other (the ablation).
4. Heads, shared by all blocks: the first r output tokens of a block are the rows of A (r, i), and the last r are the
   columns of B (o, r). Head B starts at zero, so W' = W at the start of training.
At inference `finalize()` stores the initial tokens and drops the projection and the copy of the weights: only the
stored tokens are needed.
The paper writes W' = W + A·B; we store the update as PEFT does, ΔW = B_peft · A_peft (o, i), with A_peft (r, i) and
B_peft (o, r).
Shapes: C conditions, E condition size, P prompt tokens, M blocks (target matrices), r rank, T = 2r tokens per block,
L = P + M·T sequence length, D model width, o / i rows / columns of a target matrix.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from loragen.errors import ConfigError

ATTENTIONS = ("global-local", "standard")


def attention_mask(prompt: int, blocks: int, per_block: int, kind: Literal["global-local", "standard"]) -> torch.Tensor:
    """(L, L) bool, True where attention is *blocked* (PyTorch's convention for a boolean src_mask)."""
    if kind not in ATTENTIONS:
        raise ConfigError(f"attention must be one of {ATTENTIONS}; found {kind!r}")
    n = prompt + blocks * per_block
    if kind == "standard":
        return torch.zeros(n, n, dtype=torch.bool)
    block = torch.full((n,), -1)
    block[prompt:] = torch.arange(blocks).repeat_interleave(per_block)  # (L,) block id, −1 for prompt tokens
    first = torch.zeros(n, dtype=torch.bool)
    first[prompt::per_block] = True  # (L,) first token of each block
    allowed = block[:, None] == block[None, :]  # prompt ↔ prompt, and within a block
    allowed[prompt:, :prompt] = True  # component tokens read every prompt token
    allowed |= first[:, None] & first[None, :]  # first tokens across blocks
    return ~allowed


class MetaGenerator(nn.Module):
    """Transformer meta-generator; `forward(cond_CE)` -> A (C, M, r, i), B (C, M, o, r)."""

    def __init__(self, weights_MOI: torch.Tensor, cond_dim: int, rank: int, width: int = 128, layers: int = 2,
                 heads: int = 4, prompt_tokens: int = 4, attention: str = "global-local"):
        super().__init__()
        M, o, i = weights_MOI.shape
        self.rank, self.prompt_tokens, self.blocks = rank, prompt_tokens, M
        T, D = 2 * rank, width
        self.prompt = nn.Linear(cond_dim, prompt_tokens * D)  # the condition's prompt tokens
        self.prompt_pos = nn.Parameter(0.02 * torch.randn(prompt_tokens, D))
        # 2. the projection of the pretrained weights; dropped by finalize()
        self.register_buffer("weights_MOI", weights_MOI.detach().clone(), persistent=True)
        self.proj_left = nn.Parameter(torch.randn(T, o) / math.sqrt(o))  # L (T, o)
        self.proj_right = nn.Parameter(torch.randn(i, D) / math.sqrt(i))  # R (i, D)
        self.block_pos = nn.Parameter(0.02 * torch.randn(M, 1, D))
        self.slot_pos = nn.Parameter(0.02 * torch.randn(1, T, D))
        self.register_buffer("mask", attention_mask(prompt_tokens, M, T, attention), persistent=False)
        layer = nn.TransformerEncoderLayer(D, heads, 4 * D, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(D)
        self.head_a, self.head_b = nn.Linear(D, i), nn.Linear(D, o)
        # A starts at the scale of PEFT's LoRA init (uniform ±1/√i, std 1/√(3i)) for unit-variance tokens
        nn.init.normal_(self.head_a.weight, std=1.0 / math.sqrt(3 * i * D))
        nn.init.zeros_(self.head_a.bias)
        nn.init.zeros_(self.head_b.weight)  # B = 0: W' = W at the start
        nn.init.zeros_(self.head_b.bias)

    @property
    def finalized(self) -> bool:
        return not hasattr(self, "proj_left")

    def initial_tokens(self) -> torch.Tensor:
        """(M, T, D): the stored tokens after finalize(), else L · W · R + embeddings."""
        if self.finalized:
            return self.tokens_MTD
        return self.proj_left @ self.weights_MOI @ self.proj_right + self.block_pos + self.slot_pos

    @torch.no_grad()
    def finalize(self) -> None:
        """Inference form: store the initial tokens; drop the projection and the copy of the pretrained weights."""
        if self.finalized:
            return
        tokens = self.initial_tokens().detach().clone()
        for name in ("proj_left", "proj_right", "block_pos", "slot_pos"):
            delattr(self, name)
        del self.weights_MOI
        self.register_buffer("tokens_MTD", tokens)

    def forward(self, cond_CE: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        C, r = len(cond_CE), self.rank
        prompt = self.prompt(cond_CE).view(C, self.prompt_tokens, -1) + self.prompt_pos  # (C, P, D)
        tokens = self.initial_tokens()  # (M, T, D)
        comp = tokens.flatten(0, 1).expand(C, -1, -1)  # (C, M·T, D)
        h = self.transformer(torch.cat([prompt, comp], 1), mask=self.mask)  # (C, L, D)
        h = self.norm(h[:, self.prompt_tokens :]).view(C, self.blocks, 2 * r, -1)  # (C, M, T, D)
        a = self.head_a(h[:, :, :r])  # (C, M, r, i)
        b = self.head_b(h[:, :, r:]).transpose(-1, -2)  # (C, M, o, r)
        return a, b
