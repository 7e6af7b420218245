"""params.yaml keys specific to sequence classification (`type: classification`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from reprotune.core.assets import check_glob_pattern
from reprotune.core.params import (
    DownloadParams,
    ErrorAnalysisParams,
    Strict,
    TaskParams,
    TokenizeParams,
)

SplitName = Literal["train", "validation", "test"]


def label_text(value: Any) -> Any:
    """An integer label value as YAML wrote it (`0`, `-1`) becomes its text; others stay."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value


Column = str | int
"""A column by name, or by position (0-based) for files without a header."""


class ClassificationDownloadParams(DownloadParams):
    source: Literal["hub", "csv", "tsv", "json", "jsonl", "parquet", "folders"]
    # A list of files per split widens the shared `files` (one file per split): only this
    # family's sources read it, never reprotune.sources.readers.local_files.
    files: dict[SplitName, str | list[str]] | None = Field(  # type: ignore[assignment]
        None, description="split -> file (or folder, for source folders), or a list of them read one after another"
    )
    text_fields: list[Column] = Field(
        ["text"],
        min_length=1,
        max_length=2,
        description="one text column, or two for sentence pairs; folders offer text, title and body",
    )
    label_field: Column = "label"
    id_field: Column | None = Field(None, description="column holding a row id; default: file:line or split:row")
    tsv_quoting: Literal["none", "csv"] = Field(
        "none",
        description="tsv: 'none' reads quote marks as text (raw GLUE files); 'csv' reads quoted fields, "
        "as pandas and HF `to_csv(sep='\\t')` write them",
    )
    header: bool = Field(True, description="csv/tsv: the first line names the columns")
    columns: list[str] | None = Field(None, description="names for the columns of csv/tsv files without a header")
    labels: list[str] | None = Field(
        None,
        description="the label set in the order the model uses; default: "
        "the Hub's ClassLabel order, else the train labels sorted",
    )
    label_map: dict[str, str] | None = Field(
        None, description="raw label value -> label name, e.g. {'0': unacceptable}"
    )
    skip_labels: list[str] = Field([], description="label values whose rows are dropped and counted (SNLI's '-')")
    empty_text: Literal["fail", "drop"] = Field(
        "fail", description="a row whose text is empty: stop, or drop it and count it"
    )
    pattern: str = Field("*.txt", description="folders: the files read inside each class folder (glob)")
    invalid_utf8: Literal["fail", "replace", "skip"] = Field(
        "fail",
        description="folders: a file that is not UTF-8: stop, replace the bad bytes with U+FFFD, or leave it out",
    )

    @field_validator("pattern")
    @classmethod
    def _relative_pattern(cls, value: str) -> str:
        return check_glob_pattern(value)

    @field_validator("labels", "skip_labels", "label_map", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        """YAML reads `labels: [0, 1]` or `label_map: {0: neg}` as numbers; label values
        are compared as text, so take them as text rather than refuse them."""
        if isinstance(value, list):
            return [label_text(item) for item in value]
        if isinstance(value, dict):
            return {label_text(key): label_text(item) for key, item in value.items()}
        return value

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None:
            if len(labels) < 2:
                raise ValueError("download.labels needs at least two labels")
            if len(set(labels)) != len(labels):
                raise ValueError("download.labels lists a label twice")
        return labels

    @model_validator(mode="after")
    def _columns_need_no_header(self) -> ClassificationDownloadParams:
        if self.columns is not None and self.header:
            raise ValueError("download.columns names the columns of files without a header; set header: false")
        return self


class ClassificationWindows(Strict):
    """`tokenize.windows`: split a document longer than max_length into overlapping windows."""

    stride: int = Field(gt=0, description="tokens shared by consecutive windows (the tokenizer's `stride`)")
    aggregate: Literal["mean", "max"] = Field(
        "mean",
        description="how a document's window logits combine into its prediction: their mean, or per label the largest",
    )


class ClassificationTokenizeParams(TokenizeParams):
    truncation: Literal["longest_first", "only_first", "only_second"] = Field(
        "longest_first",
        description="which text of a pair loses tokens beyond max_length (with windows: "
        "which text is split into windows; longest_first: the longer one)",
    )
    windows: ClassificationWindows | None = Field(
        None,
        description="null: truncate at max_length; {stride, aggregate}: every window of a long "
        "document is trained on with its label, and predictions aggregate the windows' logits",
    )

    @model_validator(mode="after")
    def _stride_leaves_room(self) -> ClassificationTokenizeParams:
        if self.windows is not None and self.windows.stride >= self.max_length - 3:
            raise ValueError(
                f"windows.stride must leave room for new tokens in every window: keep it below max_length - 3 "
                f"(got stride {self.windows.stride} with max_length {self.max_length})"
            )
        return self


class ClassificationErrorAnalysisParams(ErrorAnalysisParams):
    length_buckets: int | list[int] = Field(
        4, description="accuracy by input length: N equal-count buckets of word counts, or explicit word-count edges"
    )

    @field_validator("length_buckets")
    @classmethod
    def _buckets(cls, value: int | list[int]) -> int | list[int]:
        if isinstance(value, int) and value < 1:
            raise ValueError("length_buckets must be at least 1")
        if isinstance(value, list) and (not value or value[0] < 1 or any(b <= a for a, b in zip(value, value[1:]))):
            raise ValueError("length_buckets edges must be positive and strictly increasing, e.g. [10, 20, 40]")
        return value


class ClassificationTaskParams(TaskParams):
    type: Literal["classification"]
    download: ClassificationDownloadParams
    tokenize: ClassificationTokenizeParams
    error_analysis: ClassificationErrorAnalysisParams


class ClassificationMeta(Strict):
    """What tokenize fixes for training, evaluation and predict (meta.json)."""

    labels: list[str]
    """The model's label order: the raw ClassLabel names (download.labels, the source's order, or sorted)."""
    labels_missing_from_train: list[str]
    text_fields: list[str]
    """The source columns the text (and text_pair) came from, as the download report names them."""
    pair: bool
    """Sentence pairs: the raw data has a `text_pair` column."""
    windows: ClassificationWindows | None = None
    """`tokenize.windows`, which evaluate and predict (which may not read `tokenize`) need to
    aggregate a document's windows; left out of meta.json when off, so that stays as before."""

    @model_serializer(mode="wrap")
    def _leave_out_no_windows(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if self.windows is None:
            data.pop("windows", None)
        return data


PARAMS = ClassificationTaskParams
META = ClassificationMeta
PRETOKENIZED_INPUT = False
