"""Predictions for user records without per-request `datasets` work: records are tokenized
directly with the fast tokenizer and the family's own post-processing runs on the model's
outputs, so the online path and the pipeline's evaluation give the same predictions.

Two steps, so a server can batch across requests: `prepare` (per request: tokenize, refuse
what cannot run) and `run` (per batch: the forward passes, then post-processing). NER takes
and classification take this direct path; QA and masked-LM call their `predict_records`
(the batch pipeline's path).

Long inputs are never cut silently: `long_inputs="window"` splits a text longer than
`tokenize.max_length` into the family's windows (NER: whole-word windows; classification:
the tokenizer's overflowing windows, logits aggregated by `windows.aggregate`), with the
task's `tokenize.windows.stride`, or a quarter of max_length (and `mean`) where the task
has no windows, and says so (`"windows": n`); `"refuse"` rejects it with a RecordError."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from reprotune.core.errors import ReprotuneError
from reprotune.serving.loading import Loaded
from reprotune.serving.records import RecordError

LongInputs = Literal["window", "refuse"]
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


Reduce = Callable[[torch.Tensor, list[int]], list[Any]]


def ner_outputs(logits: torch.Tensor, lengths: list[int]) -> list[tuple[list[int], list[float]]]:
    """Each row's best label id and its probability per sub-token, padding cut off (NerFamily.predict's)."""
    best_prob, best = torch.softmax(logits.float(), dim=-1).cpu().max(-1)
    return [(best[i, :n].tolist(), best_prob[i, :n].tolist()) for i, n in enumerate(lengths)]


def row_logits(logits: torch.Tensor, lengths: list[int]) -> list[Any]:
    """Each row's logits as float32 numpy (ClassificationFamily's window path reads them so)."""
    values = logits.float().cpu().numpy()
    return [values[i] for i in range(len(lengths))]


@dataclass
class Prepared:
    """One record ready for `run`: its feature rows (one per window) and what post-processing needs."""

    record: dict[str, Any]
    rows: list[dict[str, list[int]]] = field(default_factory=list)
    word_ids: list[list[int]] = field(default_factory=list)
    words: list[tuple[str, int, int]] = field(default_factory=list)


def ner_prepare(
    record: dict[str, Any], tokenizer: Any, max_length: int, stride: int, long_inputs: LongInputs
) -> Prepared:
    """The record's sub-token rows as the tokenize stage makes them (`tokenize_windows`):
    one row when it fits in max_length, else whole-word windows."""
    from reprotune.tasks.ner.family import split_words
    from reprotune.tasks.ner.preprocess import word_windows

    words = split_words(record["text"])
    prepared = Prepared(record=record, words=words)
    if not words:
        return prepared
    tokens = [word for word, _, _ in words]
    full = tokenizer(tokens, is_split_into_words=True, truncation=False, verbose=False)
    ids = full.word_ids()
    if len(full["input_ids"]) <= max_length:
        spans = [(0, len(tokens))]
        encoded = [({key: full[key] for key in full.keys() if key in MODEL_INPUTS}, ids)]
    else:
        if long_inputs == "refuse":
            raise RecordError(
                f"the text has {len(full['input_ids'])} sub-tokens; the model takes at most {max_length} "
                "(allow windows, or send shorter texts)"
            )
        lengths = [0] * len(tokens)
        for word in ids:
            if word is not None:
                lengths[word] += 1
        capacity = max_length - tokenizer.num_special_tokens_to_add(pair=False)
        spans = word_windows(lengths, capacity, stride)
        window = tokenizer(
            [tokens[s:e] for s, e in spans], is_split_into_words=True, truncation=True, max_length=max_length
        )
        encoded = [
            ({key: window[key][k] for key in window.keys() if key in MODEL_INPUTS}, window.word_ids(k))
            for k in range(len(spans))
        ]
    for (start, _), (row, word_ids) in zip(spans, encoded):
        prepared.rows.append(row)
        prepared.word_ids.append([-1 if w is None else w + start for w in word_ids])
    return prepared


def ner_result(prepared: Prepared, outputs: list[tuple[list[int], list[float]]], labels: list[str]) -> dict[str, Any]:
    """Entities as NerFamily.predict + predict_records make them: each word from its
    max-context window, scores rounded as the predictions table rounds them."""
    from reprotune.tasks.ner.family import entity_spans, max_context_words

    text, words = prepared.record["text"], prepared.words
    if not words:
        return {"text": text, "entities": [], "windows": 0}
    windows = [(word_ids, list(zip(*output))) for word_ids, output in zip(prepared.word_ids, outputs)]
    chosen = max_context_words(windows, len(words))
    tags = [labels[c[0]] if c is not None else "O" for c in chosen]
    scores = [round(float(c[1]), 6) if c is not None else 0.0 for c in chosen]
    return {"text": text, "entities": entity_spans(text, words, tags, scores), "windows": len(outputs)}


def classification_prepare(
    record: dict[str, Any], tokenizer: Any, meta: Any, max_length: int, truncation: str, stride: int, long: LongInputs
) -> Prepared:
    """The record's rows as the tokenize stage's `encode_windows` makes them (one row when it fits)."""
    from reprotune.tasks.classification.preprocess import encode_windows

    batch: dict[str, list[Any]] = {"text": [record["text"]], "label": [0]}
    if meta.pair:
        if not isinstance(record.get("text_pair"), str):
            raise RecordError("lacks field 'text_pair' (a string); this task classifies sentence pairs")
        batch["text_pair"] = [record["text_pair"]]
    rows = encode_windows(batch, [0], tokenizer, max_length, truncation, [0], stride)
    if rows["n_tokens"][0] > max_length and long == "refuse":
        raise RecordError(
            f"the text has {rows['n_tokens'][0]} tokens; the model takes at most {max_length} "
            "(allow windows, or send shorter texts)"
        )
    if rows["truncated"][0]:
        raise RecordError("the pair's other text leaves no room for windows of this one; send shorter texts")
    keys = [key for key in MODEL_INPUTS if key in rows]
    return Prepared(record=record, rows=[{key: rows[key][k] for key in keys} for k in range(len(rows["input_ids"]))])


def classification_result(prepared: Prepared, logits: list[Any], meta: Any, how: str) -> dict[str, Any]:
    """Label, confidence and every label's probability, as ClassificationFamily.predict_records
    gives them: a document's window logits aggregated, then the softmax."""
    import numpy as np

    from reprotune.tasks.classification.family import aggregate_logits

    probs = torch.softmax(torch.from_numpy(aggregate_logits(np.stack(logits), how)).float(), dim=-1)
    confidence, best = probs.max(-1)
    record = prepared.record
    return {
        **{key: record[key] for key in ("text", "text_pair") if key in record and (key == "text" or meta.pair)},
        "label": meta.labels[int(best)],
        "confidence": round(float(confidence), 6),
        "probs": dict(zip(meta.labels, [round(float(p), 6) for p in probs])),
        "windows": len(logits),
    }


class OnlinePredictor:
    """`prepare(records)` then `run(prepared)`; calling it does both. `batch_sizes` records
    the rows of every forward pass (what the model saw), `max_batch` caps them."""

    def __init__(self, loaded: Loaded, long_inputs: LongInputs = "window", max_batch: int = 32) -> None:
        from reprotune.modeling.inference import device

        self.loaded = loaded
        self.long_inputs = long_inputs
        self.max_batch = max_batch
        self.batch_sizes: list[int] = []
        self.direct = loaded.task.type in ("ner", "classification")
        self._lock = threading.Lock()  # one forward at a time: the batcher's thread, or a CLI
        self._device = device()
        if isinstance(loaded.model, torch.nn.Module):
            loaded.model.eval()
            loaded.model.to(self._device)
        tokenize = loaded.task.tokenize
        self.max_length = int(tokenize.max_length)
        windows = getattr(loaded.meta, "windows", None) or getattr(tokenize, "windows", None)
        self.stride = int(windows.stride) if windows is not None else max(1, self.max_length // 4)
        self.aggregate = str(getattr(windows, "aggregate", "mean"))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.loaded.family.predict_fields)

    @property
    def description(self) -> dict[str, Any]:
        return {**self.loaded.description, "long_inputs": self.long_inputs, "max_length": self.max_length}

    def prepare(self, record: dict[str, Any]) -> Prepared:
        """Tokenize one record (direct path) or keep it as it is; RecordError if it cannot run."""
        loaded = self.loaded
        if loaded.task.type == "ner":
            return ner_prepare(record, loaded.tokenizer, self.max_length, self.stride, self.long_inputs)
        if loaded.task.type == "classification":
            truncation = str(loaded.task.tokenize.truncation)
            return classification_prepare(
                record, loaded.tokenizer, loaded.meta, self.max_length, truncation, self.stride, self.long_inputs
            )
        return Prepared(record=record)

    def run(self, prepared: list[Prepared]) -> list[dict[str, Any]]:
        """Predictions for prepared records, the rows of all of them batched together."""
        with self._lock:
            if not self.direct:
                return self._family_records([p.record for p in prepared])
            ner = self.loaded.task.type == "ner"
            flat = [(i, k) for i, p in enumerate(prepared) for k in range(len(p.rows))]
            outputs = self._forward([prepared[i].rows[k] for i, k in flat], ner_outputs if ner else row_logits)
            per_record: list[list[Any]] = [[] for _ in prepared]
            for (i, _), output in zip(flat, outputs):
                per_record[i].append(output)
            meta = self.loaded.meta
            if ner:
                return [ner_result(p, out, meta.labels) for p, out in zip(prepared, per_record)]
            return [classification_result(p, out, meta, self.aggregate) for p, out in zip(prepared, per_record)]

    def __call__(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.run([self.prepare(record) for record in records])

    def _family_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        loaded = self.loaded
        self.batch_sizes.append(len(records))
        try:
            return loaded.family.predict_records(loaded.model, loaded.tokenizer, records, loaded.meta, loaded.task)
        except NotImplementedError as exc:
            raise ReprotuneError(str(exc)) from exc

    def _forward(self, rows: list[dict[str, list[int]]], reduce: Reduce) -> list[Any]:
        """`reduce(logits, lengths)` of every row, rows run longest first in batches of at
        most max_batch, under evaluate.precision."""
        from reprotune.modeling.inference import autocast

        order = sorted(range(len(rows)), key=lambda r: -len(rows[r]["input_ids"]))
        out: dict[int, Any] = {}
        pad = self._pad()
        with torch.inference_mode(), autocast(self.loaded.task.evaluate.precision):
            for start in range(0, len(order), self.max_batch):
                chunk = order[start : start + self.max_batch]
                self.batch_sizes.append(len(chunk))
                batch = pad([rows[r] for r in chunk])
                logits = self.loaded.model(**{k: v.to(self._device) for k, v in batch.items()}).logits
                lengths = [len(rows[r]["input_ids"]) for r in chunk]
                for r, value in zip(chunk, reduce(logits, lengths)):
                    out[r] = value
        return [out[r] for r in range(len(rows))]

    def _pad(self) -> Callable[[list[dict[str, list[int]]]], dict[str, torch.Tensor]]:
        tokenizer = self.loaded.tokenizer

        def pad(rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
            return dict(tokenizer.pad(rows, return_tensors="pt"))

        return pad
