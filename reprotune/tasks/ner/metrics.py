"""Strict IOB2 entity spans, and entity-level scores with seqeval in strict IOB2 mode plus word accuracy."""

from __future__ import annotations

from typing import Any

import pandas as pd
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

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
    per_type = {kind: {("f1" if k == "f1-score" else k): v for k, v in scores.items()}
                for kind, scores in per_type.items()}
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
