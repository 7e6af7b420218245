"""params.yaml keys specific to extractive question answering (`type: qa`)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, FiniteFloat, field_validator, model_validator

from reprotune.core.params import (
    DownloadParams,
    ErrorAnalysisParams,
    EvaluateParams,
    Strict,
    TaskParams,
    TokenizeParams,
)


class QaDownloadParams(DownloadParams):
    source: Literal["hub", "json", "jsonl"] = Field(
        description="hub (squad, squad_v2), json (SQuAD nested data/paragraphs/qas) or jsonl (one flat record a line)"
    )
    version_2_with_negative: bool = Field(
        False, description="the data has unanswerable questions (SQuAD v2): allowed in the data, predicted by score"
    )
    split_by: Literal["auto", "title", "context"] = Field(
        "auto",
        description="groups kept whole when validation/test are carved out of train: article title, or paragraph "
        "context; auto takes titles when train has at least 10 distinct ones, else contexts",
    )


class QaTokenizeParams(TokenizeParams):
    max_length: int = Field(384, gt=8, description="tokens per window: question + context + special tokens")
    doc_stride: int = Field(128, gt=0, description="context tokens shared by consecutive windows of one example")
    max_question_length: int = Field(64, gt=0, description="questions are cut to this many tokens first")

    @model_validator(mode="after")
    def _room_for_context(self) -> QaTokenizeParams:
        if self.max_question_length + self.doc_stride >= self.max_length - 2:
            raise ValueError(
                "max_question_length + doc_stride must leave room for new context in every window: keep "
                f"it below max_length - 2 (got {self.max_question_length} + {self.doc_stride} with "
                f"max_length {self.max_length})"
            )
        return self


class QaEvaluateParams(EvaluateParams):
    n_best_size: int = Field(20, gt=0, description="start and end candidates kept per window")
    max_answer_length: int = Field(30, gt=0, description="longest answer span, in tokens")
    null_threshold: Literal["auto"] | FiniteFloat = Field(
        "auto",
        description="SQuAD v2: answer nothing when null score - best span score exceeds this margin; auto: "
        "the margin with the best F1 on the validation split (recorded in metrics/<task>/<method>.json)",
    )

    @field_validator("null_threshold", mode="before")
    @classmethod
    def _auto_or_number(cls, value: object) -> object:
        if value == "auto" or (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ):
            return value
        raise ValueError("must be auto or a finite number")


class QaErrorAnalysisParams(ErrorAnalysisParams):
    pass


class QaTaskParams(TaskParams):
    type: Literal["qa"]
    download: QaDownloadParams
    tokenize: QaTokenizeParams
    evaluate: QaEvaluateParams
    error_analysis: QaErrorAnalysisParams


class WindowSettings(Strict):
    """How questions and contexts were cut into windows: evaluate and predict must cut theirs alike."""

    max_length: int
    doc_stride: int
    max_question_length: int


class QaMeta(Strict):
    """Fixed at tokenize time (meta.json); the later stages read no download or tokenize key."""

    version_2_with_negative: bool
    """Unanswerable questions are allowed: post-processing may answer nothing."""
    window: WindowSettings


PARAMS = QaTaskParams
META = QaMeta
PRETOKENIZED_INPUT = False
