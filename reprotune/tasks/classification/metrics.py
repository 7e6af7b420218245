"""Classification scores computed locally with scikit-learn (no `evaluate.load`):
accuracy, macro-F1, Matthews correlation and per-class precision/recall/F1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    matthews_corrcoef,
    precision_recall_fscore_support,
)

from reprotune.core.additive import AdditiveHeadline
from reprotune.tasks.classification.params import ClassificationMeta, ClassificationTaskParams

HEADLINE_KEYS = ("accuracy", "macro_f1", "mcc")
"""The keys `train_metrics` reports, so any of them can be `metric_for_best_model`; each gets a
confidence interval and a paired test."""


def headline_scores(gold: Sequence[Any], predicted: Sequence[Any]) -> dict[str, float]:
    """Accuracy, macro-F1 over the classes present in gold or predictions, and MCC
    (0 when undefined, e.g. every prediction the same class)."""
    if len(gold) == 0:
        return {key: 0.0 for key in HEADLINE_KEYS}
    return {
        "accuracy": round(float(accuracy_score(gold, predicted)), 6),
        "macro_f1": round(float(f1_score(gold, predicted, average="macro", zero_division=0)), 6),
        "mcc": round(float(matthews_corrcoef(gold, predicted)), 6),
    }


def per_class_scores(gold: Sequence[str], predicted: Sequence[str], labels: list[str]) -> dict[str, dict[str, Any]]:
    """Precision, recall, F1 and support for every label of the model, in label order."""
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=labels, zero_division=0)
    return {
        label: {
            "precision": round(float(p), 6),
            "recall": round(float(r), 6),
            "f1": round(float(f), 6),
            "support": int(s),
        }
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


# Per-example statistics for the bootstrap (reprotune.evaluation.uncertainty) ----------------

CELL_KINDS = ("tp", "gold", "pred")
"""Per class k, one-hot counts of one example: gold and predicted are k (`tp:k`), gold is k
(`gold:k`), predicted is k (`pred:k`). Their sums over any set of examples hold the diagonal
and the margins of that set's confusion matrix, all that accuracy, macro-F1 and MCC need."""


def example_stats(predictions: pd.DataFrame, meta: ClassificationMeta) -> pd.DataFrame:
    """One row per test example, in table order: `gold`, `pred`, `correct` (0/1), and the
    one-hot cells `tp:<label>`, `gold:<label>`, `pred:<label>` for every label of the model
    (then any other label the table holds)."""
    gold, pred = predictions["gold"].astype(str).to_numpy(), predictions["pred"].astype(str).to_numpy()
    labels = list(meta.labels) + sorted((set(gold) | set(pred)) - set(meta.labels))
    columns: dict[str, Any] = {"gold": gold, "pred": pred, "correct": (gold == pred).astype("int64")}
    for kind, hit in (
        ("tp", lambda k: (gold == k) & (pred == k)),
        ("gold", lambda k: gold == k),
        ("pred", lambda k: pred == k),
    ):
        for label in labels:
            columns[f"{kind}:{label}"] = hit(label).astype("int64")
    return pd.DataFrame(columns, index=range(len(gold)))


class ConfusionHeadline(AdditiveHeadline):
    """Accuracy, macro-F1 and MCC from the summed one-hot cells of `example_stats`.

    The classes are whatever `tp:<label>` columns the statistics hold, so one headline serves
    every label set: `matrix` takes the `tp:`, `gold:` and `pred:` columns in that order, each in
    the order of the `tp:` columns, and `from_matrix_sums` reads the class count from the width."""

    def __init__(self) -> None:
        super().__init__(self._from_sums, tuple(f"{kind}:*" for kind in CELL_KINDS))

    @staticmethod
    def _from_sums(sums: Mapping[str, np.ndarray], n_rows: int) -> dict[str, np.ndarray]:
        raise NotImplementedError  # from_matrix_sums does the work

    def matrix(self, stats: pd.DataFrame) -> np.ndarray:
        labels = [str(c)[3:] for c in stats.columns if str(c).startswith("tp:")]
        if not labels:
            raise ValueError("statistics lack the one-hot columns (tp:<label>, ...) that the headline sums")
        columns = [f"{kind}:{label}" for kind in CELL_KINDS for label in labels]
        missing = [column for column in columns if column not in stats.columns]
        if missing:
            raise ValueError(f"statistics lack the column(s) {missing} that the headline sums")
        return stats.loc[:, columns].to_numpy(dtype=np.float64)

    def from_matrix_sums(self, sums: np.ndarray, n_rows: int) -> dict[str, np.ndarray]:
        sums = np.atleast_2d(np.asarray(sums, dtype=np.float64))
        k = sums.shape[1] // len(CELL_KINDS)
        tp, gold, pred = sums[:, :k], sums[:, k : 2 * k], sums[:, 2 * k :]
        total = gold.sum(axis=1)
        correct = tp.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            present = (gold + pred) > 0  # sklearn's macro average: classes in gold or predictions
            f1 = np.where(present, 2 * tp / np.where(present, gold + pred, 1), 0.0)
            n_present = present.sum(axis=1)
            macro_f1 = np.where(n_present > 0, f1.sum(axis=1) / np.maximum(n_present, 1), 0.0)
            accuracy = np.where(total > 0, correct / np.where(total > 0, total, 1), 0.0)
            # sklearn's multiclass MCC from the confusion matrix's trace and margins
            cov_true_pred = correct * total - (gold * pred).sum(axis=1)
            cov_pred = total**2 - (pred * pred).sum(axis=1)
            cov_true = total**2 - (gold * gold).sum(axis=1)
            denominator = cov_true * cov_pred
            mcc = np.where(denominator > 0, cov_true_pred / np.sqrt(np.where(denominator > 0, denominator, 1)), 0.0)
        return {"accuracy": accuracy, "macro_f1": macro_f1, "mcc": mcc}

    def __repr__(self) -> str:
        return "ConfusionHeadline(accuracy, macro_f1, mcc)"


HEADLINE = ConfusionHeadline()
"""The headline `score` reports (unrounded), as a function of summed one-hot cells."""

MCNEMAR = {"accuracy": "correct"}
"""Headline keys that also get McNemar's p, on this 0/1 column of `example_stats`: shown beside
the paired bootstrap's interval and p (`mcnemar_p_value`), which decide; McNemar decides nothing."""
