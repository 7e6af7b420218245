"""Entity-level precision, recall and F1 exactly as reprotune's NER evaluate stage reports them:
strict IOB2 (seqeval, mode="strict"), micro-averaged, plus word accuracy, per-type scores and
bootstrap intervals over sentences."""

from __future__ import annotations

import importlib
from typing import Any

import datasets
import pandas as pd

from reprotune.metrics_hub._common import metric_info, pipeline_numbers
from reprotune.tasks.ner.params import NerMeta

# By name: mypy checks stages/ as top-level modules and would take stages/evaluate.py for the library.
evaluate: Any = importlib.import_module("evaluate")

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: one list of word-level IOB2 tags per sentence (e.g. ["B-PER", "I-PER", "O"]).
    references: the gold tags, the same shape.
    labels: the tag set (default: every tag seen); only names the per-type columns.
    resamples, seed, level: the bootstrap behind `<metric>_ci_low` / `_ci_high` (the pipeline's
        defaults: 1000, 0, 0.95; resamples=0 leaves the intervals out).
Returns:
    What metrics/<task>/<method>.json holds: precision, recall, f1, token_accuracy, per_type,
    sentences and the intervals of f1, precision and recall.
Example:
    >>> metric = evaluate.load(reprotune.metrics_hub.module_path("ner"))
    >>> metric.compute(predictions=[["B-PER", "O"]], references=[["B-PER", "O"]], resamples=0)["f1"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Ner(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return metric_info(
            _DESCRIPTION,
            _KWARGS_DESCRIPTION,
            {
                "predictions": datasets.Sequence(datasets.Value("string")),
                "references": datasets.Sequence(datasets.Value("string")),
            },
        )

    def _compute(self, predictions, references, labels=None, resamples=1000, seed=0, level=0.95):
        table = pd.DataFrame({"gold": [list(r) for r in references], "pred": [list(p) for p in predictions]})
        tags = labels or sorted({tag for row in (*table["gold"], *table["pred"]) for tag in row})
        meta = NerMeta(labels=list(tags), types_missing_from_train=[])
        return pipeline_numbers("ner", table, meta, resamples, seed, level)
