"""Sequence classification (single texts and sentence pairs) as a task family for the generic stages."""

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
from reprotune.tasks.base import TaskFamily
from reprotune.tasks.classification.metrics import headline_scores
from reprotune.tasks.classification.params import ClassificationMeta, ClassificationTaskParams
from reprotune.tasks.classification.preprocess import encode_batch, iter_labels, values

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


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

        return load_labelled_model(AutoModelForSequenceClassification, params.model, meta.labels, source,
                                   problem_type="single_label_classification")

    def collator(self, tokenizer: Any, params: ClassificationTaskParams, meta: ClassificationMeta) -> Callable:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None)

    def train_metrics(self, meta: ClassificationMeta, params: ClassificationTaskParams, raw_eval: Dataset,
                      features_eval: Dataset) -> Callable[[Any], dict[str, float]]:
        def compute(prediction: Any) -> dict[str, float]:
            logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
            return headline_scores(list(prediction.label_ids), list(np.argmax(logits, axis=-1)))

        return compute

    # evaluate -------------------------------------------------------------
    def predict(self, model: Any, tokenizer: Any, raw: Dataset, features: Dataset, meta: ClassificationMeta,
                params: ClassificationTaskParams) -> pd.DataFrame:
        """One row per test example: id, text(s), gold and predicted label, the
        predicted label's probability (confidence) and every label's probability."""
        labels = meta.labels
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

    def predict_records(self, model: Any, tokenizer: Any, records: list[dict[str, Any]], meta: ClassificationMeta,
                        params: ClassificationTaskParams) -> list[dict[str, Any]]:
        """The predicted label, its probability and every label's probability per record;
        a sentence-pair task reads the second text from `text_pair`."""
        raw = records_dataset(records, meta)
        features = raw.map(encode_batch, batched=True, remove_columns=raw.column_names,
                           fn_kwargs={"tokenizer": tokenizer, "max_length": params.tokenize.max_length,
                                      "truncation": params.tokenize.truncation,
                                      "label_ids": list(range(len(meta.labels)))})
        table = self.predict(model, tokenizer, raw, features, meta, params)
        keep = [column for column in ("text", "text_pair") if column in table.columns]
        return [
            {**{column: row[column] for column in keep}, "label": row["pred"], "confidence": row["confidence"],
             "probs": dict(zip(meta.labels, row["probs"]))}
            for row in table.to_dict("records")
        ]


def records_dataset(records: list[dict[str, Any]], meta: ClassificationMeta) -> Dataset:
    """User records as a raw split (with a placeholder label) for `predict`."""
    columns: dict[str, list] = {"id": [str(i) for i in range(1, len(records) + 1)],
                                "text": [str(record["text"]) for record in records]}
    if meta.pair:
        for number, record in enumerate(records, start=1):
            if record.get("text_pair") is None:
                raise ReprotuneError(
                    f"input record {number} lacks field 'text_pair'; this task classifies sentence pairs "
                    "(give JSON lines like {\"text\": \"...\", \"text_pair\": \"...\"})"
                )
        columns["text_pair"] = [str(record["text_pair"]) for record in records]
    columns["label"] = [0] * len(records)
    features = Features({**{name: Value("string") for name in columns if name != "label"},
                         "label": ClassLabel(names=meta.labels)})
    return Dataset.from_dict(columns, features=features)


FAMILY = ClassificationFamily()
