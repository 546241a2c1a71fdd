"""Per-sample batched LoRA: a different adapter for every sample of one batch, applied with batched matmuls.

No dense per-sample weight copies: for a linear module with input x (B, N, i) and per-sample A (B, r, i), B (B, o, r),
the output is W x + b + (alpha / r) · (x Aᵀ) Bᵀ: one torch.bmm and one torch.baddbmm of rank r. Works in training mode and lets
gradients reach whatever produced A and B (a generator network). Written by hand because PEFT's `adapter_names`
path refuses training mode and loops over adapters.
`grouped_lora` is the form for sampling with few distinct adapters (Composer: one per class) in a large batch: the
batch is sorted so each adapter's samples are contiguous, and each group gets one low-rank product of its own. Memory
then grows with the number of adapters, not with the batch (gathering an adapter per sample costs B·r·(i + o) per
module: on the digits-gen DiT, at batch 1000, 64 MB against the backbone's 99 MB sampling peak).
Shapes: B batch (one adapter per sample), N tokens per sample (1 for plain vectors), i / o features, r rank,
C adapters (groups).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from loragen.errors import LayoutMismatchError
from loragen.layout import LoraLayout


def _hook(a_Bri: torch.Tensor, b_Bor: torch.Tensor, scaling: float):
    a_T, b_T = a_Bri.transpose(1, 2), b_Bor.transpose(1, 2)  # (B, i, r), (B, r, o)

    def add_delta(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        batch = x.shape[0]
        if batch != a_T.shape[0]:
            raise LayoutMismatchError(f"batched LoRA holds {a_T.shape[0]} adapters; the input batch has {batch} samples")
        x_BNr = torch.bmm(x.reshape(batch, -1, x.shape[-1]), a_T)
        # one fused kernel for output + scaling · (x Aᵀ) Bᵀ: measured 5-10% cheaper than bmm, mul and add apart
        out = torch.baddbmm(output.reshape(batch, -1, output.shape[-1]), x_BNr, b_T, alpha=scaling)  # (B, N, o)
        return out.reshape(output.shape)

    return add_delta


@contextlib.contextmanager
def _hooked(model: nn.Module, layout: LoraLayout, make_hook) -> Iterator[nn.Module]:
    """Register make_hook(module spec) as a forward hook on every LoRA module of the layout; remove them on exit.
    Whole modules (heads) of a layout are refused: they have no low-rank form to apply per sample."""
    if layout.full:
        raise LayoutMismatchError(f"batched LoRA applies LoRA modules only; found whole modules {[f.name for f in layout.full]}")
    layout.check_model(model)
    named = dict(model.named_modules())
    handles = []
    try:
        for m in layout.modules:
            handles.append(named[m.name].register_forward_hook(make_hook(m)))
        yield model
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def batched_lora(model: nn.Module, layout: LoraLayout, tensors: dict[str, torch.Tensor]) -> Iterator[nn.Module]:
    """Run `model` with sample b using adapter b: `tensors` maps "<module>.lora_A" to (B, r, i) and "<module>.lora_B"
    to (B, o, r)."""

    def make_hook(m):
        a, b = tensors[f"{m.name}.lora_A"], tensors[f"{m.name}.lora_B"]
        if a.ndim != 3 or a.shape[1:] != (m.rank, m.in_features) or b.shape[1:] != (m.out_features, m.rank) or len(a) != len(b):
            raise LayoutMismatchError(f"{m.name}: expected A (B, {m.rank}, {m.in_features}) and B (B, {m.out_features}, "
                                      f"{m.rank}); found {tuple(a.shape)} and {tuple(b.shape)}")
        return _hook(a, b, m.scaling)

    with _hooked(model, layout, make_hook):
        yield model


def _grouped_hook(a_Cri: torch.Tensor, b_Cor: torch.Tensor, counts: list[int], scaling: float):
    def add_delta(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        if x.shape[0] != sum(counts):
            raise LayoutMismatchError(f"grouped LoRA holds groups of {sum(counts)} samples; the input batch has {x.shape[0]}")
        tokens = x.numel() // (x.shape[0] * x.shape[-1])  # N
        x2, out = x.reshape(-1, x.shape[-1]), output.view(-1, output.shape[-1])  # (B·N, i), (B·N, o)
        start = 0
        for c, n in enumerate(counts):
            if n:
                rows = slice(start * tokens, (start + n) * tokens)
                out[rows].addmm_(x2[rows] @ a_Cri[c].T, b_Cor[c].T, alpha=scaling)  # in place: no activation copy
            start += n
        return output

    return add_delta


@contextlib.contextmanager
def grouped_lora(model: nn.Module, layout: LoraLayout, tensors: dict[str, torch.Tensor], counts: list[int]) -> Iterator[nn.Module]:
    """Run `model` on a batch whose first counts[0] samples use adapter 0, the next counts[1] adapter 1, and so on:
    `tensors` maps "<module>.lora_A" to (C, r, i) and "<module>.lora_B" to (C, o, r)."""

    def make_hook(m):
        a, b = tensors[f"{m.name}.lora_A"], tensors[f"{m.name}.lora_B"]
        if a.shape[1:] != (m.rank, m.in_features) or b.shape[1:] != (m.out_features, m.rank) or not len(a) == len(b) == len(counts):
            raise LayoutMismatchError(f"{m.name}: expected A ({len(counts)}, {m.rank}, {m.in_features}) and B ({len(counts)}, "
                                      f"{m.out_features}, {m.rank}) for {len(counts)} groups; found {tuple(a.shape)} and {tuple(b.shape)}")
        return _grouped_hook(a, b, list(counts), m.scaling)

    with _hooked(model, layout, make_hook):
        yield model


def stack_adapters(adapters) -> dict[str, torch.Tensor]:
    """Adapters of one layout -> {"<key>": (B, ...)} for batched_lora."""
    keys = adapters[0].tensors.keys()
    return {k: torch.stack([a.tensors[k] for a in adapters]) for k in keys}
