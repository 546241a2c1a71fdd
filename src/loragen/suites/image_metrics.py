"""Metrics of generated images: digits-FD and class consistency, both read off the digits classifier.

digits-FD is the Fréchet distance (Heusel et al. 2017, the FID formula) between Gaussians fitted to the classifier's
penultimate features of generated images and of real held-out images. Class consistency is the share of generated
images the classifier assigns to the class they were generated for.
Shapes: N / M image counts, F feature size.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def frechet_distance(a_NF: torch.Tensor, b_MF: torch.Tensor) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½), in float64; the matrix square root is scipy's."""
    from scipy import linalg

    if a_NF.ndim != 2 or b_MF.ndim != 2 or a_NF.shape[1] != b_MF.shape[1] or min(len(a_NF), len(b_MF)) < 2:
        raise ValueError(f"expected two feature sets (N, F) and (M, F) with N, M >= 2; found {tuple(a_NF.shape)} and {tuple(b_MF.shape)}")
    a, b = a_NF.double().numpy(), b_MF.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # near-singular product: regularise, as pytorch-fid does
        eps = 1e-6 * np.eye(len(cov_a))
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


@torch.no_grad()
def image_metrics(classifier: nn.Module, images_N1SS: torch.Tensor, labels_N: torch.Tensor,
                  real_features_MF: torch.Tensor) -> dict[str, float]:
    """{"fd": digits-FD against the real features, "class_acc": class consistency in percent}."""
    classifier.eval()
    feats = classifier.features(images_N1SS)
    pred = classifier.head(feats).argmax(-1)
    return {"fd": frechet_distance(feats, real_features_MF), "class_acc": 100.0 * (pred == labels_N).float().mean().item()}
