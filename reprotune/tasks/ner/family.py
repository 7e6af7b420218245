"""Token classification (NER) for train, evaluate and predict: the model, word-level
predictions from the first sub-token of each word, and entity spans for free text."""

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
from reprotune.tasks.base import TaskFamily
from reprotune.tasks.ner.metrics import entities, entity_scores
from reprotune.tasks.ner.params import NerMeta, NerTaskParams
from reprotune.tasks.ner.preprocess import tokenize_batch

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


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Words and punctuation marks with their character offsets in `text`."""
    return [(match.group(), match.start(), match.end()) for match in WORD.finditer(text)]


def entity_spans(text: str, words: list[tuple[str, int, int]], tags: list[str],
                 scores: list[float]) -> list[dict[str, Any]]:
    """Aggregate word tags (strict IOB2) into entities with character offsets and a mean score."""
    spans = []
    for kind, first, last in sorted(entities(tags), key=lambda e: e[1]):
        start, end = words[first][1], words[last - 1][2]
        spans.append({
            "text": text[start:end], "type": kind, "start": start, "end": end,
            "score": round(sum(scores[first:last]) / (last - first), 4),
        })
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

    def collator(self, tokenizer: Any, params: NerTaskParams,
                 meta: NerMeta) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        from transformers import DataCollatorForTokenClassification

        pad_to = 8 if torch.cuda.is_available() else None
        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to)

    def train_metrics(self, meta: NerMeta, params: NerTaskParams, raw_eval: Dataset,
                      features_eval: Dataset) -> Callable[[Any], dict[str, float]]:
        """Validation entity scores on words, as the test scores them: each word's first
        sub-token, words without one (cut by truncation) predicted 'O'. The Trainer validates
        in dataset order, so row i of the predictions is sentence i."""
        labels, all_word_ids = meta.labels, features_eval["word_ids"]
        tokens, gold = raw_eval["tokens"], raw_eval["tags"]

        def compute(prediction: Any) -> dict[str, float]:
            predicted = np.argmax(prediction.predictions, axis=-1)
            pred_seqs = [word_tags(labels, word_ids, predicted[i, :len(word_ids)].tolist(), len(tokens[i]))
                         for i, word_ids in enumerate(all_word_ids)]
            scores = entity_scores([list(g) for g in gold], pred_seqs)
            return {key: scores[key] for key in ("precision", "recall", "f1", "token_accuracy")}

        return compute

    def predict(self, model: Any, tokenizer: Any, raw: Dataset, features: Dataset, meta: NerMeta,
                params: NerTaskParams) -> pd.DataFrame:
        """One row per sentence: tokens, gold and predicted word tags, and each word's tag probability."""
        labels = meta.labels
        collate = self.collator(tokenizer, params, meta)
        all_word_ids, ids, tokens, gold = features["word_ids"], raw["id"], raw["tokens"], raw["tags"]
        rows: dict[int, dict[str, Any]] = {}
        for indices, _, output in batches(model, features, collate, params.evaluate.batch_size,
                                          ["input_ids", "attention_mask", "token_type_ids"],
                                          params.evaluate.precision):
            probs = torch.softmax(output.logits.float(), dim=-1).cpu()
            best_prob, best = probs.max(-1)
            for offset, i in enumerate(indices):
                word_ids, n_words = all_word_ids[i], len(tokens[i])
                length = len(word_ids)
                scores = word_predictions(word_ids, best_prob[offset, :length].tolist(), n_words)
                rows[i] = {
                    "id": ids[i],
                    "tokens": list(tokens[i]),
                    "gold": list(gold[i]),
                    "pred": word_tags(labels, word_ids, best[offset, :length].tolist(), n_words),
                    "score": [round(float(s), 6) if s is not None else 0.0 for s in scores],
                }
        return pd.DataFrame([rows[i] for i in sorted(rows)])

    def predict_records(self, model: Any, tokenizer: Any, records: list[dict[str, Any]], meta: NerMeta,
                        params: NerTaskParams) -> list[dict[str, Any]]:
        """Entities with character offsets, type and score; sub-tokens aggregate to words."""
        words = [split_words(record["text"]) for record in records]
        raw = Dataset.from_dict({"id": [str(i) for i in range(len(records))],
                                 "tokens": [[w for w, _, _ in ws] or [""] for ws in words],
                                 "tags": [["O"] * max(1, len(ws)) for ws in words]})
        features = raw.map(tokenize_batch, batched=True, remove_columns=["tokens", "tags"],
                           fn_kwargs={"tokenizer": tokenizer, "labels": meta.labels,
                                      "max_length": params.tokenize.max_length, "label_all_tokens": False})
        table = self.predict(model, tokenizer, raw, features, meta, params)
        return [
            {"text": record["text"],
             "entities": entity_spans(record["text"], ws, list(row.pred)[:len(ws)], list(row.score)[:len(ws)])}
            for record, ws, row in zip(records, words, table.itertuples(index=False))
        ]


FAMILY = NerFamily()
