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
span through a margin, as in the official SQuAD v2 recipe: `evaluate.null_threshold`, or
(auto) the margin with the best F1 on the validation split (`tune_on_validation`), which
the evaluate stage records and applies unchanged to test."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from datasets import Dataset

from reprotune.core.errors import ReprotuneError
from reprotune.modeling.inference import batches
from reprotune.modeling.model import load_pretrained
from reprotune.modeling.precision import pad_multiple
from reprotune.modeling.resolve import model_source
from reprotune.tasks.base import TaskFamily
from reprotune.tasks.qa.metrics import NullChoice, choose_null_threshold, score, score_one
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


def best_span(context: str, windows: list[Window], settings: Settings) -> Answer:
    """The best span over the windows and the null score, before the null decision
    (text "" and start -1 only when no valid span exists)."""
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
    start_char, end_char = windows[w].offsets[s][0], past_marks(context, windows[w].offsets[e][1])
    return Answer(context[start_char:end_char], int(start_char), score, null_score, w)


def null_margin(span: Answer) -> float | None:
    """null score - best span score: the answer is withheld when this exceeds the threshold
    (None: nothing to decide, no span or no null score)."""
    if span.score is None or span.null_score is None:
        return None
    return span.null_score - span.score


def decide(span: Answer, settings: Settings) -> Answer:
    """`span` (from best_span), or no answer where the null score beats it by more than the threshold."""
    margin = null_margin(span)
    if settings.allow_null and margin is not None and margin > settings.null_score_threshold:
        return Answer("", -1, span.score, span.null_score, -1)
    return span


def best_answer(context: str, windows: list[Window], settings: Settings) -> Answer:
    return decide(best_span(context, windows, settings), settings)


@dataclass(frozen=True)
class ExampleSpans:
    """Per raw example, in order: its best span before the null decision, and where its gold
    answer fell (first window holding it, -1: none) and how many windows it had."""

    spans: list[Answer]
    answer_window: list[int]
    windows: list[int]


def example_spans(
    raw: Any, features: Any, start_logits: list[np.ndarray], end_logits: list[np.ndarray], settings: Settings
) -> ExampleSpans:
    """`start_logits[i]` / `end_logits[i]` belong to feature i, cut to that window's length.
    Reads only the raw examples' ids and contexts, never their answers."""
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
    ids, contexts = raw["id"], raw["context"]
    return ExampleSpans(
        [best_span(context, windows.get(rid, []), settings) for rid, context in zip(ids, contexts)],
        [answer_window.get(rid, -1) for rid in ids],
        [len(windows.get(rid, [])) for rid in ids],
    )


def answer_table(
    raw: Any, features: Any, start_logits: list[np.ndarray], end_logits: list[np.ndarray], settings: Settings
) -> pd.DataFrame:
    """One row per raw example: gold, predicted answer and where it came from.

    `start_logits[i]` / `end_logits[i]` belong to feature i, cut to that window's length;
    `answer_window` is the first window holding the gold answer (-1: none)."""
    return decided_table(raw, example_spans(raw, features, start_logits, end_logits, settings), settings)


def decided_table(raw: Any, found: ExampleSpans, settings: Settings) -> pd.DataFrame:
    """The predictions table of `answer_table` from spans already found, decided at `settings`."""
    rows = []
    for example, span, answer_window, windows in zip(raw, found.spans, found.answer_window, found.windows):
        answer = decide(span, settings)
        rows.append(
            {
                "id": example["id"],
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
                "windows": windows,
                "answer_window": answer_window,
            }
        )
    return pd.DataFrame(rows)


def choose_threshold(raw_validation: Any, found: ExampleSpans) -> NullChoice:
    """The null-score margin with the best validation F1 for spans found on validation."""
    diffs, answer_f1, abstain_f1 = [], [], []
    for golds, span in zip(raw_validation["answers"], found.spans):
        texts = list(golds["text"])
        margin = null_margin(span)
        abstain = score_one("", texts)[1]
        diffs.append(margin)
        answer_f1.append(score_one(span.text, texts)[1] if margin is not None else abstain)
        abstain_f1.append(abstain if span.text == "" or margin is not None else score_one(span.text, texts)[1])
    return choose_null_threshold(diffs, answer_f1, abstain_f1)


AUTO_UNRESOLVED = (
    "evaluate.null_threshold is auto but no validation-chosen margin is at hand: run the evaluate stage "
    "for this model first (dvc repro), or set evaluate.null_threshold to a number"
)


def _settings(evaluate: QaEvaluateParams, meta: QaMeta, threshold: float | None = None) -> Settings:
    """Post-processing settings; `threshold` (a margin chosen on validation) stands in for auto.
    An auto margin nobody resolved is 0: the evaluate stage resolves it before it predicts, the
    export's PyTorch/int8 comparison only needs the same margin on both sides, and
    `predict_records` refuses it."""
    chosen = evaluate.null_threshold if threshold is None else threshold
    return Settings(
        evaluate.n_best_size,
        evaluate.max_answer_length,
        meta.version_2_with_negative,
        0.0 if chosen == "auto" else float(chosen),
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

        collate: Collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple())
        return collate

    def model_columns(self) -> list[str]:
        return [*INPUT_COLUMNS, "start_positions", "end_positions"]

    def train_metrics(
        self, meta: QaMeta, params: QaTaskParams, raw_eval: Dataset, features_eval: Dataset
    ) -> Callable[[Any], dict[str, float]]:
        # Per-epoch validation uses the default post-processing so the training stages
        # read no `evaluate` key (dvc.yaml tracks only model and train_* for them). With
        # unanswerable questions that is auto: each checkpoint is scored at its own best
        # validation margin, as the evaluate stage will use it, so checkpoint selection does
        # not compare models that all abstain at a margin of 0.
        defaults = QaEvaluateParams.model_validate({})
        settings = _settings(defaults, meta, 0.0)
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
            found = example_spans(raw_eval, features_eval, cut_start, cut_end, settings)
            if not meta.version_2_with_negative:
                scores = score(decided_table(raw_eval, found, settings), meta, params)
                return {"exact_match": scores["exact_match"], "f1": scores["f1"]}
            choice = choose_threshold(raw_eval, found)
            chosen = _settings(defaults, meta, choice.threshold)
            scores = score(decided_table(raw_eval, found, chosen), meta, params)
            return {"exact_match": scores["exact_match"], "f1": scores["f1"], "null_threshold": choice.threshold}

        return compute

    # evaluate -------------------------------------------------------------
    def tune_on_validation(
        self, model: Any, tokenizer: Any, raw: Dataset, features: Dataset, meta: QaMeta, params: QaTaskParams
    ) -> dict[str, Any]:
        """SQuAD v2: the null-score margin, from `evaluate.null_threshold` or (auto) the one with
        the best F1 on the validation split given here (its answers are read; test's never are)."""
        if not meta.version_2_with_negative:
            return {}
        fixed = params.evaluate.null_threshold
        if fixed != "auto":
            return {"null_threshold": float(fixed), "null_threshold_source": "params"}
        choice = self.null_choice(model, tokenizer, raw, features, meta, params)
        return {
            "null_threshold": choice.threshold,
            "null_threshold_source": "validation",
            "null_threshold_validation_f1": choice.f1,
            "null_threshold_validation_f1_at_0": choice.f1_at_zero,
        }

    def null_choice(
        self, model: Any, tokenizer: Any, raw: Dataset, features: Dataset, meta: QaMeta, params: QaTaskParams
    ) -> NullChoice:
        starts, ends = self.logits(model, tokenizer, features, meta, params)
        return choose_threshold(raw, example_spans(raw, features, starts, ends, _settings(params.evaluate, meta, 0.0)))

    def with_tuned(self, params: QaTaskParams, tuned: dict[str, Any]) -> QaTaskParams:
        """`params` with an auto margin replaced by the one chosen on validation (`tuned`: what
        `tune_on_validation` returned, or the metrics file that recorded it); a number in
        params stays as it is."""
        if params.evaluate.null_threshold != "auto" or tuned.get("null_threshold_source") != "validation":
            return params
        evaluate = params.evaluate.model_copy(update={"null_threshold": float(tuned["null_threshold"])})
        return params.model_copy(update={"evaluate": evaluate})

    def logits(
        self, model: Any, tokenizer: Any, features: Dataset, meta: QaMeta, params: QaTaskParams
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Start and end logits per feature, each cut to its window's length."""
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
        return start_logits, end_logits

    def predict(
        self, model: Any, tokenizer: Any, raw: Dataset, features: Dataset, meta: QaMeta, params: QaTaskParams
    ) -> pd.DataFrame:
        start_logits, end_logits = self.logits(model, tokenizer, features, meta, params)
        return answer_table(raw, features, start_logits, end_logits, _settings(params.evaluate, meta))

    # predict (free input) --------------------------------------------------
    def predict_records(
        self, model: Any, tokenizer: Any, records: list[dict[str, Any]], meta: QaMeta, params: QaTaskParams
    ) -> list[dict[str, Any]]:
        """The answer span with character offsets and its score ("" when a v2 model abstains).
        A v2 model answers with the margin the evaluate stage chose (`params` passed through
        reprotune.evaluation.evaluate.tuned_task) or the number in params, never an unresolved auto."""
        if meta.version_2_with_negative and params.evaluate.null_threshold == "auto":
            raise ReprotuneError(AUTO_UNRESOLVED)
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
