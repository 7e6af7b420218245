"""Exact match and F1 exactly as reprotune's QA evaluate stage reports them: the official SQuAD
normalisation, the best over the gold answers, as fractions (not percent), plus bootstrap
intervals over questions. With version_2_with_negative, an empty gold list is unanswerable."""

from __future__ import annotations

import importlib
from typing import Any

import datasets
import pandas as pd

from reprotune.metrics_hub._common import metric_info, pipeline_numbers
from reprotune.tasks.qa.params import QaMeta, WindowSettings

# By name: mypy checks stages/ as top-level modules and would take stages/evaluate.py for the library.
evaluate: Any = importlib.import_module("evaluate")

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: the predicted answer text of each question ("" for no answer).
    references: the gold answer texts of each question (a list; empty: unanswerable).
    version_2_with_negative: also report has_answer_* / no_answer_* (SQuAD v2).
    resamples, seed, level: the bootstrap behind `<metric>_ci_low` / `_ci_high` (the pipeline's
        defaults: 1000, 0, 0.95; resamples=0 leaves the intervals out).
Returns:
    What metrics/<task>/<method>.json holds: exact_match, f1, answered, examples (and the v2 keys)
    and the intervals of exact_match and f1.
Example:
    >>> metric = evaluate.load(reprotune.metrics_hub.module_path("qa"))
    >>> metric.compute(predictions=["the Eiffel Tower"], references=[["Eiffel Tower"]], resamples=0)["exact_match"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Qa(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return metric_info(
            _DESCRIPTION,
            _KWARGS_DESCRIPTION,
            {
                "predictions": datasets.Value("string"),
                "references": datasets.Sequence(datasets.Value("string")),
            },
        )

    def _compute(
        self,
        predictions,
        references,
        version_2_with_negative=False,
        resamples=1000,
        seed=0,
        level=0.95,
    ):
        table = pd.DataFrame({"pred_text": list(predictions), "gold_texts": [list(r) for r in references]})
        meta = QaMeta(
            version_2_with_negative=version_2_with_negative,
            window=WindowSettings(max_length=384, doc_stride=128, max_question_length=64),
        )
        return pipeline_numbers("qa", table, meta, resamples, seed, level)
