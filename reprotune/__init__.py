"""reprotune: a reproducible DVC pipeline for fine-tuning transformer encoders."""

__version__ = "0.1.0"
