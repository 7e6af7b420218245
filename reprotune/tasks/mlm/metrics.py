"""Scores from the per-token predictions table alone: perplexity = exp(mean loss over
masked tokens), top-1/top-k accuracy; and the same token-weighted mean loss on the
validation blocks during training, so the checkpoint is chosen as the test scores it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from reprotune.core.additive import additive
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
        return {
            "perplexity": float("nan"),
            "loss": float("nan"),
            "accuracy": 0.0,
            "top_k_accuracy": 0.0,
            "masked_tokens": 0,
            "blocks": 0,
        }
    return {
        "perplexity": round(perplexity(losses), 4),
        "loss": round(float(losses.mean()), 6),
        "accuracy": round(float(predictions["correct"].mean()), 6),
        "top_k_accuracy": round(float(predictions["in_top_k"].mean()), 6),
        "masked_tokens": int(len(predictions)),
        "blocks": int(predictions["block"].nunique()),
    }


# Per-block statistics for the bootstrap (reprotune.evaluation.uncertainty) ------------------

HEADLINE_KEYS = ("perplexity", "loss", "accuracy", "top_k_accuracy")
"""The keys of `score` that get a confidence interval and a paired test."""


def example_stats(predictions: pd.DataFrame, meta: MlmMeta) -> pd.DataFrame:
    """One row per test block (the unit the bootstrap resamples: its masked tokens share a
    context), in block order: the summed loss of its masked tokens (`loss_sum`), how many
    there are (`masked_tokens`), how many the model got right first (`correct`) and among
    its top k (`in_top_k`). Blocks without a masked token have no row."""
    grouped = predictions.groupby("block", sort=True)
    return pd.DataFrame(
        {
            "block": grouped["loss"].sum().index.to_numpy(),
            "loss_sum": grouped["loss"].sum().to_numpy(dtype=np.float64),
            "masked_tokens": grouped.size().to_numpy(dtype=np.float64),
            "correct": grouped["correct"].sum().to_numpy(dtype=np.float64),
            "in_top_k": grouped["in_top_k"].sum().to_numpy(dtype=np.float64),
        }
    )


@additive("loss_sum", "masked_tokens", "correct", "in_top_k")
def HEADLINE(sums: Mapping[str, np.ndarray], n_rows: int) -> dict[str, np.ndarray]:  # noqa: N802 (module constant)
    """Token-weighted perplexity, mean loss and (top-k) accuracy over every masked token of
    the blocks: what `score` reports (unrounded)."""
    tokens = np.where(sums["masked_tokens"] > 0, sums["masked_tokens"], np.nan)
    loss = sums["loss_sum"] / tokens
    return {
        "perplexity": np.where(loss < 700, np.exp(np.minimum(loss, 700)), np.inf),
        "loss": loss,
        "accuracy": sums["correct"] / tokens,
        "top_k_accuracy": sums["in_top_k"] / tokens,
    }
