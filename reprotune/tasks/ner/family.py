"""Token classification (NER) as a task family for the generic stages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset, DatasetDict

from reprotune.core.errors import ReprotuneError
from reprotune.modeling.inference import batches
from reprotune.modeling.model import load_labelled_model
from reprotune.sources.hub import load_hub
from reprotune.sources.readers import local_files
from reprotune.tasks.base import Meta, TaskFamily
from reprotune.tasks.ner.align import IGNORE, tokenize_batch, word_predictions
from reprotune.tasks.ner.analysis import analyse
from reprotune.tasks.ner.conll import read_conll
from reprotune.tasks.ner.metrics import entity_scores
from reprotune.tasks.ner.params import NerDownloadParams, NerTaskParams
from reprotune.tasks.ner.records import class_names, read_records, sentence_row
from reprotune.tasks.ner.spans import entity_spans, split_words
from reprotune.tasks.ner.tags import check_and_repair, label_list


class NerFamily(TaskFamily):
    name = "ner"
    params_model = NerTaskParams
    peft_task_type = "TOKEN_CLS"
    head_modules = ("classifier",)
    default_metric = "f1"
    greater_is_better = True
    pretokenized_input = True

    # download -------------------------------------------------------------
    def load_raw(self, params: NerDownloadParams) -> tuple[DatasetDict, dict[str, Any]]:  # type: ignore[override]
        splits: dict[str, list[dict]] = {}
        if params.source == "hub":
            hub = load_hub(params)
            for split, dataset in hub.items():
                splits[split] = self._rows_from_dataset(dataset, params, split)
        elif params.source == "conll":
            for split, path in local_files(params).items():
                splits[split] = read_conll(path, params.token_column, params.tag_column, params.separator,
                                           params.token_prefix)
        else:
            for split, path in local_files(params).items():
                records, names = read_records(path, params.source, params.tags_field)
                splits[split] = [sentence_row(record, params, str(record.get("id", f"{split}:{index}")), location,
                                              location, names)
                                 for index, (location, record) in enumerate(records)]
        report: dict[str, Any] = {"iob_repairs": {}}
        out = {}
        for split, rows in splits.items():
            repairs = 0
            for row in rows:
                where = f"{split} sentence {row['id']}"
                if row.get("where"):
                    where = f"{row['where']}: {where}"
                if len(row["tokens"]) != len(row["tags"]):
                    raise ReprotuneError(
                        f"{where}: {len(row['tokens'])} tokens but {len(row['tags'])} tags"
                    )
                row["tags"], fixed = check_and_repair(row["tags"], params.invalid_iob == "repair", where)
                repairs += fixed
            report["iob_repairs"][split] = repairs
            out[split] = Dataset.from_list([{"id": r["id"], "tokens": r["tokens"], "tags": r["tags"]} for r in rows])
        return DatasetDict(out), report

    @staticmethod
    def _rows_from_dataset(dataset: Dataset, params: NerDownloadParams, split: str) -> list[dict]:
        for field in (params.tokens_field, params.tags_field):
            if field not in dataset.column_names:
                raise ReprotuneError(
                    f"{split} split has no column '{field}' (it has {', '.join(dataset.column_names)}); "
                    "set download.tokens_field / download.tags_field"
                )
        names = class_names(dataset.features[params.tags_field])
        rows = []
        for index, example in enumerate(dataset):
            row_id = str(example.get("id", f"{split}:{index}"))
            rows.append(sentence_row(example, params, row_id, f"{split} sentence {row_id}", None, names))
        return rows

    def validate_raw(self, raw: DatasetDict, params: NerTaskParams) -> None:  # type: ignore[override]
        """With download.labels, every tag must be one of them; without, the label set is
        what the splits hold (a type missing from train is reported by tokenize)."""
        if not params.download.labels:
            return
        allowed = set(params.download.labels)
        for split in ("train", "validation", "test"):
            for example in raw[split]:
                unknown = [t for t in example["tags"] if t not in allowed]
                if unknown:
                    raise ReprotuneError(
                        f"{split} sentence {example['id']}: tag '{unknown[0]}' is not in download.labels "
                        f"({', '.join(params.download.labels)})"
                    )

    @staticmethod
    def _tags(dataset: Dataset) -> set[str]:
        return {tag for tags in dataset["tags"] for tag in tags}

    # tokenize -------------------------------------------------------------
    def prepare_meta(self, raw: DatasetDict, params: NerTaskParams) -> Meta:  # type: ignore[override]
        seen = set().union(*(self._tags(raw[split]) for split in raw))
        labels = params.download.labels or label_list(seen)
        train_types = {tag[2:] for tag in self._tags(raw["train"]) if tag != "O"}
        unseen = sorted({tag[2:] for tag in seen if tag != "O"} - train_types)
        return {"labels": labels, "types_missing_from_train": unseen}

    def tokenize(self, raw: DatasetDict, tokenizer: Any, params: NerTaskParams,  # type: ignore[override]
                 meta: Meta) -> tuple[DatasetDict, dict[str, Any]]:
        settings = params.tokenize
        features = raw.map(
            tokenize_batch,
            batched=True,
            batch_size=settings.batch_size,
            num_proc=settings.num_proc,
            fn_kwargs={"tokenizer": tokenizer, "labels": meta["labels"], "max_length": settings.max_length,
                       "label_all_tokens": settings.label_all_tokens},
            remove_columns=["tokens", "tags"],
            desc="tokenize and align",
        )
        report = {
            split: {
                "sentences": len(features[split]),
                "words": sum(len(t) for t in raw[split]["tokens"]),
                "words_dropped_by_tokenizer": int(sum(features[split]["words_dropped"])),
                "words_cut_by_truncation": int(sum(features[split]["words_cut"])),
                "sentences_truncated": int(sum(1 for c in features[split]["words_cut"] if c)),
            }
            for split in features
        }
        report["types_missing_from_train"] = meta.get("types_missing_from_train", [])
        return features, report

    # train ----------------------------------------------------------------
    def build_model(self, params: NerTaskParams, meta: Meta, source: str | None = None) -> Any:  # type: ignore[override]
        from transformers import AutoModelForTokenClassification

        return load_labelled_model(AutoModelForTokenClassification, params.model, meta["labels"], source)

    def collator(self, tokenizer: Any, params: NerTaskParams, meta: Meta) -> Callable:  # type: ignore[override]
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None)

    def train_metrics(self, meta: Meta, params: NerTaskParams, raw_eval: Dataset,  # type: ignore[override]
                      features_eval: Dataset) -> Callable[[Any], dict[str, float]]:
        labels = meta["labels"]

        def compute(prediction: Any) -> dict[str, float]:
            predicted = np.argmax(prediction.predictions, axis=-1)
            gold_seqs, pred_seqs = [], []
            for pred_row, gold_row in zip(predicted, prediction.label_ids):
                keep = gold_row != IGNORE
                gold_seqs.append([labels[i] for i in gold_row[keep]])
                pred_seqs.append([labels[i] for i in pred_row[keep]])
            scores = entity_scores(gold_seqs, pred_seqs)
            return {key: scores[key] for key in ("precision", "recall", "f1", "token_accuracy")}

        return compute

    # evaluate -------------------------------------------------------------
    def predict(self, model: Any, tokenizer: Any, raw: Dataset, features: Dataset, meta: Meta,  # type: ignore[override]
                params: NerTaskParams) -> pd.DataFrame:
        labels = meta["labels"]
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
                words = word_predictions(word_ids, best[offset, :length].tolist(), n_words)
                scores = word_predictions(word_ids, best_prob[offset, :length].tolist(), n_words)
                rows[i] = {
                    "id": ids[i],
                    "tokens": list(tokens[i]),
                    "gold": list(gold[i]),
                    "pred": [labels[w] if w is not None else "O" for w in words],
                    "score": [round(float(s), 6) if s is not None else 0.0 for s in scores],
                }
        return pd.DataFrame([rows[i] for i in sorted(rows)])

    def predict_records(self, model: Any, tokenizer: Any, records: list[dict[str, Any]], meta: Meta,  # type: ignore[override]
                        params: NerTaskParams) -> list[dict[str, Any]]:
        """Entities with character offsets, type and score; sub-tokens aggregate to words."""
        words = [split_words(record["text"]) for record in records]
        raw = Dataset.from_dict({"id": [str(i) for i in range(len(records))],
                                 "tokens": [[w for w, _, _ in ws] or [""] for ws in words],
                                 "tags": [["O"] * max(1, len(ws)) for ws in words]})
        features = raw.map(tokenize_batch, batched=True, remove_columns=["tokens", "tags"],
                           fn_kwargs={"tokenizer": tokenizer, "labels": meta["labels"],
                                      "max_length": params.tokenize.max_length, "label_all_tokens": False})
        table = self.predict(model, tokenizer, raw, features, meta, params)
        return [
            {"text": record["text"],
             "entities": entity_spans(record["text"], ws, list(row.pred)[:len(ws)], list(row.score)[:len(ws)])}
            for record, ws, row in zip(records, words, table.itertuples(index=False))
        ]

    def score(self, predictions: pd.DataFrame, meta: Meta, params: NerTaskParams) -> dict[str, Any]:  # type: ignore[override]
        return entity_scores([list(g) for g in predictions["gold"]], [list(p) for p in predictions["pred"]])

    # error-analysis -------------------------------------------------------
    def analyse(self, predictions: dict[str, pd.DataFrame], meta: Meta, params: NerTaskParams,  # type: ignore[override]
                report_dir: Path, confusion_dir: Path) -> dict[str, Any]:
        trained = {method: frame for method, frame in predictions.items() if method in ("full", "lora")}
        return analyse(trained, params.error_analysis.worst_n, report_dir, confusion_dir)


FAMILY = NerFamily()
