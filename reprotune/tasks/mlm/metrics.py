"""Scores from the per-token predictions table alone: perplexity = exp(mean loss over
masked tokens), top-1/top-k accuracy; and the same token-weighted mean loss on the
validation blocks during training, so the checkpoint is chosen as the test scores it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from reprotune.tasks.mlm.params import MlmMeta, MlmTaskParams


def perplexity(losses: np.ndarray | pd.Series) -> float:
    mean = float(np.mean(losses)) if len(losses) else float("nan")
    return math.exp(mean) if mean < 700 else float("inf")


def masked_token_loss(block_stats: np.ndarray) -> float:
    """Mean loss over every masked token, from one (loss sum, masked tokens) row per block.

    Each token weighs the same, as in the test perplexity; the Trainer's eval_loss
    averages per-batch means instead, so a batch with few masked tokens weighs too much."""
    stats = np.asarray(block_stats, dtype=np.float64).reshape(-1, 2)
    count = stats[:, 1].sum()
    return float(stats[:, 0].sum() / count) if count else float("nan")


def score(predictions: pd.DataFrame, meta: MlmMeta, params: MlmTaskParams) -> dict[str, Any]:
    """Perplexity and masked-token accuracy over the fixed test masks."""
    losses = predictions["loss"].to_numpy(dtype=float)
    if len(losses) == 0:
        return {"perplexity": float("nan"), "loss": float("nan"), "accuracy": 0.0, "top_k_accuracy": 0.0,
                "masked_tokens": 0, "blocks": 0}
    return {
        "perplexity": round(perplexity(losses), 4),
        "loss": round(float(losses.mean()), 6),
        "accuracy": round(float(predictions["correct"].mean()), 6),
        "top_k_accuracy": round(float(predictions["in_top_k"].mean()), 6),
        "masked_tokens": int(len(predictions)),
        "blocks": int(predictions["block"].nunique()),
    }
