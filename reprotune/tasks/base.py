"""What a task family supplies to the generic stages, file by file.

Every family folder holds the same six modules, one job each, and each stage imports
only the ones it runs (so dvc.yaml can list exactly those as the stage's deps):

| module          | stage(s)                   | supplies                                       |
| --------------- | -------------------------- | ---------------------------------------------- |
| `params.py`     | every stage                | `PARAMS`, `META`, `PRETOKENIZED_INPUT`         |
| `sources.py`    | download                   | `load_raw`, `validate_raw`, `SPLIT_GROUP_COLUMN`, `TEXT_FIELDS` |
| `preprocess.py` | tokenize (train, evaluate) | `prepare_meta`, `tokenize`                     |
| `family.py`     | train, evaluate, predict   | `FAMILY`, a `TaskFamily` (model, batches, predictions) |
| `metrics.py`    | evaluate (train)           | `score`, `example_stats`, `HEADLINE(_KEYS)`    |
| `analysis.py`   | error-analysis             | `analyse`                                      |
| `__init__.py`   | (every module's package)   | `PIPELINE_TAG`, `TASK_NAME`, `INT8_METRIC`     |

Imports between them run one way: `family.py` may import `preprocess.py` and
`metrics.py`; `analysis.py` may import `metrics.py`; all may import `params.py`;
nothing imports `sources.py` or `analysis.py`. The Protocols below are what a
type checker holds each module to (`tests/test_families.py` checks every family, and that a
new family's folder is all it takes to add one).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import pandas as pd
from datasets import Dataset, DatasetDict
from pydantic import BaseModel

from reprotune.core.params import TaskParams

P = TypeVar("P", bound=TaskParams)
M = TypeVar("M", bound=BaseModel)


class ParamsModule(Protocol):
    @property
    def PARAMS(self) -> type[TaskParams]: ...  # noqa: N802 (module constants)

    @property
    def META(self) -> type[BaseModel]:  # noqa: N802
        """Facts fixed at tokenize time (label list, ...), saved as meta.json."""
        ...

    PRETOKENIZED_INPUT: bool
    """Inputs are lists of words (byte-level BPE tokenizers then need add_prefix_space)."""


class SourcesModule(Protocol):
    SPLIT_GROUP_COLUMN: str | None
    """Rows sharing this column's value stay on one side of a carved split (QA articles)."""
    TEXT_FIELDS: tuple[str, ...]
    """The columns that make an example's text, for finding the same text in two splits."""

    def load_raw(self, params: Any, /) -> tuple[DatasetDict, dict[str, Any]]:
        """The source (`params`: the family's download section) as splits with this family's
        standard columns, and a report of what was dropped or repaired
        (download_report.json). Everything later stages need from the download section
        (a fixed label order, ...) goes into the data or the report."""
        ...

    def validate_raw(self, raw: DatasetDict, params: Any, /) -> None:
        """Check the finished splits (labels unseen in training, ...); raise ReprotuneError."""
        ...


class PreprocessModule(Protocol):
    def prepare_meta(self, raw: DatasetDict, download_report: dict[str, Any], params: Any, /) -> BaseModel:
        """Facts derived from the raw data (and the download report) that training and evaluation share."""
        ...

    def tokenize(
        self, raw: DatasetDict, tokenizer: Any, params: Any, meta: Any, /
    ) -> tuple[DatasetDict, dict[str, Any]]:
        """Tokenize every split; return the features and a report of what was cut or dropped."""
        ...


class MetricsModule(Protocol):
    HEADLINE_KEYS: tuple[str, ...]
    """The keys of `score` that get a bootstrap interval (metrics/<task>/<method>.json) and a
    paired test (metrics/<task>/significance.json)."""

    @property
    def HEADLINE(self) -> Callable[[pd.DataFrame], Mapping[str, float]]:  # noqa: N802 (module constant)
        """`HEADLINE_KEYS` from `example_stats` rows, unrounded; additive (reprotune.core.additive),
        so the bootstrap needs only column sums."""
        ...

    def score(self, predictions: pd.DataFrame, meta: Any, params: Any, /) -> dict[str, Any]:
        """Metrics computed from the predictions table alone."""
        ...

    def example_stats(self, predictions: pd.DataFrame, meta: Any, /) -> pd.DataFrame:
        """One row per test example (the unit the bootstrap resamples: sentence, document,
        question, block), in a fixed order, holding what `HEADLINE` sums."""
        ...


class FamilyFacts(Protocol):
    """The family package itself (`reprotune/tasks/<family>/__init__.py`): facts that are not
    one stage's job, so that no module outside the family's folder keeps a table of families."""

    PIPELINE_TAG: str
    """The Hub pipeline the model serves (`transformers.pipeline(...)`, the card's metadata)."""
    TASK_NAME: str
    """The task in words, for the model card."""
    INT8_METRIC: bool
    """Whether the family's `predict` runs an ONNX model as is, so export scores int8 on the
    family's own metric (else on label accuracy over the parity features)."""


class AnalysisModule(Protocol):
    def analyse(
        self, predictions: dict[str, pd.DataFrame], meta: Any, params: Any, report_dir: Path, confusion_dir: Path, /
    ) -> dict[str, Any]:
        """`predictions` holds baseline, full and lora. Write tables and summary.md to report_dir,
        one `<method>.csv` per method (columns `actual`, `predicted`) to confusion_dir for
        DVC's confusion plot; return summary figures for metrics/<task>/error_summary.json."""
        ...


class TaskFamily(ABC, Generic[P, M]):
    """The model side of a family: what train, evaluate and predict need."""

    name: ClassVar[str]
    peft_task_type: ClassVar[str | None] = None
    """peft TaskType name (TOKEN_CLS, SEQ_CLS, QUESTION_ANS) or None."""
    head_modules: ClassVar[tuple[str, ...]] = ()
    """Modules trained in full under LoRA and saved with the adapter (the task head)."""
    default_metric: ClassVar[str] = "loss"
    """Key of `train_metrics` output used for the best checkpoint unless params name another."""
    greater_is_better: ClassVar[bool] = True
    predict_fields: ClassVar[tuple[str, ...]] = ("text",)
    """Fields a `predict` input record needs; a plain text line fills the first one."""

    @abstractmethod
    def build_model(self, params: P, meta: M, source: str | None = None) -> Any:
        """Load `params.model` (or a trained checkpoint at `source`) with this family's head."""

    @abstractmethod
    def collator(self, tokenizer: Any, params: P, meta: M) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        """Batch collator used for training and validation (dynamic padding)."""

    def trainer_class(self, base: type) -> type:
        """The Trainer class to train with: `base` unless the family changes how the loss runs."""
        return base

    def model_columns(self) -> list[str]:
        """Columns the model consumes; others stay in the data for evaluation only."""
        return ["input_ids", "attention_mask", "token_type_ids", "labels"]

    def train_metrics(
        self, meta: M, params: P, raw_eval: Dataset, features_eval: Dataset
    ) -> Callable[[Any], dict[str, float]] | None:
        """compute_metrics for the Trainer's validation (in dataset order), or None for loss only.
        It must compute the metric the test reports, the same way."""
        return None

    def tune_on_validation(
        self, model: Any, tokenizer: Any, raw: Dataset, features: Dataset, meta: M, params: P
    ) -> dict[str, Any]:
        """Post-processing settings chosen on the validation split (`raw`, `features`), never on
        test: what was chosen, recorded in the metrics and applied by `with_tuned` (the QA
        no-answer margin). Most families have nothing to choose."""
        return {}

    def with_tuned(self, params: P, tuned: dict[str, Any]) -> P:
        """`params` with what `tune_on_validation` chose (or a metrics file recorded) applied."""
        return params

    @abstractmethod
    def predict(self, model: Any, tokenizer: Any, raw: Dataset, features: Dataset, meta: M, params: P) -> pd.DataFrame:
        """One row per raw test example with gold and predicted values."""

    def predict_records(
        self, model: Any, tokenizer: Any, records: list[dict[str, Any]], meta: M, params: P
    ) -> list[dict[str, Any]]:
        """Predictions for user input (the `predict` command), one dict per record."""
        raise NotImplementedError(f"{self.name} has no predict support yet")
