"""Classification scores computed locally with scikit-learn (no `evaluate.load`):
accuracy, macro-F1, Matthews correlation and per-class precision/recall/F1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    matthews_corrcoef,
    precision_recall_fscore_support,
)

from reprotune.tasks.classification.params import ClassificationMeta, ClassificationTaskParams

HEADLINE = ("accuracy", "macro_f1", "mcc")
"""The keys `train_metrics` reports, so any of them can be `metric_for_best_model`."""


def headline_scores(gold: Sequence[Any], predicted: Sequence[Any]) -> dict[str, float]:
    """Accuracy, macro-F1 over the classes present in gold or predictions, and MCC
    (0 when undefined, e.g. every prediction the same class)."""
    if len(gold) == 0:
        return {key: 0.0 for key in HEADLINE}
    return {
        "accuracy": round(float(accuracy_score(gold, predicted)), 6),
        "macro_f1": round(float(f1_score(gold, predicted, average="macro", zero_division=0)), 6),
        "mcc": round(float(matthews_corrcoef(gold, predicted)), 6),
    }


def per_class_scores(gold: Sequence[str], predicted: Sequence[str], labels: list[str]) -> dict[str, dict[str, Any]]:
    """Precision, recall, F1 and support for every label of the model, in label order."""
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, predicted, labels=labels, zero_division=0
    )
    return {
        label: {"precision": round(float(p), 6), "recall": round(float(r), 6), "f1": round(float(f), 6),
                "support": int(s)}
        for label, p, r, f, s in zip(labels, precision, recall, f1, support)
    }


def classification_scores(gold: Sequence[str], predicted: Sequence[str], labels: list[str]) -> dict[str, Any]:
    return {
        **headline_scores(gold, predicted),
        "per_class": per_class_scores(gold, predicted, labels),
        "examples": len(gold),
    }


def score(predictions: pd.DataFrame, meta: ClassificationMeta, params: ClassificationTaskParams) -> dict[str, Any]:
    return classification_scores(list(predictions["gold"]), list(predictions["pred"]), meta.labels)
