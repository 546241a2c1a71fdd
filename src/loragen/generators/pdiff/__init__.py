"""pdiff: parameter autoencoder + conditional latent diffusion (Cond P-Diff, Wild-P-Diff)."""

from loragen.generators.pdiff.generator import PDiffConfig, PDiffGenerator

__all__ = ["PDiffConfig", "PDiffGenerator"]
