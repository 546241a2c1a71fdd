"""The hypernetwork: a set of condition items -> LoRA (A, B) for every target module (and whole modules) at once.

    items (B, K, D) --φ per item--> (B, K, W) --mean over K--> ρ --> z (B, Z)        set encoder (DeepSets)
    [z, e_m] (B, Z + M) --trunk--> h_m (B, W) --head of m's shape--> A_m (B, r, i), B_m (B, o, r)   per module m

e_m is a learned embedding of module m (its layer and kind). Modules of one shape (i, o, r) share their output
heads, as Text-to-LoRA shares them across layers; whole modules (a classification head) get a head of their own
that emits the full weight and bias. B heads start at zero, so a fresh network gives ΔW = 0 (the base model), and
whole-module heads start at the base module's weights.
With a prototype module p (a classification head), its generated weight also gets s · prototypes (B, C, F) computed
from the condition's labelled examples (items.ConditionItems.prototypes), s a learned scale: the head starts as a
nearest-centroid classifier of the examples and the network learns the rest. With `proto_bias`, its bias also gets
−s·m·‖c_k‖²/2 (m the mean feature norm), so the head ranks classes by Euclidean distance to their centroids.
Shapes: B conditions, K items per condition, D item features, W width, Z condition size, M module-embedding size,
r / i / o LoRA rank / in / out features, C classes, F head input features.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from loragen.adapters.layout import LoraLayout


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.GELU()]
    return nn.Sequential(*layers[:-1])  # no activation after the last layer


class HyperNetwork(nn.Module):
    def __init__(self, layout: LoraLayout, item_dim: int, width: int = 256, cond_dim: int = 128, module_dim: int = 32,
                 full_init: dict[str, torch.Tensor] | None = None, proto_module: str | None = None, proto_scale: float = 1.0,
                 proto_bias: bool = False):
        super().__init__()
        self.layout, self.proto_module = layout, proto_module
        if proto_module is not None:
            if proto_module not in {f.name for f in layout.full}:
                raise ValueError(f"the prototype module must be a whole module of the layout {[f.name for f in layout.full]}; "
                                 f"found {proto_module!r}")
            self.proto_log_scale = nn.Parameter(torch.tensor(math.log(proto_scale)))
            if proto_bias:  # m: the mean feature norm the scale was set from (s = 20 / m); restored with the state
                if not next(f for f in layout.full if f.name == proto_module).bias:
                    raise ValueError(f"a prototype bias needs a bias in {proto_module!r}; it has none")
                self.register_buffer("proto_feature_norm", torch.tensor(20.0 / proto_scale))
        elif proto_bias:
            raise ValueError("a prototype bias needs a prototype module; found none")
        self.item_mlp = _mlp([item_dim, width, width])  # φ
        self.set_mlp = _mlp([width, width, cond_dim])  # ρ
        self.module_emb = nn.Parameter(0.1 * torch.randn(len(layout.modules) + len(layout.full), module_dim))
        self.trunk = nn.Sequential(_mlp([cond_dim + module_dim, width, width]), nn.GELU())
        self.shape_of = {m.name: f"lora_{m.in_features}_{m.out_features}_{m.rank}" for m in layout.modules}
        self.shape_of |= {f.name: f"full_{f.name.replace('.', '_')}" for f in layout.full}
        heads = {}
        for m in layout.modules:
            key = self.shape_of[m.name]
            if key not in heads:
                heads[key] = nn.ModuleDict({"a": nn.Linear(width, m.rank * m.in_features), "b": nn.Linear(width, m.out_features * m.rank)})
                nn.init.zeros_(heads[key]["b"].weight)
                nn.init.zeros_(heads[key]["b"].bias)
        for f in layout.full:
            head = nn.Linear(width, f.out_features * f.in_features + (f.out_features if f.bias else 0))
            nn.init.normal_(head.weight, std=1e-3)
            init = torch.zeros(head.out_features)
            if full_init is not None:
                init = torch.cat([full_init[f"{f.name}.weight"].reshape(-1)] + ([full_init[f"{f.name}.bias"]] if f.bias else []))
            with torch.no_grad():
                head.bias.copy_(init)
            heads[self.shape_of[f.name]] = head
        self.heads = nn.ModuleDict(heads)
        # LoRA modules by shared head: each head runs once over all its modules' trunk outputs (a fifth of a cold
        # text-topics generate's network pass was the per-module head calls)
        self.lora_groups: dict[str, list[int]] = {}
        for j, m in enumerate(layout.modules):
            self.lora_groups.setdefault(self.shape_of[m.name], []).append(j)

    def embed(self, items_BKD: torch.Tensor) -> torch.Tensor:
        """(B, K, D) standardised items -> (B, Z) condition embedding."""
        # φ ends in a Linear, which commutes with the mean over K: pool before it (K times fewer multiply-adds there)
        first, act, last = self.item_mlp  # (slicing the Sequential would build a new module on every call)
        pooled_BW = act(first(items_BKD)).mean(1)
        return self.set_mlp(last(pooled_BW))

    def forward(self, items_BKD: torch.Tensor, proto_BCF: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Adapter tensors with a leading batch dim: "<m>.lora_A" (B, r, i), "<m>.lora_B" (B, o, r), whole modules'
        "<f>.weight" (B, o, i) and "<f>.bias" (B, o). `proto_BCF` is required with a prototype module."""
        if (proto_BCF is None) != (self.proto_module is None):
            raise ValueError(f"prototypes are needed exactly when the network has a prototype module ({self.proto_module!r}); "
                             f"found {'none' if proto_BCF is None else tuple(proto_BCF.shape)}")
        z = self.embed(items_BKD)  # (B, Z)
        n, slots = len(z), len(self.module_emb)
        # every module's trunk input at once: (modules, B, Z + M) -> (modules, B, W)
        h_all = self.trunk(torch.cat([z.expand(slots, -1, -1), self.module_emb[:, None].expand(-1, n, -1)], -1))
        out = {}
        for key, group in self.lora_groups.items():
            h = h_all[group]  # (G, B, W): the group's modules
            m = self.layout.modules[group[0]]  # every module of the group has its shape
            # A scaled like PEFT's kaiming init (entries ~ 1/sqrt(i)), so B learns at the same pace on every module
            a_GBX, b_GBY = self.heads[key]["a"](h) / math.sqrt(m.in_features), self.heads[key]["b"](h)  # X = r·i, Y = o·r
            for g, j in enumerate(group):
                name = self.layout.modules[j].name
                out[f"{name}.lora_A"] = a_GBX[g].view(n, m.rank, m.in_features)
                out[f"{name}.lora_B"] = b_GBY[g].view(n, m.out_features, m.rank)
        for j, f in enumerate(self.layout.full, start=len(self.layout.modules)):
            flat = self.heads[self.shape_of[f.name]](h_all[j])  # (B, o·i [+ o])
            out[f"{f.name}.weight"] = flat[:, : f.out_features * f.in_features].view(n, f.out_features, f.in_features)
            if f.name == self.proto_module:
                out[f"{f.name}.weight"] = out[f"{f.name}.weight"] + self.proto_log_scale.exp() * proto_BCF
            if f.bias:
                out[f"{f.name}.bias"] = flat[:, f.out_features * f.in_features :]
                if f.name == self.proto_module and hasattr(self, "proto_feature_norm"):  # −s·m·‖c_k‖²/2 (B, C)
                    out[f"{f.name}.bias"] = out[f"{f.name}.bias"] - (self.proto_log_scale.exp() * self.proto_feature_norm / 2
                                                                     * proto_BCF.square().sum(-1))
        return out
