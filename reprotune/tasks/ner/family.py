"""Token classification (NER) for train, evaluate and predict: the model, word-level
predictions from the first sub-token of each word, and entity spans for free text.

With `tokenize.windows` a sentence spans several feature rows (`example_index`); each word
takes its prediction from the window where it has the most context (`max_context_words`),
in validation during training, in evaluate and in `reprotune-predict` alike."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
from datasets import Dataset

from reprotune.modeling.inference import batches
from reprotune.modeling.model import load_labelled_model
from reprotune.modeling.precision import pad_multiple
from reprotune.tasks.base import TaskFamily
from reprotune.tasks.ner.metrics import entities, entity_scores
from reprotune.tasks.ner.params import NerMeta, NerTaskParams
from reprotune.tasks.ner.preprocess import tokenize_split

T = TypeVar("T")

WORD = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")


def word_predictions(word_ids: Sequence[int], token_predictions: Sequence[T], n_words: int) -> list[T | None]:
    """The prediction of each word's first sub-token; None for words with no sub-token."""
    out: list[T | None] = [None] * n_words
    previous = -1
    for word, prediction in zip(word_ids, token_predictions):
        if word >= 0 and word != previous and word < n_words:
            out[word] = prediction
        previous = word
    return out


def word_tags(labels: list[str], word_ids: Sequence[int], token_predictions: Sequence[int], n_words: int) -> list[str]:
    """One tag per word; a word without sub-token (cut by truncation, dropped by the tokenizer) is 'O'."""
    return [labels[w] if w is not None else "O" for w in word_predictions(word_ids, token_predictions, n_words)]


def max_context_words(windows: Sequence[tuple[Sequence[int], Sequence[T]]], n_words: int) -> list[T | None]:
    """Each word's first-sub-token prediction from the window (word_ids, token predictions)
    where it has the most context: the largest min(sub-tokens before it, sub-tokens after
    it) inside the window, ties to the longer window, then the earlier (HF run_qa's "max
    context" score); None for words no window holds. One window: `word_predictions`."""
    if len(windows) == 1:
        return word_predictions(windows[0][0], windows[0][1], n_words)
    out: list[T | None] = [None] * n_words
    best = [-1.0] * n_words
    for word_ids, predictions in windows:
        content = [word for word in word_ids if word >= 0]
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for position, word in enumerate(content):
            first.setdefault(word, position)
            last[word] = position
        chosen = word_predictions(word_ids, predictions, n_words)
        for word, start in first.items():
            if word >= n_words or chosen[word] is None:
                continue
            score = min(start, len(content) - 1 - last[word]) + 0.01 * len(content)
            if score > best[word]:
                best[word], out[word] = score, chosen[word]
    return out


def sentence_windows(features: Dataset) -> list[list[int]] | None:
    """Feature rows per raw sentence (by `example_index`), or None for one row per sentence."""
    if "example_index" not in features.column_names:
        return None
    rows: dict[int, list[int]] = {}
    for row, example in enumerate(features["example_index"]):
        rows.setdefault(example, []).append(row)
    return [rows[example] for example in sorted(rows)]


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Words and punctuation marks with their character offsets in `text`."""
    return [(match.group(), match.start(), match.end()) for match in WORD.finditer(text)]


def entity_spans(
    text: str, words: list[tuple[str, int, int]], tags: list[str], scores: list[float]
) -> list[dict[str, Any]]:
    """Aggregate word tags (strict IOB2) into entities with character offsets and a mean score."""
    spans = []
    for kind, first, last in sorted(entities(tags), key=lambda e: e[1]):
        start, end = words[first][1], words[last - 1][2]
        spans.append(
            {
                "text": text[start:end],
                "type": kind,
                "start": start,
                "end": end,
                "score": round(sum(scores[first:last]) / (last - first), 4),
            }
        )
    return spans


class NerFamily(TaskFamily[NerTaskParams, NerMeta]):
    name = "ner"
    peft_task_type = "TOKEN_CLS"
    head_modules = ("classifier",)
    default_metric = "f1"
    greater_is_better = True

    def build_model(self, params: NerTaskParams, meta: NerMeta, source: str | None = None) -> Any:
        from transformers import AutoModelForTokenClassification

        return load_labelled_model(AutoModelForTokenClassification, params.model, meta.labels, source)

    def collator(
        self, tokenizer: Any, params: NerTaskParams, meta: NerMeta
    ) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_multiple())

    def train_metrics(
        self, meta: NerMeta, params: NerTaskParams, raw_eval: Dataset, features_eval: Dataset
    ) -> Callable[[Any], dict[str, float]]:
        """Validation entity scores on words, as the test scores them: each word's first
        sub-token (from its max-context window, with windows), words without one (cut by
        truncation) predicted 'O'. The Trainer validates in dataset order, so row i of the
        predictions is feature row i (sentence i without windows)."""
        labels, all_word_ids = meta.labels, features_eval["word_ids"]
        tokens, gold = raw_eval["tokens"], raw_eval["tags"]
        grouped = sentence_windows(features_eval) or [[i] for i in range(len(all_word_ids))]

        def compute(prediction: Any) -> dict[str, float]:
            predicted = np.argmax(prediction.predictions, axis=-1)
            pred_seqs = []
            for i, rows in enumerate(grouped):
                windows = [(all_word_ids[r], predicted[r, : len(all_word_ids[r])].tolist()) for r in rows]
                pred_seqs.append(
                    [labels[w] if w is not None else "O" for w in max_context_words(windows, len(tokens[i]))]
                )
            scores = entity_scores([list(g) for g in gold], pred_seqs)
            return {key: scores[key] for key in ("precision", "recall", "f1", "token_accuracy")}

        return compute

    def predict(
        self, model: Any, tokenizer: Any, raw: Dataset, features: Dataset, meta: NerMeta, params: NerTaskParams
    ) -> pd.DataFrame:
        """One row per sentence: tokens, gold and predicted word tags, and each word's tag probability;
        over windowed features, every word from its max-context window."""
        labels = meta.labels
        per_feature = self._feature_tags(model, features, self.collator(tokenizer, params, meta), params)
        grouped = sentence_windows(features)
        all_word_ids, ids, tokens, gold = features["word_ids"], raw["id"], raw["tokens"], raw["tags"]
        rows = []
        for i in range(len(raw)):
            n_words = len(tokens[i])
            if grouped is None:
                best, prob = per_feature[i]
                tags = word_tags(labels, all_word_ids[i], best, n_words)
                scores = word_predictions(all_word_ids[i], prob, n_words)
            else:
                windows = [(all_word_ids[r], list(zip(*per_feature[r]))) for r in grouped[i]]
                chosen = max_context_words(windows, n_words)
                tags = [labels[c[0]] if c is not None else "O" for c in chosen]
                scores = [c[1] if c is not None else None for c in chosen]
            rows.append(
                {
                    "id": ids[i],
                    "tokens": list(tokens[i]),
                    "gold": list(gold[i]),
                    "pred": tags,
                    "score": [round(float(s), 6) if s is not None else 0.0 for s in scores],
                }
            )
        return pd.DataFrame(rows)

    @staticmethod
    def _feature_tags(
        model: Any, features: Dataset, collate: Callable, params: NerTaskParams
    ) -> dict[int, tuple[list[int], list[float]]]:
        """Each feature's best tag id and that tag's probability per sub-token, padding cut off."""
        lengths = [len(word_ids) for word_ids in features["word_ids"]]
        out: dict[int, tuple[list[int], list[float]]] = {}
        for indices, _, output in batches(
            model,
            features,
            collate,
            params.evaluate.batch_size,
            ["input_ids", "attention_mask", "token_type_ids"],
            params.evaluate.precision,
        ):
            best_prob, best = torch.softmax(output.logits.float(), dim=-1).cpu().max(-1)
            for offset, r in enumerate(indices):
                out[r] = (best[offset, : lengths[r]].tolist(), best_prob[offset, : lengths[r]].tolist())
        return out

    def predict_records(
        self, model: Any, tokenizer: Any, records: list[dict[str, Any]], meta: NerMeta, params: NerTaskParams
    ) -> list[dict[str, Any]]:
        """Entities with character offsets, type and score; sub-tokens aggregate to words."""
        words = [split_words(record["text"]) for record in records]
        raw = Dataset.from_dict(
            {
                "id": [str(i) for i in range(len(records))],
                "tokens": [[w for w, _, _ in ws] or [""] for ws in words],
                "tags": [["O"] * max(1, len(ws)) for ws in words],
            }
        )
        features = tokenize_split(
            raw, tokenizer, meta.labels, params.tokenize.max_length, False, params.tokenize.windows
        )
        table = self.predict(model, tokenizer, raw, features, meta, params)
        return [
            {
                "text": record["text"],
                "entities": entity_spans(record["text"], ws, list(row.pred)[: len(ws)], list(row.score)[: len(ws)]),
            }
            for record, ws, row in zip(records, words, table.itertuples(index=False))
        ]


FAMILY = NerFamily()
