"""ECM's control module (Liu et al., "Efficient Conditional Generation on Scale-based Visual Autoregressive Models"):
lightweight adapter blocks spread through a frozen VAR, and the ControlVAR-style full fine-tune it is compared with.

1. A control encoder (a small CNN; the paper uses a ViT) maps the control map to features on the latent grid, which
   are area-resized to every scale and laid out as the token sequence (B, L, Da).
2. Before each of its backbone blocks, an adapter block projects the image tokens to the adapter width, fuses them
   with the control tokens by addition, refines them with context-aware attention (block-causal: over the tokens
   generated so far) and an FFN, and adds its output, through a zero-initialised projection, to the backbone's
   token stream. At initialisation the backbone's outputs are unchanged.
3. One FFN is shared by all adapter blocks; layer-specific gates on its hidden units tell the blocks apart
   (ECM's shared gated FFN). `shared_ffn=False` gives each block its own FFN (the ablation).
The backbone is passed in, never owned: a module's state holds only its own weights, and it never changes the
backbone's (the trainer freezes them; a test checks).
Shapes: B batch, S control side, H latent side, T ≤ L tokens, D backbone width, Da adapter width, F FFN hidden.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from loragen.generators.ecm.config import ECMConfig
from loragen.suites.dit import Attention
from loragen.suites.var import VAR


class ControlEncoder(nn.Module):
    """Control map (B, 1, S, S) -> control tokens (B, L, Da), one per token of every scale."""

    def __init__(self, width: int, hidden: int, scales: tuple[int, ...]):
        super().__init__()
        self.scales = scales
        self.net = nn.Sequential(nn.Conv2d(1, hidden, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(hidden, 2 * hidden, 4, stride=2, padding=1), nn.GELU(),  # S -> S/2 = H
                                 nn.Conv2d(2 * hidden, width, 1))

    def forward(self, control_B1SS: torch.Tensor) -> torch.Tensor:
        f = self.net(control_B1SS)  # (B, Da, H, H)
        per_scale = [F.interpolate(f, size=(p, p), mode="area") if p != f.shape[-1] else f for p in self.scales]
        return torch.cat([x.flatten(2) for x in per_scale], 2).transpose(1, 2)  # (B, L, Da)


class GatedFFN(nn.Module):
    """FFN(x) = W₂ (g_l ⊙ GELU(W₁ x)): one FFN, a gate vector per adapter block l (initialised to 1)."""

    def __init__(self, width: int, hidden: int, layers: int):
        super().__init__()
        self.up, self.down = nn.Linear(width, hidden), nn.Linear(hidden, width)
        self.gates = nn.Parameter(torch.ones(layers, hidden))  # (layers, F)

    def forward(self, x_BTD: torch.Tensor, layer: int) -> torch.Tensor:
        return self.down(F.gelu(self.up(x_BTD)) * self.gates[layer])


class AdapterBlock(nn.Module):
    """Image tokens + control tokens -> a correction of the backbone's token stream (B, T, D)."""

    def __init__(self, width: int, adapter_width: int, heads: int):
        super().__init__()
        self.inp = nn.Linear(width, adapter_width)
        self.norm1, self.norm2 = nn.LayerNorm(adapter_width), nn.LayerNorm(adapter_width)
        self.attn = Attention(adapter_width, heads)
        self.out = nn.Linear(adapter_width, width)
        nn.init.zeros_(self.out.weight)  # zero-init: the block adds nothing until trained
        nn.init.zeros_(self.out.bias)

    def forward(self, h_BTD: torch.Tensor, control_BTA: torch.Tensor, mask_TT: torch.Tensor, ffn) -> torch.Tensor:
        x = self.inp(h_BTD) + control_BTA  # fuse image and control tokens (element-wise addition)
        x = x + self.attn(self.norm1(x), mask_TT)  # context-aware: over this and earlier scales' tokens
        x = x + ffn(self.norm2(x))
        return self.out(x)


def adapter_positions(depth: int, adapters: int) -> list[int]:
    """Backbone block indices the adapter blocks sit before, spread evenly (e.g. depth 4, 3 adapters: 0, 1, 3)."""
    if adapters > depth:
        raise ValueError(f"at most one adapter per backbone block ({depth}); found {adapters}")
    return sorted({round(i * depth / adapters) for i in range(adapters)})


class ECMControl(nn.Module):
    """The ECM control module of one backbone: control encoder, adapter blocks, shared gated FFN (or one per block)."""

    def __init__(self, config: ECMConfig, backbone: VAR):
        super().__init__()
        D, Da, hidden = backbone.config.width, config.width, config.ffn_ratio * config.width
        self.positions = adapter_positions(backbone.config.depth, config.adapters)
        self.encoder = ControlEncoder(Da, config.encoder_width, backbone.scales)
        self.blocks = nn.ModuleList(AdapterBlock(D, Da, config.heads) for _ in self.positions)
        n = len(self.positions)
        self.ffn = GatedFFN(Da, hidden, n) if config.shared_ffn else nn.ModuleList(
            nn.Sequential(nn.Linear(Da, hidden), nn.GELU(), nn.Linear(hidden, Da)) for _ in range(n))

    def _ffn(self, i: int):
        return (lambda x: self.ffn(x, i)) if isinstance(self.ffn, GatedFFN) else self.ffn[i]

    def forward(self, backbone: VAR, inputs_BTC: torch.Tensor, labels_B: torch.Tensor, control_B1SS: torch.Tensor
                ) -> torch.Tensor:
        """(B, T, V) logits of the backbone under the control."""
        h, c = backbone.embed(inputs_BTC, labels_B)
        T = h.shape[1]
        mask, control = backbone.attn_mask(T), self.encoder(control_B1SS)[:, :T]  # (T, T), (B, T, Da)
        adapter_at = dict(zip(self.positions, range(len(self.positions))))
        for j, block in enumerate(backbone.blocks):
            if j in adapter_at:
                i = adapter_at[j]
                h = h + self.blocks[i](h, control, mask, self._ffn(i))
            h = block(h, c, mask)
        return backbone.logits(h, c)


class ControlTokens(nn.Module):
    """The full fine-tune baseline (ControlVAR-style): control tokens added to the backbone's input tokens; the
    backbone passed in is trained with it. (ControlVAR interleaves VQ control tokens, doubling the sequence; adding
    encoder features keeps the sequence and the cost of the backbone's own step.)"""

    def __init__(self, config: ECMConfig, backbone: VAR):
        super().__init__()
        self.encoder = ControlEncoder(config.width, config.encoder_width, backbone.scales)
        self.proj = nn.Linear(config.width, backbone.config.width)
        nn.init.zeros_(self.proj.weight)  # starts as the backbone
        nn.init.zeros_(self.proj.bias)

    def forward(self, backbone: VAR, inputs_BTC: torch.Tensor, labels_B: torch.Tensor, control_B1SS: torch.Tensor
                ) -> torch.Tensor:
        h, c = backbone.embed(inputs_BTC, labels_B)
        T = h.shape[1]
        h = h + self.proj(self.encoder(control_B1SS)[:, :T])
        mask = backbone.attn_mask(T)
        for block in backbone.blocks:
            h = block(h, c, mask)
        return backbone.logits(h, c)
