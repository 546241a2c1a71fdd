"""Conditional latent denoiser: predicts the noise, the clean latent or v from (z_t, t, condition).

A residual MLP over the latent vector (the latent has no spatial order worth convolving). The timestep embedding
(diffusers' sinusoidal Timesteps + TimestepEmbedding) and the projected condition are added, as Wild-P-Diff adds its
CLIP condition to the timestep embedding, and modulate each block through adaLN (DiT).
Shapes: B batch, D latent size, E condition size, W width.
"""

from __future__ import annotations

import torch
from torch import nn


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width))
        self.ada = nn.Linear(width, 3 * width)
        nn.init.zeros_(self.ada.weight)  # zero-init adaLN: each block starts as the identity (DiT)
        nn.init.zeros_(self.ada.bias)

    def forward(self, h_BW: torch.Tensor, emb_BW: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(emb_BW).chunk(3, -1)
        return h_BW + gate * self.mlp(self.norm(h_BW) * (1 + scale) + shift)


class LatentDenoiser(nn.Module):
    def __init__(self, latent_dim: int, cond_dim: int, width: int = 256, depth: int = 4, cond_dropout: float = 0.0):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(width, width)
        self.cond_embed = nn.Sequential(nn.Linear(cond_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(latent_dim, width)
        self.blocks = nn.ModuleList([_Block(width) for _ in range(depth)])
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, latent_dim)
        self.act = nn.SiLU()

    def forward(self, z_BD: torch.Tensor, t_B: torch.Tensor, cond_BE: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(self.time_proj(t_B).to(z_BD.dtype)) + self.cond_embed(cond_BE)  # (B, W)
        emb = self.act(emb)
        h = self.inp(z_BD)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(self.out_norm(h))  # (B, D) predicted ε, z_0 or v
