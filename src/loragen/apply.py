"""Applying adapters to a base model: merge into the weights (and restore them exactly), or attach through PEFT."""

from __future__ import annotations

import contextlib
import tempfile
from typing import Iterator

import torch
from torch import nn

from loragen.adapter import Adapter, check_finite


class Merge:
    """Handle of one merge: keeps the original weights of the touched modules so that unmerge is exact."""

    def __init__(self, model: nn.Module, originals: dict[str, torch.Tensor]):
        self.model, self.originals = model, originals

    def unmerge(self) -> None:
        """Restore the weights bit for bit (subtracting ΔW again would leave rounding error)."""
        named = dict(self.model.named_modules())
        with torch.no_grad():
            for name, w in self.originals.items():
                named[name].weight.copy_(w)
        self.originals = {}


def merge(model: nn.Module, adapter: Adapter, scale: float = 1.0) -> Merge:
    """W <- W + scale · (alpha / r) · B @ A for every module of the adapter; raises before touching W on NaN/Inf."""
    adapter.layout.check_model(model)
    named = dict(model.named_modules())
    new = {}
    for m in adapter.layout.modules:
        w = named[m.name].weight
        new[m.name] = w.detach() + scale * adapter.delta(m).to(device=w.device, dtype=w.dtype)  # (o, i)
        check_finite(new[m.name], f"merged weight of {m.name!r}")  # PEFT's safe_merge check
    originals = {}
    with torch.no_grad():
        for name, w_new in new.items():
            originals[name] = named[name].weight.detach().clone()
            named[name].weight.copy_(w_new)
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
