"""loralab: a workbench for LoRA fine-tuning experiments."""

__version__ = "0.1.0"
