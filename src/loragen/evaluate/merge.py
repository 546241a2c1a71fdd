"""k-nearest similarity-weighted merges of zoo adapters through PEFT's `add_weighted_adapter`: what a user with a zoo
would try for a new task before generating anything.

PEFT gives the merged adapter lora_alpha = its new rank (scaling 1) and folds each source's scaling into the merged
A / B; "cat" stacks the sources (rank k·r, exactly Σ w ΔW), "linear" sums their A's and B's (rank r), "svd" truncates
Σ w ΔW to rank r. Whole modules (a head) are not merged by PEFT (it refuses several adapters carrying the same
modules_to_save), so they are averaged here with the same weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from loragen.adapters.adapter import Adapter
from loragen.adapters.layout import LoraLayout, LoraModule

COMBINATIONS = ("linear", "cat", "svd")


class ZooMerger:
    """One PEFT model holding every source adapter (LoRA part); `merge` combines any weighted subset of them."""

    def __init__(self, base: nn.Module, layout: LoraLayout, adapters: dict[str, Adapter]):
        from peft import LoraConfig, get_peft_model

        self.layout, self.adapters = layout, adapters
        self.names = {t: f"src{i}" for i, t in enumerate(adapters)}  # PEFT adapter names must be identifiers
        ranks, alphas = {m.rank for m in layout.modules}, {m.alpha for m in layout.modules}
        if len(ranks) != 1 or len(alphas) != 1:
            raise ValueError(f"merging needs one rank and alpha for all modules; found ranks {ranks}, alphas {alphas}")
        config = LoraConfig(r=ranks.pop(), lora_alpha=alphas.pop(), lora_dropout=0.0, target_modules=layout.target_names)
        first, *rest = adapters
        self.model = get_peft_model(copy.deepcopy(base), config, adapter_name=self.names[first])
        for t in rest:
            self.model.add_adapter(self.names[t], config)
        named = dict(self.model.base_model.model.named_modules())
        with torch.no_grad():
            for t, a in adapters.items():
                for m in layout.modules:
                    named[m.name].lora_A[self.names[t]].weight.copy_(a.tensors[f"{m.name}.lora_A"])
                    named[m.name].lora_B[self.names[t]].weight.copy_(a.tensors[f"{m.name}.lora_B"])
        self._named = named

    def merge(self, tasks: list[str], weights: list[float], combination: str) -> Adapter:
        """The merged adapter of `tasks` with `weights` (PEFT's combination_type `combination`)."""
        if combination not in COMBINATIONS:
            raise ValueError(f"combination must be one of {COMBINATIONS}; found {combination!r}")
        try:  # PEFT skips a merge whose name exists, so "merged" is deleted even when the merge itself fails
            self.model.add_weighted_adapter([self.names[t] for t in tasks], list(weights), "merged", combination_type=combination)
            tensors, modules = {}, []
            for m in self.layout.modules:
                a = self._named[m.name].lora_A["merged"].weight.detach().clone()  # (r', i)
                b = self._named[m.name].lora_B["merged"].weight.detach().clone()  # (o, r')
                modules.append(LoraModule(m.name, m.in_features, m.out_features, a.shape[0], float(a.shape[0])))
                tensors[f"{m.name}.lora_A"], tensors[f"{m.name}.lora_B"] = a, b
        finally:
            if "merged" in self.model.peft_config:
                self.model.delete_adapter("merged")
        total = sum(weights)
        for s in self.layout.full_segments:
            tensors[s.key] = sum(w * self.adapters[t].tensors[s.key] for t, w in zip(tasks, weights)) / total
        return Adapter(LoraLayout(modules, self.layout.full), tensors, {"merged": tasks, "weights": list(weights),
                                                                          "combination": combination})


def similarity_weights(distances: torch.Tensor) -> list[float]:
    """Weights ∝ 1 / distance over the chosen neighbours, summing to 1 (an exact match takes all the weight)."""
    inv = 1.0 / distances.clamp_min(1e-6)
    return (inv / inv.sum()).tolist()
