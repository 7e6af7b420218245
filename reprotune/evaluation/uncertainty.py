"""Uncertainty on headline metrics: bootstrap intervals and paired tests over test examples.

The module is generic over task families. A family describes its test predictions as
*per-example sufficient statistics*, a DataFrame with one row per test example (NER: ``tp``,
``fp``, ``fn`` per sentence; classification: ``gold``, ``predicted``; QA: ``em``, ``f1`` per
question; masked-LM: ``loss_sum``, ``masked_tokens``, ``correct`` per block), and a
``headline(stats) -> dict[str, float]`` that computes its headline metrics from those rows.

Two kinds of headline are supported:

* **Plain**: any callable taking the DataFrame. Each resample calls it once on the resampled rows
  (``stats.take(indices)``), which is correct for any metric but runs at Python speed.
* **Additive**: a headline that is a function of the *column sums* only (entity F1 =
  2tp / (2tp + fp + fn) from summed counts; EM / F1 as sums over the row count; perplexity =
  exp(sum loss / sum tokens); accuracy, macro-F1 and MCC from summed one-hot confusion cells).
  Mark it with :func:`additive`, which wraps ``from_sums(sums, n_rows)``, a function of a mapping
  column -> array of sums (one entry per resample) that returns a mapping metric -> array. The
  wrapped object is still an ordinary ``headline(stats) -> dict[str, float]``. For these the
  bootstrap never materialises resampled frames: a chunk of resampled index rows is turned into
  a matrix of multinomial counts (how often each example was drawn) and one matrix product
  ``counts @ stats`` yields every resample's column sums at once. 1,000 resamples over 10,000
  rows take well under a second.

Both paths draw the *same* indices for the same seed (``numpy.random.default_rng(seed)``, index
rows of shape ``(chunk, n)`` drawn in order; numpy's stream does not depend on how the draws are
chunked), so an additive headline and its plain equivalent give identical intervals, and the
paired bootstrap for two methods resamples the same examples as each method's own interval.

Intervals are percentile intervals (``numpy.nanquantile``, linear interpolation) at
``(1 - level) / 2`` and ``(1 + level) / 2``; resamples where a metric is undefined (NaN, e.g.
F1 of a resample without any entity) are left out, and a metric undefined everywhere gets
``(nan, nan)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

Headline = Callable[[pd.DataFrame], Mapping[str, float]]
SumsFunction = Callable[[Mapping[str, np.ndarray], int], Mapping[str, Any]]

# Cells of one chunk of the resampled index matrix (resamples x rows): 4M int64 = 32 MiB, plus
# the same again for the count matrix. The chunking does not change the result.
_MAX_CELLS = 1 << 22
# Below this many discordant pairs McNemar's test uses the exact binomial distribution.
MCNEMAR_EXACT_BELOW = 25


# --------------------------------------------------------------------------- additive headlines


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


# --------------------------------------------------------------------------- helpers


def _check(n_resamples: int, level: float) -> None:
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, not {n_resamples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, not {level!r}")


def _rows(stats: pd.DataFrame) -> int:
    n = len(stats)
    if n == 0:
        raise ValueError("cannot bootstrap an empty set of test examples")
    return n


def _chunk_sizes(n_rows: int, n_resamples: int) -> Iterator[int]:
    chunk = max(1, min(n_resamples, _MAX_CELLS // n_rows))
    done = 0
    while done < n_resamples:
        size = min(chunk, n_resamples - done)
        yield size
        done += size


def _index_chunks(rng: np.random.Generator, n_rows: int, n_resamples: int) -> Iterator[np.ndarray]:
    """Resampled row indices, ``(chunk, n_rows)`` at a time; same stream whatever the chunking."""
    for size in _chunk_sizes(n_rows, n_resamples):
        yield rng.integers(0, n_rows, size=(size, n_rows))


def _counts(indices: np.ndarray) -> np.ndarray:
    """Multinomial weights: how often each row was drawn in each resample, as float64."""
    size, n_rows = indices.shape
    flat = (indices + (np.arange(size) * n_rows)[:, None]).ravel()
    return np.bincount(flat, minlength=size * n_rows).reshape(size, n_rows).astype(np.float64)


def _numeric(values: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in values.items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            continue
        out[str(name)] = float(value)
    return out


def _stack(rows: list[dict[str, float]], names: Sequence[str]) -> dict[str, np.ndarray]:
    return {name: np.array([row.get(name, math.nan) for row in rows], dtype=np.float64) for name in names}


def _resampled_metrics(stats: pd.DataFrame, headline: Headline, n_resamples: int, seed: int) -> dict[str, np.ndarray]:
    """``{metric: array (n_resamples,)}`` over bootstrap resamples of the rows."""
    n = _rows(stats)
    rng = np.random.default_rng(seed)
    if isinstance(headline, AdditiveHeadline):
        matrix = headline.matrix(stats)
        parts = [headline.from_matrix_sums(_counts(idx) @ matrix, n) for idx in _index_chunks(rng, n, n_resamples)]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    names = list(_numeric(headline(stats)))
    rows = [_numeric(headline(stats.take(row))) for idx in _index_chunks(rng, n, n_resamples) for row in idx]
    return _stack(rows, names)


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return (math.nan, math.nan)
    low, high = np.quantile(finite, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return (float(low), float(high))


# --------------------------------------------------------------------------- intervals


def bootstrap_intervals(
    stats: pd.DataFrame, headline: Headline, n_resamples: int, seed: int, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval for every numeric metric ``headline(stats)`` returns.

    Rows (test examples) are resampled with replacement, ``n_resamples`` times, from
    ``numpy.random.default_rng(seed)``; same inputs and seed, same intervals. An
    :func:`additive` headline is evaluated from ``counts @ stats`` (fast, vectorised); any other
    headline is called once per resample on ``stats.take(indices)``.
    """
    _check(n_resamples, level)
    resampled = _resampled_metrics(stats, headline, n_resamples, seed)
    return {name: _percentile_interval(values, level) for name, values in resampled.items()}


def interval_keys(metric: str) -> tuple[str, str]:
    """The flat metrics-JSON keys of one interval: ``("<metric>_ci_low", "<metric>_ci_high")``."""
    return (f"{metric}_ci_low", f"{metric}_ci_high")


def interval_metrics(intervals: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """Flatten intervals for ``metrics/T/M.json``: ``{"f1_ci_low": .., "f1_ci_high": .., ...}``."""
    flat: dict[str, float] = {}
    for metric, (low, high) in intervals.items():
        low_key, high_key = interval_keys(metric)
        flat[low_key] = float(low)
        flat[high_key] = float(high)
    return flat


# --------------------------------------------------------------------------- paired tests


@dataclass(frozen=True)
class PairedResult:
    """Method b against method a on the same test examples; ``difference`` is b - a."""

    metric: str
    a: float
    b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    significant: bool
    level: float
    n_resamples: int
    n_examples: int
    name_a: str = "a"
    name_b: str = "b"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _aligned(stats_a: pd.DataFrame, stats_b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    if len(stats_a) != len(stats_b):
        raise ValueError(
            f"paired statistics must describe the same test examples: {len(stats_a)} rows against {len(stats_b)}"
        )
    _rows(stats_a)
    return stats_a.reset_index(drop=True), stats_b.reset_index(drop=True)


def _metric(values: Mapping[str, Any], metric: str, which: str) -> float:
    numeric = _numeric(values)
    if metric not in numeric:
        raise KeyError(f"the headline of {which} has no numeric metric {metric!r} (it has {sorted(numeric)})")
    return numeric[metric]


def _bootstrap_differences(
    stats_a: pd.DataFrame, stats_b: pd.DataFrame, headline: Headline, metric: str, n_resamples: int, seed: int
) -> np.ndarray:
    """b - a on each paired resample (the same row indices for both methods)."""
    n = len(stats_a)
    rng = np.random.default_rng(seed)
    if isinstance(headline, AdditiveHeadline):
        matrix_a, matrix_b = headline.matrix(stats_a), headline.matrix(stats_b)
        both = np.hstack([matrix_a, matrix_b])
        k = matrix_a.shape[1]
        parts = []
        for idx in _index_chunks(rng, n, n_resamples):
            sums = _counts(idx) @ both
            a = headline.from_matrix_sums(sums[:, :k], n)[metric]
            b = headline.from_matrix_sums(sums[:, k:], n)[metric]
            parts.append(b - a)
        return np.concatenate(parts)
    differences = [
        _metric(headline(stats_b.take(row)), metric, "b") - _metric(headline(stats_a.take(row)), metric, "a")
        for idx in _index_chunks(rng, n, n_resamples)
        for row in idx
    ]
    return np.asarray(differences, dtype=np.float64)


def _randomised_differences(
    stats_a: pd.DataFrame, stats_b: pd.DataFrame, headline: Headline, metric: str, n_resamples: int, seed: int
) -> np.ndarray:
    """b' - a' where each example's pair of rows is swapped with probability 0.5."""
    n = len(stats_a)
    rng = np.random.default_rng([seed, 1])  # a stream of its own, apart from the bootstrap's
    differences: list[np.ndarray] = []
    if isinstance(headline, AdditiveHeadline):
        matrix_a, matrix_b = headline.matrix(stats_a), headline.matrix(stats_b)
        sum_a, sum_b, delta = matrix_a.sum(axis=0), matrix_b.sum(axis=0), matrix_b - matrix_a
        for size in _chunk_sizes(n, n_resamples):
            moved = (rng.random((size, n)) < 0.5).astype(np.float64) @ delta  # what swapping moves from b to a
            a = headline.from_matrix_sums(sum_a + moved, n)[metric]
            b = headline.from_matrix_sums(sum_b - moved, n)[metric]
            differences.append(b - a)
        return np.concatenate(differences)
    if list(stats_a.columns) != list(stats_b.columns):
        raise ValueError("paired statistics must have the same columns to be swapped")
    values = []
    for size in _chunk_sizes(n, n_resamples):
        for swap in rng.random((size, n)) < 0.5:
            cond = np.broadcast_to(swap[:, None], stats_a.shape)
            swapped_a, swapped_b = stats_a.mask(cond, stats_b), stats_b.mask(cond, stats_a)
            values.append(_metric(headline(swapped_b), metric, "b") - _metric(headline(swapped_a), metric, "a"))
    return np.asarray(values, dtype=np.float64)


def paired_difference(
    stats_a: pd.DataFrame,
    stats_b: pd.DataFrame,
    headline: Headline,
    metric: str,
    n_resamples: int,
    seed: int,
    level: float = 0.95,
    test: Literal["bootstrap", "randomisation"] = "bootstrap",
    names: tuple[str, str] = ("a", "b"),
) -> PairedResult:
    """Difference ``b - a`` in ``metric`` between two methods scored on the same test examples.

    Rows of ``stats_a`` and ``stats_b`` are paired by position (ValueError if their lengths
    differ). The interval is always the percentile interval of the *paired bootstrap*: both
    methods are scored on the same resampled example indices (seed as in
    :func:`bootstrap_intervals`), and ``ci_low``/``ci_high`` are quantiles of the resampled
    differences.

    The p-value (two-sided) depends on ``test``:

    * ``"bootstrap"``: the proportion of resampled differences on the other side of zero, doubled
      and capped at 1: ``p = min(1, 2 * min(#(d <= 0) + 1, #(d >= 0) + 1) / (R + 1))``. This is
      the p-value dual to the percentile interval (p < 1 - level about exactly when the interval
      excludes 0), so the verdict and the interval never disagree. Resampled differences equal to
      zero count on both sides; identical predictions give p = 1. The +1s keep p above 0.
    * ``"randomisation"``: approximate randomisation (paired permutation): in each of
      ``n_resamples`` rounds every example's pair of rows is swapped between a and b with
      probability 0.5, and ``p = (#(|d'| >= |d|) + 1) / (R + 1)`` with d the observed difference.

    Resamples where the metric is NaN are left out. ``significant`` is ``p_value < 1 - level``.
    """
    _check(n_resamples, level)
    if test not in ("bootstrap", "randomisation"):
        raise ValueError(f"test must be 'bootstrap' or 'randomisation', not {test!r}")
    stats_a, stats_b = _aligned(stats_a, stats_b)
    value_a = _metric(headline(stats_a), metric, names[0])
    value_b = _metric(headline(stats_b), metric, names[1])
    observed = value_b - value_a

    boot = _bootstrap_differences(stats_a, stats_b, headline, metric, n_resamples, seed)
    ci_low, ci_high = _percentile_interval(boot, level)
    if test == "bootstrap":
        finite = boot[~np.isnan(boot)]
        below, above = int(np.count_nonzero(finite <= 0.0)), int(np.count_nonzero(finite >= 0.0))
        p_value = min(1.0, 2.0 * (min(below, above) + 1) / (finite.size + 1))
        test_name = "paired bootstrap"
    else:
        randomised = _randomised_differences(stats_a, stats_b, headline, metric, n_resamples, seed)
        finite = randomised[~np.isnan(randomised)]
        tolerance = 1e-12 * max(1.0, abs(observed))  # sums taken in another order round differently
        extreme = int(np.count_nonzero(np.abs(finite) >= abs(observed) - tolerance))
        p_value = min(1.0, (extreme + 1) / (finite.size + 1))
        test_name = "approximate randomisation"
    return PairedResult(
        metric=metric,
        a=value_a,
        b=value_b,
        difference=observed,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=float(p_value),
        test=test_name,
        significant=bool(p_value < 1.0 - level),
        level=level,
        n_resamples=int(n_resamples),
        n_examples=len(stats_a),
        name_a=names[0],
        name_b=names[1],
    )


# --------------------------------------------------------------------------- McNemar


def _binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p of k successes in n fair trials: min(1, 2 * P(X <= min(k, n - k)))."""
    try:
        from scipy.stats import binomtest
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1))
        return min(1.0, 2.0 * tail / 2.0**n)
    return float(min(1.0, binomtest(k, n, 0.5).pvalue))


def _chi2_sf_1df(statistic: float) -> float:
    try:
        from scipy.stats import chi2
    except ImportError:  # pragma: no cover
        return math.erfc(math.sqrt(statistic / 2.0))
    return float(chi2.sf(statistic, 1))


def mcnemar(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray) -> tuple[float, float]:
    """McNemar's test of two classifiers' per-example correctness: ``(statistic, p_value)``.

    With b = #(a right, b wrong) and c = #(a wrong, b right): below 25 discordant pairs the exact
    binomial test (statistic ``min(b, c)``, p = min(1, 2 P(X <= min(b, c))), X ~ Bin(b + c, 1/2));
    otherwise the chi-square test with continuity correction (statistic (|b - c| - 1)^2 / (b + c),
    1 degree of freedom). No discordant pair: (0.0, 1.0).
    """
    right_a, right_b = np.asarray(correct_a, dtype=bool).ravel(), np.asarray(correct_b, dtype=bool).ravel()
    if right_a.shape != right_b.shape:
        raise ValueError(f"paired correctness must have equal lengths: {right_a.size} against {right_b.size}")
    b = int(np.count_nonzero(right_a & ~right_b))
    c = int(np.count_nonzero(~right_a & right_b))
    discordant = b + c
    if discordant == 0:
        return (0.0, 1.0)
    if discordant < MCNEMAR_EXACT_BELOW:
        return (float(min(b, c)), _binomial_two_sided(b, discordant))
    statistic = (abs(b - c) - 1.0) ** 2 / discordant
    return (float(statistic), _chi2_sf_1df(statistic))


def paired_accuracy(
    correct_a: Sequence[bool] | np.ndarray,
    correct_b: Sequence[bool] | np.ndarray,
    n_resamples: int,
    seed: int,
    level: float = 0.95,
    names: tuple[str, str] = ("a", "b"),
) -> PairedResult:
    """Accuracy b - a with the paired-bootstrap interval and McNemar's p-value."""
    frame_a = pd.DataFrame({"correct": np.asarray(correct_a, dtype=np.float64)})
    frame_b = pd.DataFrame({"correct": np.asarray(correct_b, dtype=np.float64)})
    result = paired_difference(frame_a, frame_b, _accuracy, "accuracy", n_resamples, seed, level, names=names)
    _, p_value = mcnemar(correct_a, correct_b)
    return PairedResult(
        **{**result.to_dict(), "p_value": p_value, "test": "McNemar", "significant": bool(p_value < 1.0 - level)}
    )


@additive("correct")
def _accuracy(sums: Mapping[str, np.ndarray], n_rows: int) -> dict[str, np.ndarray]:
    return {"accuracy": sums["correct"] / n_rows}


# --------------------------------------------------------------------------- words


def _signed(value: float) -> str:
    return f"{value:+.3f}".replace("-", "\u2212")


def _p_text(p_value: float) -> str:
    if p_value < 0.001:
        return "p < 0.001"
    return f"p = {p_value:.3f}" if p_value < 0.1 else f"p = {p_value:.2f}"


def verdict(result: PairedResult) -> str:
    """One sentence, e.g. ``"LoRA − full = −0.012 [−0.031, +0.006], p = 0.21: not significant at 95%"``."""
    words = "significant" if result.significant else "not significant"
    return (
        f"{result.name_b} \u2212 {result.name_a} = {_signed(result.difference)} "
        f"[{_signed(result.ci_low)}, {_signed(result.ci_high)}], {_p_text(result.p_value)}: "
        f"{words} at {result.level * 100:g}%"
    )
