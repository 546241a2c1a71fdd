"""1-D convolutional parameter autoencoder (p-diff / Cond P-Diff §3.2) with noise augmentation.

The flat parameter vector is treated as a 1-channel sequence. A first Conv1d with kernel = stride = `patch` cuts it
into non-overlapping patches (a full-resolution conv costs ~200 ms a step on 2 CPU cores for a 2.6k vector; this one
~10 ms), strided Conv1d blocks downsample further, a linear layer maps to the latent; the decoder mirrors this with
ConvTranspose1d. Gaussian noise on the input and on the latent during
training (p-diff: σ_in = 0.001, σ_z = 0.1) makes the decoder robust to the imperfect latents diffusion produces. The
latent is RMS-normalised per sample so that σ_z is relative to its scale: without it the encoder grows latents to
~6 and a noise of 0.1 no longer teaches the decoder anything.
Shapes: B batch, P parameters, P' = P padded to a multiple of patch·2^L, C channels, D latent size.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _block(conv: nn.Module, c_out: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.GroupNorm(1, c_out), nn.LeakyReLU(0.2))


class ParamAutoencoder(nn.Module):
    def __init__(self, n_params: int, latent_dim: int = 64, channels: tuple[int, ...] = (64, 64, 64), patch: int = 16,
                 input_noise: float = 1e-3, latent_noise: float = 0.1):
        super().__init__()
        self.n_params, self.input_noise, self.latent_noise = n_params, input_noise, latent_noise
        stride = patch * 2 ** (len(channels) - 1)
        self.padded = math.ceil(n_params / stride) * stride  # P'
        self.bottom = (channels[-1], self.padded // stride)  # (C_L, P' / stride)
        enc = [_block(nn.Conv1d(1, channels[0], patch, stride=patch), channels[0])]
        enc += [_block(nn.Conv1d(channels[i], channels[i + 1], 3, stride=2, padding=1), channels[i + 1])
                for i in range(len(channels) - 1)]
        self.encoder = nn.Sequential(*enc)
        self.to_latent = nn.Linear(self.bottom[0] * self.bottom[1], latent_dim)
        self.from_latent = nn.Linear(latent_dim, self.bottom[0] * self.bottom[1])
        rev = channels[::-1]
        dec = [_block(nn.ConvTranspose1d(rev[i], rev[i + 1], 4, stride=2, padding=1), rev[i + 1]) for i in range(len(rev) - 1)]
        self.decoder = nn.Sequential(*dec, nn.ConvTranspose1d(rev[-1], 1, patch, stride=patch))

    def encode(self, x_BP: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x_BP, (0, self.padded - self.n_params)).unsqueeze(1)  # (B, 1, P')
        z = self.to_latent(self.encoder(x).flatten(1))  # (B, D)
        return z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-8)  # unit RMS

    def decode(self, z_BD: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z_BD).view(-1, *self.bottom)  # (B, C_L, P'/stride)
        return self.decoder(h).squeeze(1)[:, : self.n_params]  # (B, P)

    def forward(self, x_BP: torch.Tensor) -> torch.Tensor:
        """Reconstruction with training-time noise on input and latent (none in eval mode)."""
        if self.training:
            x_BP = x_BP + self.input_noise * torch.randn_like(x_BP)
        z = self.encode(x_BP)
        if self.training:
            z = z + self.latent_noise * torch.randn_like(z)
        return self.decode(z)
