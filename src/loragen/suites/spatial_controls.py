"""Spatial controls computed from an image, and how well a generated image follows one (suite digits-control).

- `edges`: a Sobel edge map, 1 where the gradient magnitude of the image (in [-1, 1]) exceeds EDGE_THRESHOLD. The
  metric is the F1 score between the control's edge pixels and the generated image's (pixel-exact; averaged over
  images), as ControlNet-style papers score Canny controls.
- `mask`: a coarse silhouette, 1 on the MASK_CELL × MASK_CELL cells where at least MASK_FILL of the pixels are ink
  (> 0), upsampled to the image side. The metrics are the IoU between the control and the generated image's mask,
  and the RMSE between the control and the generated image's ink share per cell.
A control is a (B, 1, S, S) float tensor of 0s and 1s; `check_control` refuses anything else with one line.
Shapes: B batch, S image side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from loragen.errors import ConditionError

ControlKind = Literal["edges", "mask"]
CONTROLS: tuple[str, ...] = ("edges", "mask")
EDGE_THRESHOLD = 3.0  # Sobel magnitude; on 16×16 digits about a third of the pixels are edges
MASK_CELL = 4  # silhouette cell side in pixels (a 4×4 grid on 16×16 images)
MASK_FILL = 0.25  # share of ink pixels that makes a cell part of the silhouette


def _sobel_magnitude(x_B1SS: torch.Tensor) -> torch.Tensor:
    kx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
    g = F.conv2d(F.pad(x_B1SS, (1, 1, 1, 1), mode="replicate"), torch.stack([kx, kx.T])[:, None])  # (B, 2, S, S)
    return g.pow(2).sum(1, keepdim=True).sqrt()


def _ink_share(x_B1SS: torch.Tensor) -> torch.Tensor:
    """(B, 1, S/MASK_CELL, S/MASK_CELL): share of ink pixels per cell."""
    return F.avg_pool2d((x_B1SS > 0).float(), MASK_CELL)


def control_map(kind: ControlKind, images_B1SS: torch.Tensor) -> torch.Tensor:
    """The control (B, 1, S, S) of kind `kind` computed from images in [-1, 1]."""
    if kind == "edges":
        return (_sobel_magnitude(images_B1SS) > EDGE_THRESHOLD).float()
    if kind == "mask":
        cells = (_ink_share(images_B1SS) >= MASK_FILL).float()
        return F.interpolate(cells, scale_factor=MASK_CELL, mode="nearest")
    raise ValueError(f"control kind must be one of {CONTROLS}; found {kind!r}")


def control_metrics(kind: ControlKind, control_B1SS: torch.Tensor, images_B1SS: torch.Tensor) -> dict[str, float]:
    """How well generated images follow their controls: {"control_f1"} for edges (percent), {"iou" (percent),
    "rmse"} for masks; means over the batch."""
    made = control_map(kind, images_B1SS).flatten(1).bool()
    want = control_B1SS.flatten(1).bool()
    hit = (made & want).sum(1).float()
    if kind == "edges":  # F1 = 2·tp / (|made| + |want|); 1 when both are empty
        denom = made.sum(1) + want.sum(1)
        f1 = torch.where(denom > 0, 2 * hit / denom.clamp(min=1), torch.ones_like(hit))
        return {"control_f1": 100.0 * f1.mean().item()}
    union = (made | want).sum(1).float()
    iou = torch.where(union > 0, hit / union.clamp(min=1), torch.ones_like(hit))
    want_share = F.avg_pool2d(control_B1SS, MASK_CELL)
    rmse = (_ink_share(images_B1SS) - want_share).pow(2).flatten(1).mean(1).sqrt()
    return {"iou": 100.0 * iou.mean().item(), "rmse": rmse.mean().item()}


def check_control(control: torch.Tensor, side: int) -> torch.Tensor:
    """The control as (B, 1, side, side) float, or a one-line ConditionError saying what is wrong with it."""
    if not torch.is_tensor(control) or not control.is_floating_point():
        raise ConditionError(f"a control must be a float tensor; found {type(control).__name__} "
                             f"{getattr(control, 'dtype', '')}".rstrip())
    if control.ndim == 2:
        control = control[None, None]
    elif control.ndim == 3:  # (B, S, S)
        control = control[:, None]
    if control.ndim != 4 or control.shape[1] != 1:
        raise ConditionError(f"a control has 1 channel, shaped (B, 1, {side}, {side}); found shape {tuple(control.shape)}")
    if control.shape[2:] != (side, side):
        raise ConditionError(f"a control is {side}×{side} pixels; found {control.shape[2]}×{control.shape[3]}")
    if not torch.isfinite(control).all():
        raise ConditionError("a control must be finite; found NaN or infinite values")
    if control.min() < 0 or control.max() > 1:
        raise ConditionError(f"a control's values lie in [0, 1]; found [{control.min().item():g}, {control.max().item():g}]")
    return control


def load_control(path: str | Path, side: int) -> torch.Tensor:
    """A control (B, 1, side, side) from a greyscale PNG (white = 1) or a .npy array of 0…1 values (B, 1, S, S),
    (B, S, S) or (S, S); checked by `check_control`."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise ConditionError(f"control file {path} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ConditionError(f"{path} is not a plain .npy array: {e}") from e
        return check_control(torch.from_numpy(np.asarray(arr, dtype=np.float32)), side)
    if path.suffix.lower() != ".png":
        raise ConditionError(f"a control file is a .png or .npy; found {path.name}")
    from PIL import Image

    img = Image.open(path)
    channels = len(img.getbands())
    if channels != 1:
        raise ConditionError(f"a control PNG has 1 channel (greyscale); found {channels} ({img.mode}) in {path.name}")
    return check_control(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0), side)
