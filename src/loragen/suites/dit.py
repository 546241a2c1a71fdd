"""A tiny class-conditional DiT (Peebles & Xie 2023): patchify, adaLN-Zero blocks, attention with Q/K/V projections.

The network is pure: `forward(x_t, t, y)` predicts the noise ε. Q, K and V are separate nn.Linear modules
(`blocks.<i>.attn.q`, `.k`, `.v`) so that a LoRA layout can target W_Q and W_V by name.
Shapes: B batch, C image channels, S image side (H = W = S), p patch side, N = (S/p)² tokens, D width, h heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from loragen.errors import ConfigError


@dataclass(frozen=True)
class DiTConfig:
    image_size: int = 8  # S: side of the square input
    channels: int = 1  # C: image channels
    patch: int = 2  # p: patch side; N = (S / p)² tokens
    width: int = 128  # D: token width
    depth: int = 4  # number of DiT blocks
    heads: int = 4  # h: attention heads
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio · D
    num_classes: int = 10  # class labels 0 … num_classes − 1

    def __post_init__(self):
        if self.image_size % self.patch:
            raise ConfigError(f"image_size must be a multiple of patch; found {self.image_size} and {self.patch}")
        if self.width % self.heads:
            raise ConfigError(f"width must be a multiple of heads; found {self.width} and {self.heads}")

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch) ** 2


DIT_SIZES = {
    "tiny": DiTConfig(width=32, depth=2, heads=2, mlp_ratio=2),  # tests: seconds
    "small": DiTConfig(),  # the suite's backbone: 1.2 M parameters
}


def modulate(x_BND: torch.Tensor, shift_BD: torch.Tensor, scale_BD: torch.Tensor) -> torch.Tensor:
    return x_BND * (1 + scale_BD[:, None]) + shift_BD[:, None]


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.proj = nn.Linear(width, width)

    def forward(self, x_BND: torch.Tensor, mask_NN: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention; `mask_NN` (True = may attend), e.g. VAR's block-causal mask, or None for full attention."""
        B, N, D = x_BND.shape
        split = lambda t: t.view(B, N, self.heads, D // self.heads).transpose(1, 2)  # noqa: E731 (B, h, N, D/h)
        o = F.scaled_dot_product_attention(split(self.q(x_BND)), split(self.k(x_BND)), split(self.v(x_BND)),
                                           attn_mask=mask_NN)
        return self.proj(o.transpose(1, 2).reshape(B, N, D))


class DiTBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)  # adaLN-Zero: every block starts as the identity
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x_BND: torch.Tensor, c_BD: torch.Tensor, mask_NN: torch.Tensor | None = None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c_BD).chunk(6, -1)
        x_BND = x_BND + gate1[:, None] * self.attn(modulate(self.norm1(x_BND), shift1, scale1), mask_NN)
        return x_BND + gate2[:, None] * self.mlp(modulate(self.norm2(x_BND), shift2, scale2))


class DiT(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.config = cfg = config
        D = cfg.width
        self.patchify = nn.Conv2d(cfg.channels, D, cfg.patch, stride=cfg.patch)
        self.pos = nn.Parameter(0.02 * torch.randn(1, cfg.tokens, D))  # learned position embedding
        self.time_proj = Timesteps(D, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(D, D)
        self.class_embed = nn.Embedding(cfg.num_classes, D)
        nn.init.normal_(self.class_embed.weight, std=0.02)
        self.blocks = nn.ModuleList([DiTBlock(D, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.final_norm = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))
        self.final = nn.Linear(D, cfg.patch * cfg.patch * cfg.channels)
        for layer in (self.final_ada[1], self.final):  # zero-out the output layers: the model starts predicting ε = 0
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x_BCSS: torch.Tensor, t_B: torch.Tensor, y_B: torch.Tensor) -> torch.Tensor:
        """Predicted noise ε (B, C, S, S) for noisy images x_t at timesteps t under class labels y."""
        cfg = self.config
        B, g = len(x_BCSS), cfg.image_size // cfg.patch
        x = self.patchify(x_BCSS).flatten(2).transpose(1, 2) + self.pos  # (B, N, D)
        c = self.time_embed(self.time_proj(t_B).to(x.dtype)) + self.class_embed(y_B)  # (B, D)
        for block in self.blocks:
            x = block(x, c)
        shift, scale = self.final_ada(c).chunk(2, -1)
        x = self.final(modulate(self.final_norm(x), shift, scale))  # (B, N, p·p·C)
        x = x.view(B, g, g, cfg.patch, cfg.patch, cfg.channels)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(B, cfg.channels, cfg.image_size, cfg.image_size)
