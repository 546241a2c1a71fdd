"""Evaluation: baselines, metrics and the report of generated adapters against fine-tuning."""
