"""params.yaml keys specific to token classification (NER), and the meta tokenize fixes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from reprotune.core.params import (
    DownloadParams,
    ErrorAnalysisParams,
    Strict,
    TaskParams,
    TokenizeParams,
)


class NerDownloadParams(DownloadParams):
    source: Literal["hub", "conll", "json", "jsonl", "parquet"] = Field(
        description="CSV is not offered: its cells cannot hold the lists of tokens and tags a sentence needs"
    )
    tokens_field: str = "tokens"
    tags_field: str = "ner_tags"
    token_column: int = 0
    tag_column: int = -1
    separator: str | None = Field("\t", description="column separator; null splits on any white space")
    token_prefix: str | None = Field(None, description="stripped from each token, e.g. WikiANN's 'en:'")
    invalid_iob: Literal["repair", "fail"] = "repair"
    labels: list[str] | None = Field(None, description="the full tag set; default: the tags seen in the splits")

    @field_validator("separator")
    @classmethod
    def _separator_not_empty(cls, value: str | None) -> str | None:
        if value == "":
            raise ValueError("separator must be a non-empty string, or null to split on any white space")
        return value


class NerWindows(Strict):
    """`tokenize.windows`: split a sentence longer than max_length into overlapping word windows."""

    stride: int = Field(gt=0, description="sub-tokens (at least, whole words) shared by consecutive windows")


class NerTokenizeParams(TokenizeParams):
    label_all_tokens: bool = False
    windows: NerWindows | None = Field(
        None,
        description="null: truncate at max_length (cut words are predicted 'O'); "
        "{stride: N}: overlapping word windows, every word predicted from its max-context window",
    )

    @model_validator(mode="after")
    def _stride_leaves_room(self) -> NerTokenizeParams:
        if self.windows is not None and self.windows.stride >= self.max_length - 2:
            raise ValueError(
                f"windows.stride must leave room for new words in every window: keep it below max_length - 2 "
                f"(got stride {self.windows.stride} with max_length {self.max_length})"
            )
        return self


class NerErrorAnalysisParams(ErrorAnalysisParams):
    pass


class NerTaskParams(TaskParams):
    type: Literal["ner"]
    download: NerDownloadParams
    tokenize: NerTokenizeParams
    error_analysis: NerErrorAnalysisParams


class NerMeta(Strict):
    """meta.json: the model's label order, and entity types no training sentence shows."""

    labels: list[str]
    types_missing_from_train: list[str]


PARAMS = NerTaskParams
META = NerMeta
PRETOKENIZED_INPUT = True
