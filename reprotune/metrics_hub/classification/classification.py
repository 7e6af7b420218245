"""Accuracy, macro-F1 and Matthews correlation exactly as reprotune's classification evaluate
stage reports them (scikit-learn), plus per-class scores and bootstrap intervals over examples."""

from __future__ import annotations

import importlib
from typing import Any

import datasets
import pandas as pd

from reprotune.metrics_hub._common import metric_info, pipeline_numbers
from reprotune.tasks.classification.params import ClassificationMeta

# By name: mypy checks stages/ as top-level modules and would take stages/evaluate.py for the library.
evaluate: Any = importlib.import_module("evaluate")

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: the predicted label of each example, as text (label names, or numbers as text).
    references: the gold labels, as text.
    labels: the model's label order for `per_class` (default: every label seen, sorted).
    resamples, seed, level: the bootstrap behind `<metric>_ci_low` / `_ci_high` (the pipeline's
        defaults: 1000, 0, 0.95; resamples=0 leaves the intervals out).
Returns:
    What metrics/<task>/<method>.json holds: accuracy, macro_f1, mcc, per_class, examples and the
    intervals of accuracy, macro_f1 and mcc.
Example:
    >>> metric = evaluate.load(reprotune.metrics_hub.module_path("classification"))
    >>> metric.compute(predictions=["pos", "neg"], references=["pos", "pos"], resamples=0)["accuracy"]
    0.5
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Classification(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return metric_info(
            _DESCRIPTION,
            _KWARGS_DESCRIPTION,
            {
                "predictions": datasets.Value("string"),
                "references": datasets.Value("string"),
            },
        )

    def _compute(self, predictions, references, labels=None, resamples=1000, seed=0, level=0.95):
        table = pd.DataFrame({"gold": [str(r) for r in references], "pred": [str(p) for p in predictions]})
        names = [str(label) for label in labels] if labels else sorted(set(table["gold"]) | set(table["pred"]))
        meta = ClassificationMeta(labels=names, labels_missing_from_train=[], text_fields=["text"], pair=False)
        return pipeline_numbers("classification", table, meta, resamples, seed, level)
