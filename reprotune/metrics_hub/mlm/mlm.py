"""Perplexity and masked-token accuracy exactly as reprotune's masked-LM evaluate stage reports
them: exp of the mean loss over every masked token (token-weighted), top-1 and top-k accuracy,
plus bootstrap intervals over blocks (a block's masked tokens share one context)."""

from __future__ import annotations

import importlib
from typing import Any

import datasets
import pandas as pd

from reprotune.metrics_hub._common import metric_info, pipeline_numbers
from reprotune.tasks.mlm.params import MaskSettings, MlmMeta

# By name: mypy checks stages/ as top-level modules and would take stages/evaluate.py for the library.
evaluate: Any = importlib.import_module("evaluate")

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: one record per masked token: {"loss": -log p(gold token), "correct": the top
        fill is the gold token, "in_top_k": the gold token is among the top k fills}.
    references: one record per masked token: {"block": the id of the block (text chunk) it is in}.
    resamples, seed, level: the bootstrap behind `<metric>_ci_low` / `_ci_high` (the pipeline's
        defaults: 1000, 0, 0.95; resamples=0 leaves the intervals out).
Returns:
    What metrics/<task>/<method>.json holds: perplexity, loss, accuracy, top_k_accuracy,
    masked_tokens, blocks and the intervals of perplexity, loss, accuracy and top_k_accuracy.
Example (the pipeline's predictions table `frame`, data/<task>/predictions/<method>.parquet):
    >>> metric = evaluate.load(reprotune.metrics_hub.module_path("mlm"))
    >>> metric.compute(predictions=frame[["loss", "correct", "in_top_k"]].to_dict("records"),
    ...                references=frame[["block"]].to_dict("records"))
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Mlm(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return metric_info(
            _DESCRIPTION,
            _KWARGS_DESCRIPTION,
            {
                "predictions": {
                    "loss": datasets.Value("float64"),
                    "correct": datasets.Value("bool"),
                    "in_top_k": datasets.Value("bool"),
                },
                "references": {"block": datasets.Value("int64")},
            },
        )

    def _compute(self, predictions, references, resamples=1000, seed=0, level=0.95):
        table = pd.DataFrame(
            {
                "block": [int(r["block"]) for r in references],
                "loss": [float(p["loss"]) for p in predictions],
                "correct": [bool(p["correct"]) for p in predictions],
                "in_top_k": [bool(p["in_top_k"]) for p in predictions],
            }
        )
        meta = MlmMeta(masking=MaskSettings(strategy="token", probability=0.15), chunk_size=128)
        return pipeline_numbers("mlm", table, meta, resamples, seed, level)
