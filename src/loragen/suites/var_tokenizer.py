"""The multi-scale residual VQ tokenizer of VAR (Tian et al. 2024, §3.2 and Algorithm 1), sized for 16×16 digits.

An image is encoded to a latent f (C channels, H×H), then quantized scale by scale with one shared codebook:
for scale k of side p_k, z_k = area-downsample(f − f̂, p_k); r_k = nearest codes of z_k; h_k = φ_k(upsample(e[r_k], H));
f̂ += h_k. φ_k(h) = ½h + ½conv3×3(h) refines each scale's contribution (VAR's φ). After the last scale (p_K = H) f̂ is
decoded. The training loss is the reconstruction MSE of decode(f̂) (straight-through: gradients reach the encoder
as if f̂ were f) plus the VQ codebook and commitment terms at every scale (β = 0.25, as VQ-VAE / VAR).
Written by hand: no maintained library has VAR's multi-scale quantizer.
Shapes: B batch, S = 16 image side, C latent channels, H latent side, V codebook size, K scales, p_k scale side,
L = Σ p_k² tokens of all scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TokenizerConfig:
    channels: int = 16  # C: latent channels (VAR's Cvae)
    codebook: int = 128  # V: codes shared by every scale
    scales: tuple[int, ...] = (1, 2, 3, 4, 6, 8)  # p_k, coarse to fine; the last is the latent side H
    hidden: int = 64  # width of the conv encoder / decoder
    beta: float = 0.25  # commitment weight

    def __post_init__(self):
        if list(self.scales) != sorted(set(self.scales)) or self.scales[0] != 1:
            raise ValueError(f"scales must rise strictly from 1; found {self.scales}")

    @property
    def tokens(self) -> int:
        """L: tokens of all scales together."""
        return sum(p * p for p in self.scales)


class Phi(nn.Module):
    """φ(h) = ½h + ½conv3×3(h): VAR's refinement of one scale's upsampled codes."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h_BCHH: torch.Tensor) -> torch.Tensor:
        return 0.5 * h_BCHH + 0.5 * self.conv(h_BCHH)


class MultiScaleVQ(nn.Module):
    """Encoder, shared codebook, per-scale φ and decoder; images in [-1, 1] of side S = 2H."""

    def __init__(self, config: TokenizerConfig = TokenizerConfig()):
        super().__init__()
        self.config = c = config
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c.hidden // 2, 3, padding=1), nn.GELU(),
            nn.Conv2d(c.hidden // 2, c.hidden, 4, stride=2, padding=1), nn.GELU(),  # S -> H = S/2
            nn.Conv2d(c.hidden, c.hidden, 3, padding=1), nn.GELU(),
            nn.Conv2d(c.hidden, c.channels, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(c.channels, c.hidden, 3, padding=1), nn.GELU(),
            nn.Conv2d(c.hidden, c.hidden, 3, padding=1), nn.GELU(),
            nn.ConvTranspose2d(c.hidden, c.hidden // 2, 4, stride=2, padding=1), nn.GELU(),  # H -> S
            nn.Conv2d(c.hidden // 2, 1, 3, padding=1))
        self.codebook = nn.Embedding(c.codebook, c.channels)
        nn.init.uniform_(self.codebook.weight, -1.0 / c.codebook, 1.0 / c.codebook)  # VAR's init
        self.phi = nn.ModuleList(Phi(c.channels) for _ in c.scales)

    @property
    def side(self) -> int:
        """H: the latent side, the last scale."""
        return self.config.scales[-1]

    def nearest(self, z_BCpp: torch.Tensor) -> torch.Tensor:
        """(B, p·p) indices of the nearest codes (Euclidean) to each latent vector."""
        z = z_BCpp.permute(0, 2, 3, 1).flatten(1, 2)  # (B, p·p, C)
        e = self.codebook.weight  # (V, C)
        d = z.pow(2).sum(-1, keepdim=True) - 2 * z @ e.T + e.pow(2).sum(-1)  # (B, p·p, V)
        return d.argmin(-1)

    def scale_contribution(self, k: int, idx_BN: torch.Tensor) -> torch.Tensor:
        """h_k = φ_k(upsample(e[r_k], H)): what scale k's codes (B, p_k²) add to f̂, (B, C, H, H)."""
        p = self.config.scales[k]
        e = self.codebook(idx_BN).transpose(1, 2).reshape(len(idx_BN), -1, p, p)  # (B, C, p, p)
        up = F.interpolate(e, size=(self.side, self.side), mode="bicubic") if p != self.side else e
        return self.phi[k](up)

    def quantize(self, f_BCHH: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Multi-scale residual quantization (VAR Algorithm 1): f̂ (B, C, H, H), the codes of every scale
        [(B, p_k²)] and the VQ loss (codebook + β·commitment, summed over scales)."""
        f_rest, f_hat, codes, vq = f_BCHH, torch.zeros_like(f_BCHH), [], f_BCHH.new_zeros(())
        for k, p in enumerate(self.config.scales):
            z = F.interpolate(f_rest, size=(p, p), mode="area") if p != self.side else f_rest  # (B, C, p, p)
            idx = self.nearest(z.detach())
            e = self.codebook(idx).transpose(1, 2).reshape_as(z)
            vq = vq + F.mse_loss(e, z.detach()) + self.config.beta * F.mse_loss(z, e.detach())
            h = self.scale_contribution(k, idx)
            f_hat, f_rest = f_hat + h, f_rest - h.detach()
            codes.append(idx)
        return f_hat, codes, vq / len(self.config.scales)

    def forward(self, x_B1SS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction (B, 1, S, S) and the training loss (MSE + VQ)."""
        f = self.encoder(x_B1SS)
        f_hat, _, vq = self.quantize(f)
        f_ste = f + (f_hat - f.detach())  # straight-through: decoder gradients reach the encoder through f
        recon = self.decoder(f_ste)
        return recon, F.mse_loss(recon, x_B1SS) + vq

    @torch.no_grad()
    def encode(self, x_B1SS: torch.Tensor) -> list[torch.Tensor]:
        """The codes of every scale, [(B, p_k²)], coarse to fine."""
        return self.quantize(self.encoder(x_B1SS))[1]

    @torch.no_grad()
    def decode(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """Images (B, 1, S, S) in [-1, 1] from the codes of every scale."""
        return self.decoder(sum(self.scale_contribution(k, idx) for k, idx in enumerate(codes))).clamp(-1.0, 1.0)

    @torch.no_grad()
    def teacher_inputs(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """(B, L − 1, C) transformer inputs for scales 2..K: the running f̂ after scales < k, area-downsampled to
        p_k (VAR's idxBl_to_var_input); scale 1's input is the class token, so it has none here."""
        f_hat, out = None, []
        for k in range(len(self.config.scales) - 1):
            h = self.scale_contribution(k, codes[k])
            f_hat = h if f_hat is None else f_hat + h
            out.append(self.next_input(f_hat, k + 1))
        return torch.cat(out, 1)

    def next_input(self, f_hat_BCHH: torch.Tensor, k: int) -> torch.Tensor:
        """(B, p_k², C): the running f̂ area-downsampled to scale k, as token vectors."""
        p = self.config.scales[k]
        z = F.interpolate(f_hat_BCHH, size=(p, p), mode="area") if p != self.side else f_hat_BCHH
        return z.flatten(2).transpose(1, 2)
