"""The train stages: one Trainer path for full fine-tuning and LoRA."""
