"""What every metrics_hub module shares: the pipeline's scorer plus its bootstrap intervals."""

from __future__ import annotations

import importlib
from typing import Any

import pandas as pd

from reprotune.evaluation.uncertainty import add_intervals

CITATION = "reprotune: a reproducible DVC pipeline for fine-tuning transformer encoders, full against LoRA."


def metric_info(description: str, inputs_description: str, features: dict[str, Any]) -> Any:
    """The `evaluate.MetricInfo` every module returns from `_info`: only the input features differ."""
    evaluate = importlib.import_module("evaluate")
    datasets = importlib.import_module("datasets")
    return evaluate.MetricInfo(
        description=description,
        citation=CITATION,
        inputs_description=inputs_description,
        features=datasets.Features(features),
    )


def pipeline_numbers(
    family: str, predictions: pd.DataFrame, meta: Any, resamples: int, seed: int, level: float
) -> dict[str, Any]:
    """`reprotune.tasks.<family>.metrics.score` on a predictions table shaped like the pipeline's,
    with the `<key>_ci_low` / `<key>_ci_high` intervals evaluate writes (none when resamples is 0)."""
    metrics = importlib.import_module(f"reprotune.tasks.{family}.metrics")
    scores = metrics.score(predictions, meta, None)
    return add_intervals(scores, metrics, predictions, meta, resamples, seed, level)
