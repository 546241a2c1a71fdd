"""Zoos of LoRA checkpoints: the store (`Zoo`), collecting one by fine-tuning a suite's tasks, importing PEFT folders."""

from loragen.zoo.store import Zoo

__all__ = ["Zoo"]
