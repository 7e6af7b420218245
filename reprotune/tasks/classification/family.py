"""Sequence classification (single texts and sentence pairs) as a task family for the generic stages.

With `tokenize.windows` a document spans several feature rows (`example_index`); its
prediction comes from its windows' logits aggregated (`meta.windows.aggregate`: mean, or
per label the max) before the softmax, in validation during training, in evaluate and in
`reprotune-predict` alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import ClassLabel, Dataset, Features, Value

from reprotune.core.errors import ReprotuneError
from reprotune.modeling.inference import batches
from reprotune.modeling.model import load_labelled_model
from reprotune.modeling.precision import pad_multiple
from reprotune.tasks.base import TaskFamily
from reprotune.tasks.classification.metrics import headline_scores
from reprotune.tasks.classification.params import ClassificationMeta, ClassificationTaskParams
from reprotune.tasks.classification.preprocess import encode_split, iter_labels, per_example, values

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def document_rows(features: Dataset) -> list[list[int]] | None:
    """Feature rows per raw document (by `example_index`), or None for one row per document."""
    if "example_index" not in features.column_names:
        return None
    rows: dict[int, list[int]] = {}
    for row, example in enumerate(values(features, "example_index")):
        rows.setdefault(example, []).append(row)
    return [rows[example] for example in sorted(rows)]


def aggregate_logits(logits: np.ndarray, how: str) -> np.ndarray:
    """One document's logits from its windows' (windows x labels): their mean, or per label the max."""
    logits = np.asarray(logits, dtype=np.float32)
    if how == "mean":
        return logits.mean(axis=0)
    if how == "max":
        return logits.max(axis=0)
    raise ReprotuneError(f"unknown windows.aggregate '{how}'; allowed: mean, max")


def document_logits(logits: np.ndarray, grouped: list[list[int]], how: str) -> np.ndarray:
    """Documents x labels, each document's rows of `logits` aggregated."""
    return (
        np.stack([aggregate_logits(logits[rows], how) for rows in grouped])
        if grouped
        else np.zeros((0, logits.shape[-1]), dtype=np.float32)
    )


class ClassificationFamily(TaskFamily[ClassificationTaskParams, ClassificationMeta]):
    name = "classification"
    peft_task_type = "SEQ_CLS"
    # BERT's pooler (a dense layer over [CLS]) and DistilBERT's pre_classifier feed the
    # classifier; the default encoder was trained with mean pooling, so LoRA trains them too.
    head_modules = ("classifier", "pre_classifier", "pooler", "score")
    default_metric = "accuracy"

    # train ----------------------------------------------------------------
    def build_model(self, params: ClassificationTaskParams, meta: ClassificationMeta, source: str | None = None) -> Any:
        from transformers import AutoModelForSequenceClassification

        return load_labelled_model(
            AutoModelForSequenceClassification,
            params.model,
            meta.labels,
            source,
            problem_type="single_label_classification",
        )

    def collator(self, tokenizer: Any, params: ClassificationTaskParams, meta: ClassificationMeta) -> Callable:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple())

    def train_metrics(
        self, meta: ClassificationMeta, params: ClassificationTaskParams, raw_eval: Dataset, features_eval: Dataset
    ) -> Callable[[Any], dict[str, float]]:
        """Validation scores per document, as the test scores them (windows aggregated the same way)."""
        grouped = document_rows(features_eval)

        def compute(prediction: Any) -> dict[str, float]:
            logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
            gold = prediction.label_ids
            if grouped is not None and meta.windows is not None:
                logits = document_logits(np.asarray(logits), grouped, meta.windows.aggregate)
                gold = np.asarray(gold)[[rows[0] for rows in grouped]]
            return headline_scores(list(gold), list(np.argmax(logits, axis=-1)))

        return compute

    # evaluate -------------------------------------------------------------
    def predict(
        self,
        model: Any,
        tokenizer: Any,
        raw: Dataset,
        features: Dataset,
        meta: ClassificationMeta,
        params: ClassificationTaskParams,
    ) -> pd.DataFrame:
        """One row per test example: id, text(s), gold and predicted label, the
        predicted label's probability (confidence) and every label's probability."""
        labels = meta.labels
        collate = self.collator(tokenizer, params, meta)
        gold = list(iter_labels(raw))
        texts = {column: values(raw, column) for column in ("text", "text_pair") if column in raw.column_names}
        ids = values(raw, "id")
        n_tokens, truncated = per_example(features, "n_tokens"), per_example(features, "truncated")
        grouped = document_rows(features)
        if grouped is not None:
            if meta.windows is None:
                raise ReprotuneError("the features are windowed but meta.json has no windows; rerun tokenize")
            probs_of = self._window_probs(model, features, collate, grouped, meta.windows.aggregate, params)
        else:
            probs_of = {}
            for indices, _, output in batches(
                model, features, collate, params.evaluate.batch_size, INPUTS, params.evaluate.precision
            ):
                probs = torch.softmax(output.logits.float(), dim=-1).cpu()
                for offset, i in enumerate(indices):
                    probs_of[i] = probs[offset]
        rows: dict[int, dict[str, Any]] = {}
        for i in sorted(probs_of):
            confidence, best = probs_of[i].max(-1)
            rows[i] = {
                "id": ids[i],
                **{column: texts_of[i] for column, texts_of in texts.items()},
                "gold": gold[i],
                "pred": labels[int(best)],
                "confidence": round(float(confidence), 6),
                "probs": [round(float(p), 6) for p in probs_of[i]],
                "n_tokens": int(n_tokens[i]),
                "truncated": bool(truncated[i]),
            }
        return pd.DataFrame([rows[i] for i in sorted(rows)])

    def _window_probs(
        self,
        model: Any,
        features: Dataset,
        collate: Callable,
        grouped: list[list[int]],
        how: str,
        params: ClassificationTaskParams,
    ) -> dict[int, torch.Tensor]:
        """Each document's label probabilities: the softmax of its windows' aggregated logits."""
        logits: dict[int, np.ndarray] = {}
        for indices, _, output in batches(
            model, features, collate, params.evaluate.batch_size, INPUTS, params.evaluate.precision
        ):
            values_ = output.logits.float().cpu().numpy()
            for offset, row in enumerate(indices):
                logits[row] = values_[offset]
        if not logits:
            return {}
        table = np.stack([logits[row] for row in range(len(logits))])
        documents = torch.from_numpy(document_logits(table, grouped, how))
        probs = torch.softmax(documents.float(), dim=-1)
        return {i: probs[i] for i in range(len(grouped))}

    def predict_records(
        self,
        model: Any,
        tokenizer: Any,
        records: list[dict[str, Any]],
        meta: ClassificationMeta,
        params: ClassificationTaskParams,
    ) -> list[dict[str, Any]]:
        """The predicted label, its probability and every label's probability per record;
        a sentence-pair task reads the second text from `text_pair`."""
        raw = records_dataset(records, meta)
        features = encode_split(
            raw,
            tokenizer,
            params.tokenize.max_length,
            params.tokenize.truncation,
            list(range(len(meta.labels))),
            meta.windows,
        )
        table = self.predict(model, tokenizer, raw, features, meta, params)
        keep = [column for column in ("text", "text_pair") if column in table.columns]
        return [
            {
                **{column: row[column] for column in keep},
                "label": row["pred"],
                "confidence": row["confidence"],
                "probs": dict(zip(meta.labels, row["probs"])),
            }
            for row in table.to_dict("records")
        ]


def records_dataset(records: list[dict[str, Any]], meta: ClassificationMeta) -> Dataset:
    """User records as a raw split (with a placeholder label) for `predict`."""
    columns: dict[str, list] = {
        "id": [str(i) for i in range(1, len(records) + 1)],
        "text": [str(record["text"]) for record in records],
    }
    if meta.pair:
        for number, record in enumerate(records, start=1):
            if record.get("text_pair") is None:
                raise ReprotuneError(
                    f"input record {number} lacks field 'text_pair'; this task classifies sentence pairs "
                    '(give JSON lines like {"text": "...", "text_pair": "..."})'
                )
        columns["text_pair"] = [str(record["text_pair"]) for record in records]
    columns["label"] = [0] * len(records)
    features = Features(
        {**{name: Value("string") for name in columns if name != "label"}, "label": ClassLabel(names=meta.labels)}
    )
    return Dataset.from_dict(columns, features=features)


FAMILY = ClassificationFamily()
