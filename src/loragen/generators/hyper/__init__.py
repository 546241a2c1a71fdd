"""hyper: a hypernetwork from a condition straight to LoRA weights (Text-to-LoRA, HyperFormer)."""

from loragen.generators.hyper.generator import HyperConfig, HyperGenerator

__all__ = ["HyperConfig", "HyperGenerator"]
