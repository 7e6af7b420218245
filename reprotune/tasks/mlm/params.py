"""params.yaml keys specific to masked-language-model domain adaptation (`type: mlm`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from reprotune.core.assets import check_glob_pattern
from reprotune.core.params import (
    DownloadParams,
    ErrorAnalysisParams,
    EvaluateParams,
    Seed,
    Strict,
    TaskParams,
    TokenizeParams,
)


class MlmDownloadParams(DownloadParams):
    source: Literal["hub", "text", "csv", "tsv", "json", "jsonl", "parquet"]
    text_field: str = Field("text", description="column holding the text (hub, csv, tsv, json, jsonl, parquet)")
    document_per: Literal["line", "file"] = Field(
        "line", description="text source: one document per non-empty line, or one per file"
    )
    tsv_quoting: Literal["none", "csv"] = Field(
        "none",
        description="tsv: 'none' reads quote marks as text (raw GLUE files); 'csv' reads quoted fields, "
        "as pandas and HF `to_csv(sep='\\t')` write them",
    )
    pattern: str = Field("**/*.txt", description="text source given a directory: the files to read (glob)")
    invalid_utf8: Literal["fail", "replace", "skip"] = Field(
        "fail", description="text files that are not UTF-8: stop, replace bad bytes with U+FFFD, or leave the file out"
    )
    deduplicate: bool = Field(
        True, description="drop repeated documents, and validation/test documents that also occur in train"
    )

    @field_validator("pattern")
    @classmethod
    def _relative_pattern(cls, value: str) -> str:
        return check_glob_pattern(value)


class MlmTokenizeParams(TokenizeParams):
    # narrowed to None on purpose: a max_length set for mlm is refused (texts are never truncated)
    max_length: int | None = Field(  # type: ignore[assignment]
        None, description="not used by mlm: texts are never truncated; see chunk_size"
    )
    chunk_size: int = Field(
        128, gt=2, le=2**20, description="tokens per block after concatenating every text of a split"
    )
    last_chunk: Literal["keep", "drop"] = Field(
        "keep", description="the final block shorter than chunk_size: keep it (padded) or drop its tokens"
    )
    max_train_samples: int | None = Field(None, gt=0, description="seeded subset of train blocks")
    max_eval_samples: int | None = Field(None, gt=0, description="seeded subset of validation and of test blocks")
    sample_seed: Seed = 42
    masking: Literal["token", "whole_word"] = "token"
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="token masking: chance each token is chosen")
    wwm_probability: float = Field(0.15, gt=0, lt=1, description="whole-word masking: chance each word is chosen")
    mask_replace_prob: float = Field(0.8, ge=0, le=1, description="chosen tokens replaced by the mask token")
    random_replace_prob: float = Field(0.1, ge=0, le=1, description="chosen tokens replaced by a random token")
    mask_seed: Seed = Field(42, description="draws the fixed validation/test masks once, at tokenize time")

    @field_validator("max_length")
    @classmethod
    def _no_max_length(cls, value: int | None) -> int | None:
        if value is not None:
            raise ValueError("mlm never truncates texts; set tokenize.chunk_size instead of tokenize.max_length")
        return value

    @model_validator(mode="after")
    def _replacement_shares(self) -> MlmTokenizeParams:
        if self.mask_replace_prob + self.random_replace_prob > 1:
            raise ValueError("mask_replace_prob + random_replace_prob must be at most 1 (the rest stays unchanged)")
        return self


class MlmEvaluateParams(EvaluateParams):
    top_k: int = Field(5, gt=0, description="fills kept per masked token (top-k accuracy, fill-mask examples)")
    fill_mask_examples: int = Field(8, ge=0, description="held-out blocks that get a one-word fill-mask probe")


class MlmErrorAnalysisParams(ErrorAnalysisParams):
    frequency_edges: list[int] = Field(
        [1, 10, 100, 1000],
        min_length=1,
        description="train-count bucket edges: [1, 10] gives buckets 0, 1-9, 10+",
    )
    min_token_count: int = Field(3, gt=0, description="masked occurrences a token needs to be listed as improved/worse")

    @field_validator("frequency_edges")
    @classmethod
    def _increasing(cls, edges: list[int]) -> list[int]:
        if edges[0] < 1 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError("frequency_edges must be positive and strictly increasing, e.g. [1, 10, 100, 1000]")
        return edges


class MlmTaskParams(TaskParams):
    type: Literal["mlm"]
    download: MlmDownloadParams
    tokenize: MlmTokenizeParams
    evaluate: MlmEvaluateParams
    error_analysis: MlmErrorAnalysisParams


class MaskSettings(Strict):
    """How positions are chosen and replaced: fixed at tokenize time, so the train
    collator (fresh masks per batch) follows the rules the fixed eval masks were drawn by."""

    strategy: Literal["token", "whole_word"]
    probability: float = Field(gt=0, lt=1)
    mask_replace_prob: float = Field(default=0.8, ge=0, le=1)
    random_replace_prob: float = Field(default=0.1, ge=0, le=1)


class MlmMeta(Strict):
    """meta.json: what train (the collator) needs from the tokenize section, which it may not read."""

    masking: MaskSettings
    chunk_size: int


PARAMS = MlmTaskParams
META = MlmMeta
PRETOKENIZED_INPUT = False
