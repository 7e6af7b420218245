"""Which test examples are copies of one text: the download stage's clusters, matched to the rows
of a predictions table, so the bootstrap resamples a repeated text once (a cluster bootstrap).

`data/<task>/raw/clusters.json` holds, for each evaluation split, one cluster id per saved row
(`reprotune.sources.overlap.cluster_ids`). A family's per-example statistics line up with those
rows when its predictions carry the raw `id` and the statistics hold one row per prediction (NER
sentences, classification examples, QA questions). Masked-LM statistics are blocks of
concatenated text, not raw rows, so they keep the row bootstrap.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reprotune.core import paths
from reprotune.core.arrow import load_splits
from reprotune.core.errors import ReprotuneError

CLUSTERS_FILE = "clusters.json"


@dataclass(frozen=True)
class TestClusters:
    """The test split's raw ids and each raw row's cluster, read from `source`."""

    ids: tuple[str, ...]
    labels: tuple[int, ...]
    source: str

    @property
    def count(self) -> int:
        """Distinct clusters among the test rows."""
        return len(set(self.labels))

    def for_table(self, predictions: pd.DataFrame, n_stats: int) -> np.ndarray | None:
        """The cluster of every statistics row of `predictions`, or None where the statistics are
        not one row per raw test example (no `id` column, or another row count: masked-LM)."""
        if "id" not in predictions.columns or len(predictions) != n_stats:
            return None
        wanted = [str(value) for value in predictions["id"]]
        if tuple(wanted) == self.ids:
            return np.asarray(self.labels, dtype=np.int64)
        position: dict[str, int] = {}
        for row, key in enumerate(self.ids):
            if key in position:
                raise ReprotuneError(
                    f"the test split behind {self.source} has the id '{key}' twice and the predictions are not in "
                    "its row order, so its clusters cannot be matched to them; rerun the evaluate stages (dvc repro)"
                )
            position[key] = row
        missing = [key for key in wanted if key not in position]
        if missing:
            raise ReprotuneError(
                f"the predictions hold test id '{missing[0]}' that the test split behind {self.source} lacks; "
                "rerun the evaluate stages (dvc repro)"
            )
        return np.asarray([self.labels[position[key]] for key in wanted], dtype=np.int64)


def _labels(payload: Any, source: Path, n_rows: int) -> tuple[int, ...] | None:
    if not isinstance(payload, dict):
        raise ReprotuneError(f"{source} must hold an object of split -> cluster ids; run the download stage again")
    labels = payload.get("test")
    if labels is None:
        return None
    if not isinstance(labels, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise ReprotuneError(f"{source}: 'test' must be a list of integer cluster ids; run the download stage again")
    if len(labels) != n_rows:
        raise ReprotuneError(
            f"{source} labels {len(labels)} test rows but the test split has {n_rows}; run the download stage again"
        )
    return tuple(labels)


def load_test_clusters(task_name: str, raw_ids: Sequence[Any] | None = None) -> TestClusters | None:
    """The test split's clusters of `task_name`, or None where the download stage wrote none (an
    older data/<task>/raw). `raw_ids` (the raw test split's `id` column) saves reading it again."""
    source = paths.raw_dir(task_name) / CLUSTERS_FILE
    if not source.is_file():
        return None
    try:
        payload = json.loads(source.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReprotuneError(f"{source} is not valid JSON ({exc}); run the download stage again") from exc
    if raw_ids is None:
        test = load_splits(paths.raw_dir(task_name), "download", ("test",))["test"]
        if "id" not in test.column_names:
            return None
        raw_ids = test["id"][:]
    labels = _labels(payload, source, len(raw_ids))
    if labels is None:
        return None
    return TestClusters(tuple(str(value) for value in raw_ids), labels, str(source))
