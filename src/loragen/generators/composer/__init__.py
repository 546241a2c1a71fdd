"""Composer (test-time instance-specific parameter composition): a meta-generator of per-condition W_Q / W_V updates."""

from loragen.generators.composer.generator import ComposerConfig, ComposerGenerator

__all__ = ["ComposerConfig", "ComposerGenerator"]
