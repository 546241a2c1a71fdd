"""Latent diffusion over adapter latents: diffusers' DDPM schedule for training, DDIM for sampling.

The network is an argument (DiT / improved-diffusion style); schedulers hold no weights. `clip_sample` is off in both
schedulers: latents are standardised, not bounded to [-1, 1], and clipping them would cut real values.

prediction_type "sample" (the network predicts z_0) is the default: a zoo is a few tight clusters of checkpoints, one
per task, and predicting the clean latent makes the denoiser a regression onto the cluster, where ε-prediction left
DDIM samples a third of the way to the next task (measured on digits-domains: 72% vs 89% seen-task accuracy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


class LatentDiffusion:
    def __init__(self, num_train_timesteps: int = 1000, prediction_type: str = "sample", beta_start: float = 1e-4,
                 beta_end: float = 2e-2):
        from diffusers import DDIMScheduler, DDPMScheduler

        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}; found {prediction_type!r}")
        self.prediction_type = prediction_type
        kw = dict(num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
                  beta_schedule="linear", clip_sample=False, prediction_type=prediction_type)
        self.train_scheduler = DDPMScheduler(**kw)
        self.sample_scheduler = DDIMScheduler(**kw, set_alpha_to_one=True)
        self.num_train_timesteps = num_train_timesteps

    def training_loss(self, model: nn.Module, z0_BD: torch.Tensor, cond_BE: torch.Tensor) -> torch.Tensor:
        """DDPM's simple loss (Ho et al. 2020, Eq. 14) on the chosen target: ε, z_0, or v (Salimans & Ho 2022)."""
        noise = torch.randn_like(z0_BD)
        t = torch.randint(0, self.num_train_timesteps, (len(z0_BD),), device=z0_BD.device)
        zt = self.train_scheduler.add_noise(z0_BD, noise, t)  # √ᾱ_t z_0 + √(1−ᾱ_t) ε
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "sample":
            target = z0_BD
        else:
            target = self.train_scheduler.get_velocity(z0_BD, noise, t)
        return F.mse_loss(model(zt, t, cond_BE), target)

    @torch.no_grad()
    def sample(self, model: nn.Module, cond_BE: torch.Tensor, latent_dim: int, steps: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Deterministic DDIM (η = 0) from Gaussian noise; (B, D)."""
        sched = self.sample_scheduler
        sched.set_timesteps(steps)
        z = torch.randn(len(cond_BE), latent_dim, generator=generator)
        for t in sched.timesteps:
            out = model(z, t.expand(len(z)), cond_BE)
            z = sched.step(out, t, z, eta=0.0).prev_sample
        return z
