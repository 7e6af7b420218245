"""From per-window start/end logits to one answer per example.

The best span is searched over every window of the example: the n-best start and
end positions of each window, spans inside the context only (offset not None),
end not before start, at most `max_answer_length` tokens. The span is cut from the
original context by character offsets. With unanswerable questions allowed, the
null score (CLS start + CLS end, the lowest over the windows) competes with the
best span through `null_score_threshold`, as in the official SQuAD v2 recipe."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Window:
    start_logits: np.ndarray
    end_logits: np.ndarray
    offsets: list[Any]
    """(start char, end char) per token; None outside the context."""
    cls_index: int = 0


@dataclass(frozen=True)
class Answer:
    text: str
    start: int
    """Character offset in the context; -1 when no answer is given."""
    score: float | None
    """start + end logit of the best span (None when no valid span exists)."""
    null_score: float | None
    window: int
    """Window the answer came from; -1 when no answer is given."""


@dataclass(frozen=True)
class Settings:
    n_best_size: int = 20
    max_answer_length: int = 30
    allow_null: bool = False
    null_score_threshold: float = 0.0


def _top(logits: np.ndarray, count: int) -> np.ndarray:
    return np.argsort(-logits, kind="stable")[:count]


def past_marks(context: str, end: int) -> int:
    """Move a span's end over the combining marks that follow it: uncased tokenizers
    strip accents, so the last token of a decomposed (NFD) "résumé" ends before its
    final U+0301 and the cut answer would lose it."""
    while end < len(context) and unicodedata.combining(context[end]):
        end += 1
    return end


def best_answer(context: str, windows: list[Window], settings: Settings) -> Answer:
    best: tuple[float, int, int, int] | None = None
    null_score: float | None = None
    for w, window in enumerate(windows):
        length = min(len(window.offsets), len(window.start_logits), len(window.end_logits))
        starts = np.asarray(window.start_logits[:length], dtype=np.float64)
        ends = np.asarray(window.end_logits[:length], dtype=np.float64)
        offsets = window.offsets
        if window.cls_index < length:
            here = float(starts[window.cls_index] + ends[window.cls_index])
            null_score = here if null_score is None else min(null_score, here)
        end_candidates = _top(ends, settings.n_best_size)
        for s in _top(starts, settings.n_best_size):
            if offsets[s] is None:
                continue
            for e in end_candidates:
                if offsets[e] is None or e < s or e - s + 1 > settings.max_answer_length:
                    continue
                score = float(starts[s] + ends[e])
                if best is None or score > best[0]:
                    best = (score, w, int(s), int(e))
    if best is None:
        return Answer("", -1, None, null_score, -1)
    score, w, s, e = best
    if settings.allow_null and null_score is not None and null_score - score > settings.null_score_threshold:
        return Answer("", -1, score, null_score, -1)
    start_char, end_char = windows[w].offsets[s][0], past_marks(context, windows[w].offsets[e][1])
    return Answer(context[start_char:end_char], int(start_char), score, null_score, w)


def answer_table(raw: Any, features: Any, start_logits: list[np.ndarray], end_logits: list[np.ndarray],
                 settings: Settings) -> pd.DataFrame:
    """One row per raw example: gold, predicted answer and where it came from.

    `start_logits[i]` / `end_logits[i]` belong to feature i, cut to that window's length;
    `answer_window` is the first window holding the gold answer (-1: none)."""
    windows: dict[str, list[Window]] = {}
    answer_window: dict[str, int] = {}
    for i, (example_id, offsets, window, hit, cls) in enumerate(zip(
            features["example_id"], features["offset_mapping"], features["window"],
            features["answer_in_window"], features["cls_index"])):
        windows.setdefault(example_id, []).append(Window(start_logits[i], end_logits[i], offsets, cls))
        if hit and example_id not in answer_window:
            answer_window[example_id] = window
    rows = []
    for example in raw:
        rid = example["id"]
        answer = best_answer(example["context"], windows.get(rid, []), settings)
        rows.append({
            "id": rid, "title": example["title"], "question": example["question"], "context": example["context"],
            "gold_texts": list(example["answers"]["text"]),
            "gold_starts": [int(s) for s in example["answers"]["answer_start"]],
            "pred_text": answer.text, "pred_start": answer.start,
            "score": None if answer.score is None else round(answer.score, 6),
            "null_score": None if answer.null_score is None else round(answer.null_score, 6),
            "pred_window": answer.window, "windows": len(windows.get(rid, [])),
            "answer_window": answer_window.get(rid, -1),
        })
    return pd.DataFrame(rows)
