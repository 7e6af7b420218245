"""What a task family supplies to the generic stages.

The stages (download, tokenize, train-full, train-lora, evaluate, error-analysis)
are the same for every task; each family (NER, classification, QA, masked-LM)
implements this interface once, in its own module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from datasets import Dataset, DatasetDict

from reprotune.core.params import DownloadParams, TaskParams

Meta = dict[str, Any]
"""JSON-serialisable facts fixed at tokenize time (label list, ...), saved as meta.json."""


class TaskFamily(ABC):
    name: ClassVar[str]
    params_model: ClassVar[type[TaskParams]]
    peft_task_type: ClassVar[str | None] = None
    """peft TaskType name (TOKEN_CLS, SEQ_CLS, QUESTION_ANS) or None."""
    head_modules: ClassVar[tuple[str, ...]] = ()
    """Modules trained in full under LoRA and saved with the adapter (the task head)."""
    default_metric: ClassVar[str] = "loss"
    """Key of `train_metrics` output used for the best checkpoint unless params name another."""
    greater_is_better: ClassVar[bool] = True
    split_group_column: ClassVar[str | None] = None
    """Rows sharing this column's value stay on one side of a seeded split (QA articles)."""
    pretokenized_input: ClassVar[bool] = False
    """Inputs are lists of words (byte-level BPE tokenizers then need add_prefix_space)."""

    # download -------------------------------------------------------------
    @abstractmethod
    def load_raw(self, params: DownloadParams) -> tuple[DatasetDict, dict[str, Any]]:
        """Load the source as splits with this family's standard columns, plus a report
        of what was dropped or repaired (saved as download_report.json beside the data)."""

    def validate_raw(self, raw: DatasetDict, params: TaskParams) -> None:
        """Check the finished splits (labels unseen in training, ...); raise ReprotuneError."""

    # tokenize -------------------------------------------------------------
    def prepare_meta(self, raw: DatasetDict, params: TaskParams) -> Meta:
        """Facts derived from the raw data that training and evaluation share."""
        return {}

    @abstractmethod
    def tokenize(
        self, raw: DatasetDict, tokenizer: Any, params: TaskParams, meta: Meta
    ) -> tuple[DatasetDict, dict[str, Any]]:
        """Tokenize every split; return the features and a report of what was cut or dropped."""

    # train ----------------------------------------------------------------
    @abstractmethod
    def build_model(self, params: TaskParams, meta: Meta, source: str | None = None) -> Any:
        """Load `params.model` (or a trained checkpoint at `source`) with this family's head."""

    @abstractmethod
    def collator(self, tokenizer: Any, params: TaskParams, meta: Meta) -> Callable[[list[dict]], dict]:
        """Batch collator used for training and validation (dynamic padding)."""

    def trainer_class(self, base: type) -> type:
        """The Trainer class to train with: `base` unless the family changes how the loss runs."""
        return base

    def model_columns(self) -> list[str]:
        """Columns the model consumes; others stay in the data for evaluation only."""
        return ["input_ids", "attention_mask", "token_type_ids", "labels"]

    def train_metrics(
        self, meta: Meta, params: TaskParams, raw_eval: Dataset, features_eval: Dataset
    ) -> Callable[[Any], dict[str, float]] | None:
        """compute_metrics for the Trainer's per-epoch validation, or None for loss only."""
        return None

    # evaluate -------------------------------------------------------------
    @abstractmethod
    def predict(
        self, model: Any, tokenizer: Any, raw: Dataset, features: Dataset, meta: Meta, params: TaskParams
    ) -> pd.DataFrame:
        """One row per raw test example with gold and predicted values."""

    @abstractmethod
    def score(self, predictions: pd.DataFrame, meta: Meta, params: TaskParams) -> dict[str, Any]:
        """Metrics computed from the predictions table alone."""

    # predict (free input) --------------------------------------------------
    predict_fields: ClassVar[tuple[str, ...]] = ("text",)
    """Fields a `predict` input record needs; a plain text line fills the first one."""

    def predict_records(
        self, model: Any, tokenizer: Any, records: list[dict[str, Any]], meta: Meta, params: TaskParams
    ) -> list[dict[str, Any]]:
        """Predictions for user input (the `predict` command), one dict per record."""
        raise NotImplementedError(f"{self.name} has no predict support yet")

    # error-analysis -------------------------------------------------------
    @abstractmethod
    def analyse(
        self,
        predictions: dict[str, pd.DataFrame],
        meta: Meta,
        params: TaskParams,
        report_dir: Path,
        confusion_dir: Path,
    ) -> dict[str, Any]:
        """`predictions` holds baseline, full and lora. Write tables and summary.md to report_dir,
        one `<method>.csv` per method
        (columns `actual`, `predicted`) to confusion_dir for DVC's confusion plot;
        return summary figures for metrics/<task>/error_summary.json."""
