"""Extractive question answering (SQuAD format): model, batches and answers for train, evaluate and predict.

Validation and test features keep example ids and offsets besides the model inputs:
the generic training feeds only `model_columns()` to the model (eval loss from the
labels) while `train_metrics` and `predict` use the rest to turn window logits into
answers and score EM/F1 against the raw examples.

Post-processing searches the best span over every window of the example: the n-best
start and end positions of each window, spans inside the context only (offset not
None), end not before start, at most `max_answer_length` tokens. The span is cut from
the original context by character offsets. With unanswerable questions allowed, the
null score (CLS start + CLS end, the lowest over the windows) competes with the best
span through `null_score_threshold`, as in the official SQuAD v2 recipe."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset

from reprotune.core.errors import ReprotuneError
from reprotune.modeling.inference import batches
from reprotune.modeling.model import load_pretrained
from reprotune.modeling.resolve import model_source
from reprotune.tasks.base import TaskFamily
from reprotune.tasks.qa.metrics import score
from reprotune.tasks.qa.params import QaEvaluateParams, QaMeta, QaTaskParams
from reprotune.tasks.qa.preprocess import tokenize_batch

INPUT_COLUMNS = ["input_ids", "attention_mask", "token_type_ids"]
Collate = Callable[[list[dict[str, Any]]], dict[str, Any]]


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


def answer_table(
    raw: Any, features: Any, start_logits: list[np.ndarray], end_logits: list[np.ndarray], settings: Settings
) -> pd.DataFrame:
    """One row per raw example: gold, predicted answer and where it came from.

    `start_logits[i]` / `end_logits[i]` belong to feature i, cut to that window's length;
    `answer_window` is the first window holding the gold answer (-1: none)."""
    windows: dict[str, list[Window]] = {}
    answer_window: dict[str, int] = {}
    for i, (example_id, offsets, window, hit, cls) in enumerate(
        zip(
            features["example_id"],
            features["offset_mapping"],
            features["window"],
            features["answer_in_window"],
            features["cls_index"],
        )
    ):
        windows.setdefault(example_id, []).append(Window(start_logits[i], end_logits[i], offsets, cls))
        if hit and example_id not in answer_window:
            answer_window[example_id] = window
    rows = []
    for example in raw:
        rid = example["id"]
        answer = best_answer(example["context"], windows.get(rid, []), settings)
        rows.append(
            {
                "id": rid,
                "title": example["title"],
                "question": example["question"],
                "context": example["context"],
                "gold_texts": list(example["answers"]["text"]),
                "gold_starts": [int(s) for s in example["answers"]["answer_start"]],
                "pred_text": answer.text,
                "pred_start": answer.start,
                "score": None if answer.score is None else round(answer.score, 6),
                "null_score": None if answer.null_score is None else round(answer.null_score, 6),
                "pred_window": answer.window,
                "windows": len(windows.get(rid, [])),
                "answer_window": answer_window.get(rid, -1),
            }
        )
    return pd.DataFrame(rows)


def _pad_multiple() -> int | None:
    return 8 if torch.cuda.is_available() else None


def _settings(evaluate: QaEvaluateParams, meta: QaMeta) -> Settings:
    return Settings(
        evaluate.n_best_size, evaluate.max_answer_length, meta.version_2_with_negative, evaluate.null_score_threshold
    )


class QaFamily(TaskFamily[QaTaskParams, QaMeta]):
    name = "qa"
    # Not "QUESTION_ANS": peft 0.21's PeftModelForQuestionAnswering.forward drops token_type_ids
    # under LoRA, so a BERT-style model trains and predicts without its segment ids (and its
    # merged export disagrees with it). The plain PeftModel passes every input through.
    peft_task_type = None
    head_modules = ("qa_outputs",)
    default_metric = "f1"
    greater_is_better = True
    predict_fields = ("question", "context")

    # train ----------------------------------------------------------------
    def build_model(self, params: QaTaskParams, meta: QaMeta, source: str | None = None) -> Any:
        from transformers import AutoModelForQuestionAnswering

        model_params = params.model if source is None else params.model.model_copy(update={"name_or_path": source})
        model_source(model_params)
        return load_pretrained(AutoModelForQuestionAnswering, model_params)

    def collator(self, tokenizer: Any, params: QaTaskParams, meta: QaMeta) -> Collate:
        from transformers import DataCollatorWithPadding

        collate: Collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=_pad_multiple())
        return collate

    def model_columns(self) -> list[str]:
        return [*INPUT_COLUMNS, "start_positions", "end_positions"]

    def train_metrics(
        self, meta: QaMeta, params: QaTaskParams, raw_eval: Dataset, features_eval: Dataset
    ) -> Callable[[Any], dict[str, float]]:
        # Per-epoch validation uses the default post-processing so the training stages
        # read no `evaluate` key (dvc.yaml tracks only model and train_* for them).
        settings = _settings(QaEvaluateParams.model_validate({}), meta)
        lengths = [len(ids) for ids in features_eval["input_ids"]]
        starts = np.array(features_eval["start_positions"])

        def compute(prediction: Any) -> dict[str, float]:
            # The Trainer evaluates in dataset order (training.train.ordered_eval_trainer):
            # row i is feature i, padded past its own length with -100.
            start_logits, end_logits = prediction.predictions[:2]
            if not np.array_equal(np.asarray(prediction.label_ids[0]).reshape(-1), starts):
                raise ReprotuneError(
                    "the Trainer's validation predictions are not in the order of the validation features "
                    f"({len(start_logits)} predictions, {len(lengths)} features); report this"
                )
            cut_start = [start_logits[i, :length] for i, length in enumerate(lengths)]
            cut_end = [end_logits[i, :length] for i, length in enumerate(lengths)]
            scores = score(answer_table(raw_eval, features_eval, cut_start, cut_end, settings), meta, params)
            return {"exact_match": scores["exact_match"], "f1": scores["f1"]}

        return compute

    # evaluate -------------------------------------------------------------
    def predict(
        self, model: Any, tokenizer: Any, raw: Dataset, features: Dataset, meta: QaMeta, params: QaTaskParams
    ) -> pd.DataFrame:
        collate = self.collator(tokenizer, params, meta)
        lengths = [len(ids) for ids in features["input_ids"]]
        start_logits: list[np.ndarray] = [np.empty(0)] * len(lengths)
        end_logits: list[np.ndarray] = [np.empty(0)] * len(lengths)
        for indices, _, output in batches(
            model, features, collate, params.evaluate.batch_size, INPUT_COLUMNS, params.evaluate.precision
        ):
            starts = output.start_logits.float().cpu().numpy()
            ends = output.end_logits.float().cpu().numpy()
            for offset, i in enumerate(indices):
                start_logits[i] = starts[offset, : lengths[i]]
                end_logits[i] = ends[offset, : lengths[i]]
        return answer_table(raw, features, start_logits, end_logits, _settings(params.evaluate, meta))

    # predict (free input) --------------------------------------------------
    def predict_records(
        self, model: Any, tokenizer: Any, records: list[dict[str, Any]], meta: QaMeta, params: QaTaskParams
    ) -> list[dict[str, Any]]:
        """The answer span with character offsets and its score ("" when a v2 model abstains)."""
        for number, record in enumerate(records, start=1):
            for field in self.predict_fields:
                if not isinstance(record[field], str) or not record[field].strip():
                    raise ReprotuneError(f"input record {number}: '{field}' must be a non-empty string")
        raw = Dataset.from_list(
            [
                {
                    "id": str(i),
                    "title": "",
                    "context": r["context"],
                    "question": r["question"],
                    "answers": {"text": [], "answer_start": []},
                }
                for i, r in enumerate(records)
            ]
        )
        features = raw.map(
            tokenize_batch,
            batched=True,
            remove_columns=raw.column_names,
            fn_kwargs={"tokenizer": tokenizer, "settings": meta.window, "keep_offsets": True},
        )
        table = self.predict(model, tokenizer, raw, features, meta, params)
        return [
            {
                "question": r["question"],
                "context": r["context"],
                "answer": row.pred_text,
                "start": int(row.pred_start),
                "end": int(row.pred_start) + len(row.pred_text) if row.pred_text else -1,
                "score": None if pd.isna(row.score) else float(row.score),
            }
            for r, row in zip(records, table.itertuples(index=False))
        ]


FAMILY = QaFamily()
