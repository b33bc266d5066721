"""Training: precision policy, model loading, LoRA application and preflight checks."""
