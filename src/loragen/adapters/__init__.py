"""LoRA adapters: the layout (which modules, the flat-vector view), the tensors with PEFT save / load, merging into a
model, and per-sample batched application."""

from loragen.adapters.adapter import Adapter
from loragen.adapters.apply import merged
from loragen.adapters.batched import batched_lora
from loragen.adapters.layout import LoraLayout, LoraModule

__all__ = ["Adapter", "LoraLayout", "LoraModule", "batched_lora", "merged"]
