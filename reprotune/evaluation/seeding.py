"""Seeding without `transformers.set_seed`: importing it loads `transformers.trainer_utils`,
which imports peft and, through it, several model families (about 3 s per stage process on
2 CPU cores); stages that train import it with the Trainer anyway, the others need only this."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """What `transformers.set_seed(seed)` does on CPU and CUDA: the same Python, NumPy and torch
    generator states, so a head initialised after it gets the same weights either way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too
