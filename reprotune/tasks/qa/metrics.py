"""Exact match and F1 with the official SQuAD answer normalisation, computed locally.

Normalisation (as in the official evaluate scripts): lower case, drop punctuation,
drop the articles a/an/the, collapse white space. A prediction scores the best
value over the gold answers. An unanswerable question (no gold text) counts as the
single gold answer "": right only when the prediction is empty too (SQuAD v2)."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from reprotune.core.additive import additive
from reprotune.tasks.qa.params import QaMeta, QaTaskParams

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(texts: Iterable[str]) -> list[str]:
    """Gold texts that survive normalisation, or [""] for an unanswerable question."""
    kept = [text for text in texts if normalize_answer(text)]
    return kept or [""]


def score_one(prediction: str, golds: Iterable[str]) -> tuple[float, float]:
    """(exact match, F1), each the maximum over the gold answers."""
    candidates = gold_answers(golds)
    return max(exact_match(prediction, g) for g in candidates), max(f1_score(prediction, g) for g in candidates)


def aggregate(predictions: list[str], golds: list[list[str]], with_negative: bool) -> dict[str, Any]:
    """Mean EM/F1 (fractions, not percent) and, for SQuAD v2, the answerable/unanswerable split."""
    rows = [(score_one(p, g), bool(gold_answers(g)[0])) for p, g in zip(predictions, golds)]
    total = len(rows)

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 6) if values else 0.0

    out: dict[str, Any] = {
        "exact_match": mean([em for (em, _), _ in rows]),
        "f1": mean([f1 for (_, f1), _ in rows]),
        "answered": mean([float(bool(normalize_answer(p))) for p in predictions]),
        "examples": total,
    }
    if with_negative:
        has = [scores for scores, answerable in rows if answerable]
        no = [scores for scores, answerable in rows if not answerable]
        out |= {
            "has_answer_exact_match": mean([em for em, _ in has]),
            "has_answer_f1": mean([f1 for _, f1 in has]),
            "has_answer_examples": len(has),
            "no_answer_accuracy": mean([em for em, _ in no]),
            "no_answer_examples": len(no),
        }
    return out


@dataclass(frozen=True)
class NullChoice:
    threshold: float
    """Answer when null score - best span score <= threshold."""
    f1: float
    """Mean F1 over the questions it was chosen on, at `threshold` (optimistic there)."""
    f1_at_zero: float
    """The same at a margin of 0, the fixed default before the choice."""


def _cut_threshold(diffs: list[float], cut: int) -> float:
    """A margin that answers exactly the first `cut` of the sorted distinct `diffs`: the
    midpoint between neighbours, one logit beyond the ends."""
    if not diffs:
        return 0.0
    if cut == 0:
        return diffs[0] - 1.0
    if cut == len(diffs):
        return diffs[-1] + 1.0
    return (diffs[cut - 1] + diffs[cut]) / 2


def choose_null_threshold(diffs: list[float | None], answer_f1: list[float], abstain_f1: list[float]) -> NullChoice:
    """The null-score margin with the best mean F1, as SQuAD 2.0's evaluation finds
    best_f1_thresh. Per question: `diffs` is null score - best span score, `answer_f1` its F1
    when it answers with the span, `abstain_f1` when it answers nothing (a None diff: no margin
    changes its prediction, e.g. no valid span; `abstain_f1` is then the F1 it gets). Among
    equally good margins the one nearest 0 wins, so the default moves only for a gain. Pass
    validation questions only: choosing on test would report an optimistic test score."""
    total = len(diffs)
    fixed = 0.0
    gains: dict[float, float] = {}
    for diff, answer, abstain in zip(diffs, answer_f1, abstain_f1, strict=True):
        fixed += abstain
        if diff is not None:
            gains[diff] = gains.get(diff, 0.0) + answer - abstain
    ordered = sorted(gains)

    def mean(value: float) -> float:
        return round(value / total, 6) if total else 0.0

    totals = [fixed]
    for diff in ordered:
        totals.append(totals[-1] + gains[diff])
    best_cut, best_value = 0, fixed
    for cut, value in enumerate(totals):
        better = value > best_value + 1e-9
        tie = abs(value - best_value) <= 1e-9
        if better or (tie and abs(_cut_threshold(ordered, cut)) < abs(_cut_threshold(ordered, best_cut))):
            best_cut, best_value = cut, value
    at_zero = fixed + sum(gain for diff, gain in gains.items() if diff <= 0.0)
    return NullChoice(round(_cut_threshold(ordered, best_cut), 6), mean(best_value), mean(at_zero))


def score(predictions: pd.DataFrame, meta: QaMeta, params: QaTaskParams) -> dict[str, Any]:
    """EM/F1 of the predictions table (`pred_text` against `gold_texts`)."""
    return aggregate(
        list(predictions["pred_text"]), [list(g) for g in predictions["gold_texts"]], meta.version_2_with_negative
    )


# Per-question statistics for the bootstrap (reprotune.evaluation.uncertainty) ---------------

HEADLINE_KEYS = ("exact_match", "f1")
"""The keys of `score` that get a confidence interval and a paired test."""


def example_stats(predictions: pd.DataFrame, meta: QaMeta) -> pd.DataFrame:
    """One row per test question, in table order: its exact match `em` (0/1) and `f1`, each
    the best over the gold answers, as `score` counts them."""
    rows = [score_one(p, list(g)) for p, g in zip(predictions["pred_text"], predictions["gold_texts"])]
    return pd.DataFrame(rows, columns=["em", "f1"], dtype="float64")


@additive("em", "f1")
def HEADLINE(sums: Mapping[str, np.ndarray], n_rows: int) -> dict[str, np.ndarray]:  # noqa: N802 (module constant)
    """Mean exact match and F1 over the questions: what `score` reports (unrounded)."""
    return {"exact_match": sums["em"] / max(n_rows, 1), "f1": sums["f1"] / max(n_rows, 1)}
