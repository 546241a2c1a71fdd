"""Applying adapters to a base model: merge into the weights (and restore them exactly), or attach through PEFT."""

from __future__ import annotations

import contextlib
import tempfile
from typing import Iterator

import torch
from torch import nn

from loragen.adapters.adapter import Adapter, check_finite
from loragen.errors import LayoutMismatchError


class Merge:
    """Handle of one merge: keeps the original tensors it replaced so that unmerge is exact."""

    def __init__(self, model: nn.Module, originals: dict[str, torch.Tensor]):
        self.model, self.originals = model, originals  # "<module>.weight" / "<module>.bias" -> original

    def unmerge(self) -> None:
        """Restore the weights bit for bit (subtracting ΔW again would leave rounding error)."""
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for key, w in self.originals.items():
                params[key].copy_(w)
        self.originals = {}


def merge(model: nn.Module, adapter: Adapter, scale: float = 1.0) -> Merge:
    """W <- W + scale · (alpha / r) · B @ A for every LoRA module; whole modules (a head) are replaced by the
    adapter's. Raises before touching the model on NaN/Inf."""
    adapter.layout.check_model(model)
    params = dict(model.named_parameters())
    new = {}
    for m in adapter.layout.modules:
        w = params[f"{m.name}.weight"]
        new[f"{m.name}.weight"] = w.detach() + scale * adapter.delta(m).to(device=w.device, dtype=w.dtype)  # (o, i)
    for seg in adapter.layout.full_segments:
        if seg.key not in params:
            raise LayoutMismatchError(f"the base model has no parameter {seg.key!r} that the adapter replaces")
        new[seg.key] = adapter.tensors[seg.key].to(device=params[seg.key].device, dtype=params[seg.key].dtype)
    for key, t in new.items():
        check_finite(t, f"merged {key!r}")  # PEFT's safe_merge check
    originals = {}
    with torch.no_grad():
        for key, t in new.items():
            originals[key] = params[key].detach().clone()
            params[key].copy_(t)
    return Merge(model, originals)


@contextlib.contextmanager
def merged(model: nn.Module, adapter: Adapter, scale: float = 1.0) -> Iterator[nn.Module]:
    """`with merged(model, adapter): ...` runs the block with the adapter merged, then restores the base weights."""
    handle = merge(model, adapter, scale)
    try:
        yield model
    finally:
        handle.unmerge()


def attach_peft(model: nn.Module, adapter: Adapter):
    """Wrap `model` in a peft.PeftModel carrying `adapter`, loaded the way any PEFT user would load its folder."""
    from peft import PeftModel

    adapter.layout.check_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        folder = adapter.save(f"{tmp}/adapter")
        return PeftModel.from_pretrained(model, str(folder))
