"""Sequence classification (single texts and sentence pairs) as a task family for the generic stages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from reprotune.core.errors import ReprotuneError
from reprotune.modeling.inference import batches
from reprotune.modeling.model import load_labelled_model
from reprotune.tasks.base import Meta, TaskFamily
from reprotune.tasks.classification.analysis import analyse
from reprotune.tasks.classification.encode import encode_batch, split_report
from reprotune.tasks.classification.labels import check_seen_in_train
from reprotune.tasks.classification.metrics import (
    classification_scores,
    headline_scores,
)
from reprotune.tasks.classification.params import ClsDownloadParams, ClsTaskParams
from reprotune.tasks.classification.sources import (
    collect,
    iter_labels,
    to_dataset,
    values,
)

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


class ClassificationFamily(TaskFamily):
    name = "classification"
    params_model = ClsTaskParams
    peft_task_type = "SEQ_CLS"
    # BERT's pooler (a dense layer over [CLS]) and DistilBERT's pre_classifier feed the
    # classifier; the default encoder was trained with mean pooling, so LoRA trains them too.
    head_modules = ("classifier", "pre_classifier", "pooler", "score")
    default_metric = "accuracy"
    predict_fields = ("text",)
    greater_is_better = True

    # download -------------------------------------------------------------
    def load_raw(self, params: ClsDownloadParams) -> tuple[DatasetDict, dict[str, Any]]:  # type: ignore[override]
        return to_dataset(params, collect(params))

    def validate_raw(self, raw: DatasetDict, params: ClsTaskParams) -> None:  # type: ignore[override]
        train_labels = set(iter_labels(raw["train"]))
        for split in ("validation", "test"):
            check_seen_in_train(split, values(raw[split], "id"), list(iter_labels(raw[split])), train_labels)

    # tokenize -------------------------------------------------------------
    def prepare_meta(self, raw: DatasetDict, params: ClsTaskParams) -> Meta:  # type: ignore[override]
        """The label list is the raw ClassLabel's names (download.labels, the source's
        ClassLabel order, or the labels sorted), fixed here for every later stage."""
        labels = list(raw["train"].features["label"].names)
        in_train = set(iter_labels(raw["train"]))
        return {
            "labels": labels,
            "labels_missing_from_train": [label for label in labels if label not in in_train],
            "text_fields": [str(c) for c in params.download.text_fields],
            "pair": "text_pair" in raw["train"].column_names,
        }

    def tokenize(self, raw: DatasetDict, tokenizer: Any, params: ClsTaskParams,  # type: ignore[override]
                 meta: Meta) -> tuple[DatasetDict, dict[str, Any]]:
        settings = params.tokenize
        if not meta["pair"] and settings.truncation == "only_second":
            raise ReprotuneError("tokenize.truncation 'only_second' needs sentence pairs (two download.text_fields)")
        label_index = {label: i for i, label in enumerate(meta["labels"])}
        raw_names = raw["train"].features["label"].names
        features = raw.map(
            encode_batch,
            batched=True,
            batch_size=settings.batch_size,
            num_proc=settings.num_proc,
            fn_kwargs={"tokenizer": tokenizer, "max_length": settings.max_length, "truncation": settings.truncation,
                       "label_ids": [label_index[name] for name in raw_names]},
            remove_columns=raw["train"].column_names,
            desc="tokenize",
        )
        report: dict[str, Any] = {split: split_report(raw[split], features[split]) for split in features}
        report["labels"] = meta["labels"]
        report["labels_missing_from_train"] = meta["labels_missing_from_train"]
        report["max_length"] = settings.max_length
        return features, report

    # train ----------------------------------------------------------------
    def build_model(self, params: ClsTaskParams, meta: Meta, source: str | None = None) -> Any:  # type: ignore[override]
        from transformers import AutoModelForSequenceClassification

        return load_labelled_model(AutoModelForSequenceClassification, params.model, meta["labels"], source,
                                   problem_type="single_label_classification")

    def collator(self, tokenizer: Any, params: ClsTaskParams, meta: Meta) -> Callable:  # type: ignore[override]
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None)

    def train_metrics(self, meta: Meta, params: ClsTaskParams, raw_eval: Dataset,  # type: ignore[override]
                      features_eval: Dataset) -> Callable[[Any], dict[str, float]]:
        def compute(prediction: Any) -> dict[str, float]:
            logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
            return headline_scores(list(prediction.label_ids), list(np.argmax(logits, axis=-1)))

        return compute

    # evaluate -------------------------------------------------------------
    def predict(self, model: Any, tokenizer: Any, raw: Dataset, features: Dataset, meta: Meta,  # type: ignore[override]
                params: ClsTaskParams) -> pd.DataFrame:
        """One row per test example: id, text(s), gold and predicted label, the
        predicted label's probability (confidence) and every label's probability."""
        labels = meta["labels"]
        collate = self.collator(tokenizer, params, meta)
        gold = list(iter_labels(raw))
        texts = {column: values(raw, column) for column in ("text", "text_pair") if column in raw.column_names}
        ids, n_tokens, truncated = values(raw, "id"), values(features, "n_tokens"), values(features, "truncated")
        rows: dict[int, dict[str, Any]] = {}
        for indices, _, output in batches(model, features, collate, params.evaluate.batch_size, INPUTS,
                                          params.evaluate.precision):
            probs = torch.softmax(output.logits.float(), dim=-1).cpu()
            confidence, best = probs.max(-1)
            for offset, i in enumerate(indices):
                rows[i] = {
                    "id": ids[i],
                    **{column: texts_of[i] for column, texts_of in texts.items()},
                    "gold": gold[i],
                    "pred": labels[int(best[offset])],
                    "confidence": round(float(confidence[offset]), 6),
                    "probs": [round(float(p), 6) for p in probs[offset]],
                    "n_tokens": int(n_tokens[i]),
                    "truncated": bool(truncated[i]),
                }
        return pd.DataFrame([rows[i] for i in sorted(rows)])

    def predict_records(self, model: Any, tokenizer: Any, records: list[dict[str, Any]], meta: Meta,  # type: ignore[override]
                        params: ClsTaskParams) -> list[dict[str, Any]]:
        """The predicted label, its probability and every label's probability per record;
        a sentence-pair task reads the second text from `text_pair`."""
        raw = records_dataset(records, meta)
        features = raw.map(encode_batch, batched=True, remove_columns=raw.column_names,
                           fn_kwargs={"tokenizer": tokenizer, "max_length": params.tokenize.max_length,
                                      "truncation": params.tokenize.truncation,
                                      "label_ids": list(range(len(meta["labels"])))})
        table = self.predict(model, tokenizer, raw, features, meta, params)
        keep = [column for column in ("text", "text_pair") if column in table.columns]
        return [
            {**{column: row[column] for column in keep}, "label": row["pred"], "confidence": row["confidence"],
             "probs": dict(zip(meta["labels"], row["probs"]))}
            for row in table.to_dict("records")
        ]

    def score(self, predictions: pd.DataFrame, meta: Meta, params: ClsTaskParams) -> dict[str, Any]:  # type: ignore[override]
        return classification_scores(list(predictions["gold"]), list(predictions["pred"]), meta["labels"])

    # error-analysis -------------------------------------------------------
    def analyse(self, predictions: dict[str, pd.DataFrame], meta: Meta, params: ClsTaskParams,  # type: ignore[override]
                report_dir: Path, confusion_dir: Path) -> dict[str, Any]:
        settings = params.error_analysis
        return analyse(predictions, meta["labels"], settings.worst_n, settings.length_buckets, report_dir,
                       confusion_dir)


def records_dataset(records: list[dict[str, Any]], meta: Meta) -> Dataset:
    """User records as a raw split (with a placeholder label) for `predict`."""
    columns: dict[str, list] = {"id": [str(i) for i in range(1, len(records) + 1)],
                                "text": [str(record["text"]) for record in records]}
    if meta["pair"]:
        for number, record in enumerate(records, start=1):
            if record.get("text_pair") is None:
                raise ReprotuneError(
                    f"input record {number} lacks field 'text_pair'; this task classifies sentence pairs "
                    "(give JSON lines like {\"text\": \"...\", \"text_pair\": \"...\"})"
                )
        columns["text_pair"] = [str(record["text_pair"]) for record in records]
    columns["label"] = [0] * len(records)
    features = Features({**{name: Value("string") for name in columns if name != "label"},
                         "label": ClassLabel(names=meta["labels"])})
    return Dataset.from_dict(columns, features=features)


FAMILY = ClassificationFamily()
