"""Extractive question answering (SQuAD format) as a task family for the generic stages.

Every split is tokenized into windows with start/end labels AND, for validation and
test, example ids and offsets: the generic training feeds only `model_columns()` to
the model (eval loss from the labels) while `train_metrics` and `predict` use the
rest to turn window logits into answers and score EM/F1 against the raw examples."""

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
from reprotune.modeling.model import load_pretrained
from reprotune.modeling.resolve import model_source
from reprotune.tasks.base import Meta, TaskFamily
from reprotune.tasks.qa import analysis
from reprotune.tasks.qa.eval_order import feature_order
from reprotune.tasks.qa.features import (
    WindowSettings,
    check_settings,
    tokenize_batch,
    window_report,
)
from reprotune.tasks.qa.params import QaDownloadParams, QaEvaluateParams, QaTaskParams
from reprotune.tasks.qa.postprocess import Settings, answer_table
from reprotune.tasks.qa.sources import (
    FEATURES,
    GROUP_COLUMN,
    check_splittable,
    load_records,
)
from reprotune.tasks.qa.squad_metrics import aggregate

SPLITS = ("train", "validation", "test")
INPUT_COLUMNS = ["input_ids", "attention_mask", "token_type_ids"]


def _pad_multiple() -> int | None:
    return 8 if torch.cuda.is_available() else None


def _settings(evaluate: QaEvaluateParams, meta: Meta) -> Settings:
    return Settings(evaluate.n_best_size, evaluate.max_answer_length, bool(meta["version_2_with_negative"]),
                    evaluate.null_score_threshold)


class QaFamily(TaskFamily):
    name = "qa"
    params_model = QaTaskParams
    peft_task_type = "QUESTION_ANS"
    head_modules = ("qa_outputs",)
    default_metric = "f1"
    greater_is_better = True
    split_group_column = GROUP_COLUMN

    # download -------------------------------------------------------------
    def load_raw(self, params: QaDownloadParams) -> tuple[DatasetDict, dict[str, Any]]:  # type: ignore[override]
        # Checked here, not in load_records: the generic carving that follows would only
        # say "cannot split by 'group'", while this check names the split_by/files keys.
        raw, report = load_records(params)
        check_splittable(report, params)
        return raw, report

    # tokenize -------------------------------------------------------------
    def prepare_meta(self, raw: DatasetDict, params: QaTaskParams) -> Meta:  # type: ignore[override]
        # A download key read at tokenize time: safe, because the flag is also written to
        # download_report.json inside data/<task>/raw, so changing it changes tokenize's deps.
        return {"version_2_with_negative": params.download.version_2_with_negative}

    def tokenize(self, raw: DatasetDict, tokenizer: Any, params: QaTaskParams,  # type: ignore[override]
                 meta: Meta) -> tuple[DatasetDict, dict[str, Any]]:
        settings = WindowSettings(params.tokenize.max_length, params.tokenize.doc_stride,
                                  params.tokenize.max_question_length)
        check_settings(tokenizer, settings)
        features: dict[str, Dataset] = {}
        report: dict[str, Any] = {"max_length": settings.max_length, "doc_stride": settings.doc_stride,
                                  "max_question_length": settings.max_question_length}
        for split in SPLITS:
            features[split] = raw[split].map(
                tokenize_batch,
                batched=True,
                batch_size=params.tokenize.batch_size,
                num_proc=params.tokenize.num_proc,
                fn_kwargs={"tokenizer": tokenizer, "settings": settings, "keep_offsets": split != "train"},
                remove_columns=raw[split].column_names,
                desc=f"windows for {split}",
            )
            report[split] = window_report(features[split], raw[split])
        return DatasetDict(features), report

    # train ----------------------------------------------------------------
    def build_model(self, params: QaTaskParams, meta: Meta, source: str | None = None) -> Any:  # type: ignore[override]
        from transformers import AutoModelForQuestionAnswering

        model_params = params.model if source is None else params.model.model_copy(update={"name_or_path": source})
        model_source(model_params)
        return load_pretrained(AutoModelForQuestionAnswering, model_params)

    def collator(self, tokenizer: Any, params: QaTaskParams, meta: Meta) -> Callable:  # type: ignore[override]
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=_pad_multiple())

    def model_columns(self) -> list[str]:
        return [*INPUT_COLUMNS, "start_positions", "end_positions"]

    def train_metrics(self, meta: Meta, params: QaTaskParams, raw_eval: Dataset,  # type: ignore[override]
                      features_eval: Dataset) -> Callable[[Any], dict[str, float]]:
        # Per-epoch validation uses the default post-processing so the training stages
        # read no `evaluate` key (dvc.yaml tracks only train_* for them).
        settings = _settings(QaEvaluateParams(), meta)
        lengths = np.array([len(ids) for ids in features_eval["input_ids"]])
        starts = np.array(features_eval["start_positions"])
        ends = np.array(features_eval["end_positions"])
        orders = [(p.eval_batch_size, p.seed, p.group_by_length) for p in (params.train_full, params.train_lora)]

        def compute(prediction: Any) -> dict[str, float]:
            start_logits, end_logits = prediction.predictions[:2]
            order = feature_order(start_logits, prediction.label_ids, starts, ends, lengths, orders, _pad_multiple())
            row_of = np.empty_like(order)
            row_of[order] = np.arange(len(order))
            cut_start = [start_logits[row_of[i], :lengths[i]] for i in range(len(lengths))]
            cut_end = [end_logits[row_of[i], :lengths[i]] for i in range(len(lengths))]
            table = answer_table(raw_eval, features_eval, cut_start, cut_end, settings)
            scores = self._aggregate(table, meta)
            return {"exact_match": scores["exact_match"], "f1": scores["f1"]}

        return compute

    # evaluate -------------------------------------------------------------
    def predict(self, model: Any, tokenizer: Any, raw: Dataset, features: Dataset, meta: Meta,  # type: ignore[override]
                params: QaTaskParams) -> pd.DataFrame:
        collate = self.collator(tokenizer, params, meta)
        lengths = [len(ids) for ids in features["input_ids"]]
        start_logits: list[np.ndarray] = [np.empty(0)] * len(lengths)
        end_logits: list[np.ndarray] = [np.empty(0)] * len(lengths)
        for indices, _, output in batches(model, features, collate, params.evaluate.batch_size, INPUT_COLUMNS,
                                          params.evaluate.precision):
            starts = output.start_logits.float().cpu().numpy()
            ends = output.end_logits.float().cpu().numpy()
            for offset, i in enumerate(indices):
                start_logits[i] = starts[offset, :lengths[i]]
                end_logits[i] = ends[offset, :lengths[i]]
        return answer_table(raw, features, start_logits, end_logits, _settings(params.evaluate, meta))

    # predict (free input) --------------------------------------------------
    predict_fields = ("question", "context")

    def predict_records(self, model: Any, tokenizer: Any, records: list[dict[str, Any]], meta: Meta,  # type: ignore[override]
                        params: QaTaskParams) -> list[dict[str, Any]]:
        """The answer span with character offsets and its score ("" when a v2 model abstains)."""
        for number, record in enumerate(records, start=1):
            for field in self.predict_fields:
                if not isinstance(record[field], str) or not record[field].strip():
                    raise ReprotuneError(f"input record {number}: '{field}' must be a non-empty string")
        raw = Dataset.from_list([
            {"id": str(i), "title": "", "context": r["context"], "question": r["question"],
             "answers": {"text": [], "answer_start": []}, GROUP_COLUMN: ""} for i, r in enumerate(records)
        ], features=FEATURES)
        settings = WindowSettings(params.tokenize.max_length, params.tokenize.doc_stride,
                                  params.tokenize.max_question_length)
        features = raw.map(tokenize_batch, batched=True, remove_columns=raw.column_names,
                           fn_kwargs={"tokenizer": tokenizer, "settings": settings, "keep_offsets": True})
        table = self.predict(model, tokenizer, raw, features, meta, params)
        return [
            {"question": r["question"], "context": r["context"], "answer": row.pred_text,
             "start": int(row.pred_start), "end": int(row.pred_start) + len(row.pred_text) if row.pred_text else -1,
             "score": None if pd.isna(row.score) else float(row.score)}
            for r, row in zip(records, table.itertuples(index=False))
        ]

    @staticmethod
    def _aggregate(predictions: pd.DataFrame, meta: Meta) -> dict[str, Any]:
        return aggregate(list(predictions["pred_text"]), [list(g) for g in predictions["gold_texts"]],
                         bool(meta["version_2_with_negative"]))

    def score(self, predictions: pd.DataFrame, meta: Meta, params: QaTaskParams) -> dict[str, Any]:  # type: ignore[override]
        return self._aggregate(predictions, meta)

    # error-analysis -------------------------------------------------------
    def analyse(self, predictions: dict[str, pd.DataFrame], meta: Meta, params: QaTaskParams,  # type: ignore[override]
                report_dir: Path, confusion_dir: Path) -> dict[str, Any]:
        return analysis.analyse(predictions, params.error_analysis.worst_n, report_dir, confusion_dir)


FAMILY = QaFamily()
