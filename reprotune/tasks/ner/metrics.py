"""Strict IOB2 entity spans, and entity-level scores with seqeval in strict IOB2 mode plus word accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from reprotune.core.additive import additive
from reprotune.tasks.ner.params import NerMeta, NerTaskParams

Entity = tuple[str, int, int]
"""(type, first word, last word + 1)."""


def entities(tags: list[str]) -> set[Entity]:
    """Strict IOB2 spans: an entity starts at B- and continues over I- of the same type;
    a stray I- starts nothing (seqeval's strict mode counts it the same way)."""
    spans: set[Entity] = set()
    kind: str | None = None
    start = 0
    for position, tag in enumerate(list(tags) + ["O"]):
        continues = kind is not None and tag == f"I-{kind}"
        if kind is not None and not continues:
            spans.add((kind, start, position))
            kind = None
        if tag.startswith("B-"):
            kind, start = tag[2:], position
    return spans


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, Any]:
    """Overall (micro) precision/recall/F1 and the same per entity type."""
    report = classification_report(gold, predicted, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    per_type = {
        kind: {key: round(float(values[key]), 6) for key in ("precision", "recall", "f1-score")}
        | {"support": int(values["support"])}
        for kind, values in report.items()
        if not kind.endswith(" avg")
    }
    per_type = {
        kind: {("f1" if k == "f1-score" else k): v for k, v in scores.items()} for kind, scores in per_type.items()
    }
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    correct = sum(g == p for gs, ps in zip(gold, predicted) for g, p in zip(gs, ps))
    total = sum(len(gs) for gs in gold)
    return {
        "precision": round(float(micro["precision"]), 6),
        "recall": round(float(micro["recall"]), 6),
        "f1": round(float(micro["f1-score"]), 6),
        "token_accuracy": round(correct / total, 6) if total else 0.0,
        "per_type": per_type,
        "sentences": len(gold),
    }


def score(predictions: pd.DataFrame, meta: NerMeta, params: NerTaskParams) -> dict[str, Any]:
    """Scores of the word-level predictions table (one row per sentence: gold and pred tags)."""
    return entity_scores([list(g) for g in predictions["gold"]], [list(p) for p in predictions["pred"]])


# Per-sentence statistics for the bootstrap (reprotune.evaluation.uncertainty) ---------------

HEADLINE_KEYS = ("f1", "precision", "recall")
"""The keys of `score` that get a confidence interval and a paired test."""


def example_stats(predictions: pd.DataFrame, meta: NerMeta) -> pd.DataFrame:
    """One row per test sentence, in table order: strict-IOB2 entities predicted right (`tp`),
    predicted but not in gold (`fp`) and in gold but not predicted (`fn`), and the same counts
    per entity type (`tp:PER`, `fp:PER`, `fn:PER`, ...; every type of the label set)."""
    types = sorted({label[2:] for label in meta.labels if label[:2] in ("B-", "I-")})
    rows = []
    for gold_tags, pred_tags in zip(predictions["gold"], predictions["pred"]):
        gold, pred = entities(list(gold_tags)), entities(list(pred_tags))
        right, spurious, missed = gold & pred, pred - gold, gold - pred
        row = {"tp": len(right), "fp": len(spurious), "fn": len(missed)}
        for kind in {e[0] for e in gold | pred} - set(types):
            types.append(kind)
        for kind in types:
            row[f"tp:{kind}"] = sum(e[0] == kind for e in right)
            row[f"fp:{kind}"] = sum(e[0] == kind for e in spurious)
            row[f"fn:{kind}"] = sum(e[0] == kind for e in missed)
        rows.append(row)
    columns = ["tp", "fp", "fn", *(f"{c}:{kind}" for kind in types for c in ("tp", "fp", "fn"))]
    return pd.DataFrame(rows, columns=columns).fillna(0).astype("int64")


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (seqeval's zero_division=0)."""
    return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 0.0)


@additive("tp", "fp", "fn")
def HEADLINE(sums: Mapping[str, np.ndarray], n_rows: int) -> dict[str, np.ndarray]:  # noqa: N802 (module constant)
    """Micro entity F1, precision and recall from summed counts: what `score` reports (unrounded)."""
    tp, fp, fn = sums["tp"], sums["fp"], sums["fn"]
    return {"f1": _ratio(2 * tp, 2 * tp + fp + fn), "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn)}
