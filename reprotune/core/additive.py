"""Headlines that depend on the test examples only through column sums (the fast bootstrap).

A task family describes its test predictions as one row of sufficient statistics per test
example (`example_stats` in its metrics.py) and its headline metrics as a function of the column
sums of those rows (`HEADLINE`). The bootstrap in `reprotune.evaluation.uncertainty` evaluates
such a headline from ``counts @ stats`` for every resample at once. This module lives in core,
not in reprotune.evaluation, because the family metrics modules define their headline with it
and the train stages import those modules: they must not depend on the bootstrap code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

Headline = Callable[[pd.DataFrame], Mapping[str, float]]
SumsFunction = Callable[[Mapping[str, np.ndarray], int], Mapping[str, Any]]


class AdditiveHeadline:
    """A headline that depends on the rows only through the sums of ``columns``.

    ``from_sums(sums, n_rows)`` gets ``{column: array of shape (R,)}`` (R resamples, or R = 1)
    and the number of rows, and returns ``{metric: array of shape (R,)}`` (scalars broadcast).
    It must be vectorised over R: use numpy operations, ``np.where`` for guarded divisions.
    """

    def __init__(self, from_sums: SumsFunction, columns: Sequence[str]):
        if not columns:
            raise ValueError("an additive headline needs at least one column")
        self.from_sums = from_sums
        self.columns = tuple(columns)
        functools.update_wrapper(self, from_sums)

    def matrix(self, stats: pd.DataFrame) -> np.ndarray:
        """The ``columns`` of ``stats`` as a float64 matrix (rows x columns)."""
        missing = [column for column in self.columns if column not in stats.columns]
        if missing:
            raise ValueError(f"statistics lack the column(s) {missing} that the headline sums")
        return stats.loc[:, list(self.columns)].to_numpy(dtype=np.float64)

    def from_matrix_sums(self, sums: np.ndarray, n_rows: int) -> dict[str, np.ndarray]:
        """Metrics for a ``(R, len(columns))`` matrix of column sums: ``{metric: array (R,)}``."""
        sums = np.atleast_2d(sums)
        by_column = {column: sums[:, j] for j, column in enumerate(self.columns)}
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            values = self.from_sums(by_column, n_rows)
        return {
            str(name): np.broadcast_to(np.asarray(value, dtype=np.float64), (sums.shape[0],)).astype(np.float64)
            for name, value in values.items()
        }

    def __call__(self, stats: pd.DataFrame) -> dict[str, float]:
        sums = self.matrix(stats).sum(axis=0)
        return {name: float(value[0]) for name, value in self.from_matrix_sums(sums, len(stats)).items()}

    def __repr__(self) -> str:
        return f"additive({', '.join(map(repr, self.columns))})({getattr(self.from_sums, '__name__', '?')})"


def additive(*columns: str) -> Callable[[SumsFunction], AdditiveHeadline]:
    """Decorator marking a headline as a function of column sums, for the fast bootstrap::

    @additive("tp", "fp", "fn")
    def entity_f1(sums, n_rows):
        denominator = 2 * sums["tp"] + sums["fp"] + sums["fn"]
        return {"f1": np.where(denominator > 0, 2 * sums["tp"] / denominator, 0.0)}

    entity_f1(stats)  # -> {"f1": 0.41}, like any headline
    """

    def wrap(from_sums: SumsFunction) -> AdditiveHeadline:
        return AdditiveHeadline(from_sums, columns)

    return wrap


def is_additive(headline: Headline) -> bool:
    return isinstance(headline, AdditiveHeadline)
