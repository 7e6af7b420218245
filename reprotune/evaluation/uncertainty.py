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

Copies of one text in the test split are one piece of evidence, not several: given ``clusters``
(one label per row, e.g. ``data/<task>/raw/clusters.json``), every procedure draws clusters
with replacement and takes all their rows (a cluster bootstrap; a mean such as EM divides by
each resample's own row count). Without a shared label it is the row bootstrap, draw for draw.

Intervals are percentile intervals (``numpy.nanquantile``, linear interpolation) at
``(1 - level) / 2`` and ``(1 + level) / 2``; resamples where a metric is undefined (NaN, e.g.
F1 of a resample without any entity) are left out, and a metric undefined everywhere gets
``(nan, nan)``.

Paired tests take interval and p-value from one procedure (the paired bootstrap's p is dual to
its percentile interval; McNemar's p is only shown beside accuracy). :func:`margin_test` reads
non-inferiority and equivalence (TOST) against a margin off the same interval, and
:func:`seed_difference` tests across training seeds, with the seeds' spread in the variance.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

# Additive headlines are defined in reprotune.core.additive, so that the family metrics
# modules (imported by the train stages too) can build theirs without importing this module.
from reprotune.core.additive import AdditiveHeadline, Headline, SumsFunction, additive, is_additive
from reprotune.core.tables import p_text, signed

__all__ = [
    "AdditiveHeadline",
    "Headline",
    "SumsFunction",
    "additive",
    "is_additive",
    "Clusters",
    "bootstrap_intervals",
    "interval_keys",
    "interval_metrics",
    "PairedResult",
    "paired_difference",
    "mcnemar",
    "paired_accuracy",
    "verdict",
    "MarginResult",
    "margin_test",
    "seed_difference",
    "lower_is_better",
]

# Cells of one chunk of the resampled index matrix (resamples x rows): 4M int64 = 32 MiB, plus
# the same again for the count matrix. The chunking does not change the result.
_MAX_CELLS = 1 << 22
# Below this many discordant pairs McNemar's test uses the exact binomial distribution.
MCNEMAR_EXACT_BELOW = 25


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


def _counts(indices: np.ndarray) -> np.ndarray:
    """Multinomial weights: how often each row was drawn in each resample, as float64."""
    size, n_rows = indices.shape
    flat = (indices + (np.arange(size) * n_rows)[:, None]).ravel()
    return np.bincount(flat, minlength=size * n_rows).reshape(size, n_rows).astype(np.float64)


Clusters = Sequence[int] | np.ndarray | None
"""Each row's cluster (rows with one label are copies of one text), or None: every row its own."""


class _Resampler:
    """Which rows each bootstrap resample takes: rows drawn with replacement or, with clusters,
    clusters drawn with replacement and all their rows taken (a cluster bootstrap), so copies
    of one text count as one piece of evidence. Clusters are numbered in order of their labels;
    with every row its own cluster the draws, and so the intervals, equal the row bootstrap's."""

    def __init__(self, n_rows: int, clusters: Clusters = None):
        self.n_rows = n_rows
        self.codes: np.ndarray | None = None
        self.units = n_rows
        if clusters is not None:
            labels = np.asarray(clusters).ravel()
            if labels.shape[0] != n_rows:
                raise ValueError(f"clusters must label every row: {labels.shape[0]} labels for {n_rows} rows")
            _, codes = np.unique(labels, return_inverse=True)
            self.codes = codes.ravel().astype(np.int64)
            self.units = int(self.codes.max()) + 1
            if self.units == n_rows:  # no two rows share a cluster: the row bootstrap
                self.codes = None

    @property
    def clustered(self) -> bool:
        """True when some rows share a cluster (the draws differ from the row bootstrap's)."""
        return self.units < self.n_rows

    def chunks(self, rng: np.random.Generator, n_resamples: int) -> Iterator[np.ndarray]:
        """Drawn unit (row or cluster) indices, ``(chunk, units)`` at a time; numpy's stream is
        the same whatever the chunking."""
        for size in _chunk_sizes(max(self.n_rows, self.units), n_resamples):
            yield rng.integers(0, self.units, size=(size, self.units))

    def counts(self, drawn: np.ndarray) -> np.ndarray:
        """``(chunk, n_rows)``: how often each row was taken in each resample."""
        counts = _counts(drawn)
        return counts if self.codes is None else counts[:, self.codes]

    def rows(self, drawn: np.ndarray) -> np.ndarray:
        """The row indices one resample takes (a cluster's rows in row order, cluster by cluster)."""
        if self.codes is None:
            return drawn
        if not hasattr(self, "_members"):
            order = np.argsort(self.codes, kind="stable")
            self._members = np.split(order, np.cumsum(np.bincount(self.codes, minlength=self.units))[:-1])
        return np.concatenate([self._members[unit] for unit in drawn])

    def flips(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``(size, n_rows)`` booleans: swap this row's pair? One coin per unit, shared by its rows."""
        coins = rng.random((size, self.units)) < 0.5
        return coins if self.codes is None else coins[:, self.codes]


def _from_sums(headline: AdditiveHeadline, sums: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of each resample from its column sums, each with its own row count (a cluster
    bootstrap's resamples hold different numbers of rows; a mean divides by its own)."""
    rows = counts.sum(axis=1)
    sizes = np.unique(rows)
    if sizes.size == 1:
        return headline.from_matrix_sums(sums, int(sizes[0]))
    out: dict[str, np.ndarray] = {}
    for size in sizes:
        chosen = rows == size
        for name, values in headline.from_matrix_sums(sums[chosen], int(size)).items():
            out.setdefault(name, np.full(rows.shape[0], math.nan))[chosen] = values
    return out


def _numeric(values: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in values.items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            continue
        out[str(name)] = float(value)
    return out


def _stack(rows: list[dict[str, float]], names: Sequence[str]) -> dict[str, np.ndarray]:
    return {name: np.array([row.get(name, math.nan) for row in rows], dtype=np.float64) for name in names}


def _resampled_metrics(
    stats: pd.DataFrame, headline: Headline, n_resamples: int, seed: int, clusters: Clusters = None
) -> dict[str, np.ndarray]:
    """``{metric: array (n_resamples,)}`` over bootstrap resamples of the rows (or clusters)."""
    resampler = _Resampler(_rows(stats), clusters)
    rng = np.random.default_rng(seed)
    if isinstance(headline, AdditiveHeadline):
        matrix = headline.matrix(stats)
        parts = []
        for drawn in resampler.chunks(rng, n_resamples):
            counts = resampler.counts(drawn)
            parts.append(_from_sums(headline, counts @ matrix, counts))
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    names = list(_numeric(headline(stats)))
    rows = [
        _numeric(headline(stats.take(resampler.rows(row))))
        for drawn in resampler.chunks(rng, n_resamples)
        for row in drawn
    ]
    return _stack(rows, names)


def _percentile_p(values: np.ndarray) -> float:
    """Two-sided p dual to the percentile interval: ``2 * min(q0, 1 - q1)`` where q0 is the largest
    and q1 the smallest probability whose quantile (``numpy.quantile``'s linear interpolation)
    is at most / at least zero. The ``level`` interval excludes zero exactly when p < 1 - level;
    p is floored at 1 / (R + 1), the resolution of R resamples."""
    finite = np.sort(values[~np.isnan(values)])
    count = finite.size
    if count < 2:
        return 1.0
    steps = count - 1
    if finite[0] > 0:
        q0 = 0.0
    elif finite[-1] <= 0:
        q0 = 1.0
    else:
        j = int(np.searchsorted(finite, 0.0, side="right")) - 1  # last value <= 0
        q0 = (j + -finite[j] / (finite[j + 1] - finite[j])) / steps
    if finite[-1] < 0:
        q1 = 1.0
    elif finite[0] >= 0:
        q1 = 0.0
    else:
        i = int(np.searchsorted(finite, 0.0, side="left"))  # first value >= 0
        q1 = (i - 1 + -finite[i - 1] / (finite[i] - finite[i - 1])) / steps
    return float(min(1.0, max(2.0 * min(q0, 1.0 - q1), 1.0 / (count + 1))))


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return (math.nan, math.nan)
    low, high = np.quantile(finite, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return (float(low), float(high))


# --------------------------------------------------------------------------- intervals


def bootstrap_intervals(
    stats: pd.DataFrame,
    headline: Headline,
    n_resamples: int,
    seed: int,
    level: float = 0.95,
    clusters: Clusters = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval for every numeric metric ``headline(stats)`` returns.

    Rows (test examples) are resampled with replacement, ``n_resamples`` times, from
    ``numpy.random.default_rng(seed)``; same inputs and seed, same intervals. With ``clusters``
    (one label per row; rows of one label are copies of one text) whole clusters are resampled
    instead, so a repeated text is not counted as independent evidence; without any shared
    label the intervals equal the row bootstrap's. An :func:`additive` headline is evaluated
    from ``counts @ stats`` (fast, vectorised); any other headline is called once per resample
    on ``stats.take(indices)``.
    """
    _check(n_resamples, level)
    resampled = _resampled_metrics(stats, headline, n_resamples, seed, clusters)
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
    se: float = math.nan
    """Standard error of the difference: the sd of the resampled differences (or the seed test's)."""
    df: float = math.inf
    """Degrees of freedom of the seed-level t-test; inf for the bootstrap over test examples."""
    fixed_variance: float = 0.0
    """The part of se² that more test examples cannot shrink (the seeds' share), for sample sizes."""
    seeds: int = 1
    """Training seeds per method behind the difference (1: one run each)."""
    mcnemar_p_value: float | None = None
    """McNemar's p for a right-or-wrong metric, shown beside the bootstrap's; it decides nothing."""
    margin: MarginResult | None = None
    """Non-inferiority and equivalence against a margin (LoRA against full only)."""
    n_clusters: int | None = None
    """Clusters the bootstrap resampled where some test examples share a text; None: rows."""

    def to_dict(self) -> dict[str, Any]:
        """Field -> value, one level deep (``margin`` stays a MarginResult)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


def _aligned(stats_a: pd.DataFrame, stats_b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    if len(stats_a) != len(stats_b):
        raise ValueError(
            f"paired statistics must describe the same test examples: {len(stats_a)} rows against {len(stats_b)}"
        )
    _rows(stats_a)
    return stats_a.reset_index(drop=True), stats_b.reset_index(drop=True)


def _cluster_count(n_rows: int, clusters: Clusters) -> int | None:
    """How many clusters a cluster bootstrap draws from; None when it is the row bootstrap."""
    resampler = _Resampler(n_rows, clusters)
    return resampler.units if resampler.clustered else None


def _metric(values: Mapping[str, Any], metric: str, which: str) -> float:
    numeric = _numeric(values)
    if metric not in numeric:
        raise KeyError(f"the headline of {which} has no numeric metric {metric!r} (it has {sorted(numeric)})")
    return numeric[metric]


def _bootstrap_differences(
    stats_a: pd.DataFrame,
    stats_b: pd.DataFrame,
    headline: Headline,
    metric: str,
    n_resamples: int,
    seed: int,
    clusters: Clusters = None,
) -> np.ndarray:
    """b - a on each paired resample (the same row, or cluster, indices for both methods)."""
    resampler = _Resampler(len(stats_a), clusters)
    rng = np.random.default_rng(seed)
    if isinstance(headline, AdditiveHeadline):
        matrix_a, matrix_b = headline.matrix(stats_a), headline.matrix(stats_b)
        both = np.hstack([matrix_a, matrix_b])
        k = matrix_a.shape[1]
        parts = []
        for drawn in resampler.chunks(rng, n_resamples):
            counts = resampler.counts(drawn)
            sums = counts @ both
            a = _from_sums(headline, sums[:, :k], counts)[metric]
            b = _from_sums(headline, sums[:, k:], counts)[metric]
            parts.append(b - a)
        return np.concatenate(parts)
    differences = []
    for drawn in resampler.chunks(rng, n_resamples):
        for row in drawn:
            taken = resampler.rows(row)
            differences.append(
                _metric(headline(stats_b.take(taken)), metric, "b")
                - _metric(headline(stats_a.take(taken)), metric, "a")
            )
    return np.asarray(differences, dtype=np.float64)


def _randomised_differences(
    stats_a: pd.DataFrame,
    stats_b: pd.DataFrame,
    headline: Headline,
    metric: str,
    n_resamples: int,
    seed: int,
    clusters: Clusters = None,
) -> np.ndarray:
    """b' - a' where each example's (with clusters: each cluster's) pair of rows is swapped with
    probability 0.5."""
    n = len(stats_a)
    resampler = _Resampler(n, clusters)
    rng = np.random.default_rng([seed, 1])  # a stream of its own, apart from the bootstrap's
    differences: list[np.ndarray] = []
    if isinstance(headline, AdditiveHeadline):
        matrix_a, matrix_b = headline.matrix(stats_a), headline.matrix(stats_b)
        sum_a, sum_b, delta = matrix_a.sum(axis=0), matrix_b.sum(axis=0), matrix_b - matrix_a
        for size in _chunk_sizes(n, n_resamples):
            moved = resampler.flips(rng, size).astype(np.float64) @ delta  # what swapping moves from b to a
            a = headline.from_matrix_sums(sum_a + moved, n)[metric]
            b = headline.from_matrix_sums(sum_b - moved, n)[metric]
            differences.append(b - a)
        return np.concatenate(differences)
    if list(stats_a.columns) != list(stats_b.columns):
        raise ValueError("paired statistics must have the same columns to be swapped")
    values = []
    for size in _chunk_sizes(n, n_resamples):
        for swap in resampler.flips(rng, size):
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
    margin: float | None = None,
    clusters: Clusters = None,
) -> PairedResult:
    """Difference ``b - a`` in ``metric`` between two methods scored on the same test examples.

    Rows of ``stats_a`` and ``stats_b`` are paired by position (ValueError if their lengths
    differ). The interval is always the percentile interval of the *paired bootstrap*: both
    methods are scored on the same resampled example indices (seed as in
    :func:`bootstrap_intervals`), and ``ci_low``/``ci_high`` are quantiles of the resampled
    differences.

    The p-value (two-sided) depends on ``test``:

    * ``"bootstrap"``: the p-value dual to the percentile interval (:func:`_percentile_p`): the
      smallest ``1 - level`` whose interval (same quantiles, same interpolation) leaves out zero,
      so p < 1 - level exactly when the interval excludes 0 and the verdict never contradicts the
      interval. Identical predictions give p = 1; p is kept at 1 / (R + 1) or above.
    * ``"randomisation"``: approximate randomisation (paired permutation): in each of
      ``n_resamples`` rounds every example's pair of rows is swapped between a and b with
      probability 0.5, and ``p = (#(|d'| >= |d|) + 1) / (R + 1)`` with d the observed difference.

    Resamples where the metric is NaN are left out. ``significant`` is ``p_value < 1 - level``.
    ``se`` is the standard deviation of the resampled differences. With a ``margin`` (in the
    metric's units), ``margin`` holds :func:`margin_test` read off the same resampled differences.
    With ``clusters`` (one label per row, as in :func:`bootstrap_intervals`) both tests move whole
    clusters: the bootstrap draws clusters, the randomisation swaps a cluster's rows together.
    """
    _check(n_resamples, level)
    if test not in ("bootstrap", "randomisation"):
        raise ValueError(f"test must be 'bootstrap' or 'randomisation', not {test!r}")
    stats_a, stats_b = _aligned(stats_a, stats_b)
    value_a = _metric(headline(stats_a), metric, names[0])
    value_b = _metric(headline(stats_b), metric, names[1])
    observed = value_b - value_a

    boot = _bootstrap_differences(stats_a, stats_b, headline, metric, n_resamples, seed, clusters)
    ci_low, ci_high = _percentile_interval(boot, level)
    resampled = boot[~np.isnan(boot)]
    se = float(np.std(resampled, ddof=1)) if resampled.size > 1 else math.nan
    if test == "bootstrap":
        p_value = _percentile_p(resampled)
        test_name = "paired bootstrap"
    else:
        randomised = _randomised_differences(stats_a, stats_b, headline, metric, n_resamples, seed, clusters)
        finite = randomised[~np.isnan(randomised)]
        tolerance = 1e-12 * max(1.0, abs(observed))  # sums taken in another order round differently
        extreme = int(np.count_nonzero(np.abs(finite) >= abs(observed) - tolerance))
        p_value = min(1.0, (extreme + 1) / (finite.size + 1))
        test_name = "approximate randomisation"
    result = PairedResult(
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
        se=se,
        n_clusters=_cluster_count(len(stats_a), clusters),
    )
    return result if margin is None else replace(result, margin=margin_test(result, margin, resampled))


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
    """Accuracy b - a: the paired bootstrap gives the interval and the p-value (one procedure, so
    the verdict never contradicts the interval); McNemar's p rides along in ``mcnemar_p_value``."""
    frame_a = pd.DataFrame({"correct": np.asarray(correct_a, dtype=np.float64)})
    frame_b = pd.DataFrame({"correct": np.asarray(correct_b, dtype=np.float64)})
    result = paired_difference(frame_a, frame_b, _accuracy, "accuracy", n_resamples, seed, level, names=names)
    return replace(result, mcnemar_p_value=mcnemar(correct_a, correct_b)[1])


@additive("correct")
def _accuracy(sums: Mapping[str, np.ndarray], n_rows: int) -> dict[str, np.ndarray]:
    return {"accuracy": sums["correct"] / n_rows}


# --------------------------------------------------------------------------- words


def verdict(result: PairedResult) -> str:
    """One sentence, e.g. ``"LoRA − full = −0.012 [−0.031, +0.006], p = 0.21: not significant at 95%"``."""
    words = "significant" if result.significant else "not significant"
    return (
        f"{result.name_b} \u2212 {result.name_a} = {signed(result.difference)} "
        f"[{signed(result.ci_low)}, {signed(result.ci_high)}], {p_text(result.p_value)}: "
        f"{words} at {result.level * 100:g}%"
    )


# --------------------------------------------------------------------------- margins: good enough?

LOWER_IS_BETTER_WORDS = ("loss", "perplexity")
POWER = 0.8
"""The power behind the smallest detectable difference and the test examples a margin needs."""
VERDICTS = ("better", "equivalent", "good enough", "worse", "too small to tell")


def lower_is_better(metric: str) -> bool:
    """Loss and perplexity fall as a model improves; every other headline metric rises."""
    return any(word in metric for word in LOWER_IS_BETTER_WORDS)


@dataclass(frozen=True)
class MarginResult:
    """Method b against method a with a margin in the metric's units (b = LoRA, a = full).

    ``noninferior``: b is at worst ``margin`` worse than a (the interval's bound on the worse side
    lies within the margin: a one-sided test at (1 - level) / 2). ``equivalent``: the whole
    interval lies within ±margin (TOST, two one-sided tests at (1 - level) / 2 each). ``verdict``
    is one of VERDICTS, read off the same interval as the two-sided test, so none contradicts it.
    """

    margin: float
    lower_is_better: bool
    noninferior: bool
    equivalent: bool
    noninferiority_p: float
    equivalence_p: float
    verdict: str
    detectable: float
    """The smallest true difference the two-sided test finds with POWER: (critical + z_power) × se."""
    examples_needed: int | None
    """Test examples to show non-inferiority at this margin with POWER if a and b are truly equal;
    None where more test examples alone cannot (the seeds' variance exceeds the budget)."""


def _oriented(result: PairedResult, lower: bool) -> tuple[float, float, float]:
    """Difference and interval turned so that positive means b is better."""
    if not lower:
        return result.difference, result.ci_low, result.ci_high
    return -result.difference, -result.ci_high, -result.ci_low


def verdict_word(low: float, high: float, margin: float) -> str:
    """The verdict of an interval [low, high] of "how much better b is" against ±margin."""
    if math.isnan(low) or math.isnan(high):
        return "too small to tell"
    if low > 0:
        return "better"
    if -margin < low and high < margin:
        return "equivalent"
    if low > -margin:
        return "good enough"
    if high < 0:
        return "worse"
    return "too small to tell"


def _quantile(probability: float, df: float) -> float:
    from scipy.stats import norm, t

    return float(norm.ppf(probability)) if math.isinf(df) else float(t.ppf(probability, df))


def _one_sided_p(distance: float, se: float, df: float) -> float:
    """P(estimate this far beyond the boundary | the truth on it): t (or normal) upper tail of distance / se."""
    from scipy.stats import norm, t

    if not se > 0:
        return 0.0 if distance > 0 else 1.0
    return float(norm.sf(distance / se)) if math.isinf(df) else float(t.sf(distance / se, df))


def margin_test(result: PairedResult, margin: float, resampled: np.ndarray | None = None) -> MarginResult:
    """Non-inferiority and equivalence of b against a at ``margin`` (metric units, > 0).

    Decisions are read off ``result``'s interval. The one-sided p-values come from the resampled
    differences when given (share at or beyond the margin, ``(count + 1) / (R + 1)``), else from
    the t (or normal) distribution with ``result.se`` and ``result.df`` (the seed test);
    ``equivalence_p`` is the larger of TOST's two. ``examples_needed``:
    ``n × V_ex / ((margin / (critical + z_power))² − V_fixed)``, with V_ex = se² − V_fixed the
    share of the variance that shrinks as 1 / test examples.
    """
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a positive number in the metric's units, not {margin!r}")
    lower = lower_is_better(result.metric)
    difference, low, high = _oriented(result, lower)
    if resampled is not None and resampled.size:
        turned = -resampled if lower else resampled
        count = turned.size + 1
        p_low = (int(np.count_nonzero(turned <= -margin)) + 1) / count
        p_high = (int(np.count_nonzero(turned >= margin)) + 1) / count
    else:
        p_low = _one_sided_p(difference + margin, result.se, result.df)
        p_high = _one_sided_p(margin - difference, result.se, result.df)
    multiplier = _quantile((1.0 + result.level) / 2.0, result.df) + _quantile(POWER, result.df)
    detectable = multiplier * result.se
    budget = (margin / multiplier) ** 2 - result.fixed_variance
    shrinking = result.se**2 - result.fixed_variance
    needed = None
    if math.isfinite(result.se) and budget > 0 and shrinking > 0:
        needed = math.ceil(result.n_examples * shrinking / budget)
    return MarginResult(
        margin=float(margin),
        lower_is_better=lower,
        noninferior=bool(low > -margin),
        equivalent=bool(-margin < low and high < margin),
        noninferiority_p=float(min(1.0, p_low)),
        equivalence_p=float(min(1.0, max(p_low, p_high))),
        verdict=verdict_word(low, high, margin),
        detectable=float(detectable),
        examples_needed=needed,
    )


# --------------------------------------------------------------------------- several training seeds


def _runs_on_resamples(
    runs: Sequence[pd.DataFrame],
    headline: Headline,
    metric: str,
    n_resamples: int,
    seed: int,
    clusters: Clusters = None,
) -> np.ndarray:
    """``metric`` of every run (rows) on every resample of the test examples (columns); all runs
    share each resample's example (or cluster) indices."""
    resampler = _Resampler(len(runs[0]), clusters)
    rng = np.random.default_rng(seed)
    if isinstance(headline, AdditiveHeadline):
        matrices = [headline.matrix(run) for run in runs]
        width = matrices[0].shape[1]
        both = np.hstack(matrices)
        parts = []
        for drawn in resampler.chunks(rng, n_resamples):
            counts = resampler.counts(drawn)
            sums = counts @ both
            parts.append(
                np.stack(
                    [
                        _from_sums(headline, sums[:, i * width : (i + 1) * width], counts)[metric]
                        for i in range(len(runs))
                    ]
                )
            )
        return np.concatenate(parts, axis=1)
    values = [
        [_metric(headline(run.take(resampler.rows(row))), metric, "a run") for run in runs]
        for drawn in resampler.chunks(rng, n_resamples)
        for row in drawn
    ]
    return np.asarray(values, dtype=np.float64).T


def _shared_example_variance(resampled: np.ndarray, k_a: int) -> float:
    """Variance over example resamples of mean(b runs) - mean(a runs), counting only what the runs
    share. A run's own variance over the resamples holds the seed-by-example noise as well, which
    the seeds' spread already counts; so each run's variance is replaced by the mean covariance
    between the other runs of its method (the shared, example-driven part) before summing."""
    finite = resampled[:, ~np.isnan(resampled).any(axis=0)]
    if finite.shape[1] < 2:
        return 0.0
    covariance = np.cov(finite)
    k = covariance.shape[0]
    weights = np.concatenate([np.full(k_a, -1.0 / k_a), np.full(k - k_a, 1.0 / (k - k_a))])
    for block in (slice(0, k_a), slice(k_a, k)):
        inner = covariance[block, block]
        size = inner.shape[0]
        shared = (inner.sum() - np.trace(inner)) / (size * (size - 1))
        np.fill_diagonal(inner, shared)
        covariance[block, block] = inner
    return float(max(0.0, weights @ covariance @ weights))


def seed_difference(
    runs_a: Sequence[pd.DataFrame],
    runs_b: Sequence[pd.DataFrame],
    headline: Headline,
    metric: str,
    n_resamples: int,
    seed: int,
    level: float = 0.95,
    names: tuple[str, str] = ("a", "b"),
    margin: float | None = None,
    clusters: Clusters = None,
) -> PairedResult:
    """Difference ``b - a`` of the per-seed means of ``metric``, with training-run variance in the test.

    Each run (one training seed of one method) is scored on the same test examples, rows aligned.
    The estimate is mean over b's seeds minus mean over a's (for a mean metric such as EM, the mean
    per-seed difference). Its variance has two parts: the seeds' (``s_a²/k_a + s_b²/k_b`` from the
    per-seed values, Welch's) and the test examples' (the variance of the difference over paired
    bootstrap resamples of the examples, every run scored on the same resample). The interval is
    ``d ± t × se`` with Welch–Satterthwaite degrees of freedom for the seed part; p is the
    two-sided t p-value, so verdict and interval are one procedure. Seed-by-example noise enters
    both parts, which errs on the wide side. Needs at least two seeds per method. ``clusters``
    makes the examples' part a cluster bootstrap (as in :func:`bootstrap_intervals`).
    """
    from scipy.stats import t

    _check(n_resamples, level)
    if len(runs_a) < 2 or len(runs_b) < 2:
        raise ValueError(f"the seed test needs two seeds per method or more, not {len(runs_a)} and {len(runs_b)}")
    runs = [run.reset_index(drop=True) for run in (*runs_a, *runs_b)]
    if len({len(run) for run in runs}) != 1:
        raise ValueError("every run must be scored on the same test examples (equal row counts)")
    _rows(runs[0])
    k_a, k_b = len(runs_a), len(runs_b)
    values = np.array([_metric(headline(run), metric, "a run") for run in runs])
    values_a, values_b = values[:k_a], values[k_a:]
    difference = float(values_b.mean() - values_a.mean())
    resampled = _runs_on_resamples(runs, headline, metric, n_resamples, seed, clusters)
    example_variance = _shared_example_variance(resampled, k_a)
    part_a, part_b = float(np.var(values_a, ddof=1)) / k_a, float(np.var(values_b, ddof=1)) / k_b
    seed_variance = part_a + part_b
    se = math.sqrt(seed_variance + example_variance)
    welch = part_a**2 / (k_a - 1) + part_b**2 / (k_b - 1)
    df = se**4 / welch if welch > 0 else math.inf
    if se > 0:
        half = _quantile((1.0 + level) / 2.0, df) * se
        p_value = float(
            2.0 * (t.sf(abs(difference) / se, df) if math.isfinite(df) else _one_sided_p(abs(difference), se, df))
        )
    else:
        half, p_value = 0.0, 1.0 if difference == 0 else 0.0
    result = PairedResult(
        metric=metric,
        a=float(values_a.mean()),
        b=float(values_b.mean()),
        difference=difference,
        ci_low=difference - half,
        ci_high=difference + half,
        p_value=min(1.0, p_value),
        test="seed t-test with test-example variance",
        significant=bool(p_value < 1.0 - level),
        level=level,
        n_resamples=int(n_resamples),
        n_examples=len(runs[0]),
        name_a=names[0],
        name_b=names[1],
        se=se,
        df=df,
        fixed_variance=seed_variance,
        seeds=min(k_a, k_b),
        n_clusters=_cluster_count(len(runs[0]), clusters),
    )
    return result if margin is None else replace(result, margin=margin_test(result, margin))


# --------------------------------------------------------------------------- methods of one task

METHOD_NAMES = {"baseline": "baseline", "full": "full", "lora": "LoRA"}
COMPARISONS = (("full", "lora"), ("baseline", "full"), ("baseline", "lora"))
"""(a, b) pairs of methods compared, each as b - a: LoRA - full first, then each against the baseline."""


def comparison_key(a: str, b: str) -> str:
    """``lora_minus_full``: the prefix of a comparison's keys in significance.json."""
    return f"{b}_minus_{a}"


MARGIN_COMPARISON = ("full", "lora")
"""The comparison the margin applies to: is LoRA good enough against full?"""


def compare_methods(
    stats: Mapping[str, pd.DataFrame],
    headline: Headline,
    metrics: Sequence[str],
    n_resamples: int,
    seed: int,
    level: float = 0.95,
    test: Literal["bootstrap", "randomisation"] = "bootstrap",
    mcnemar_columns: Mapping[str, str] | None = None,
    comparisons: Sequence[tuple[str, str]] = COMPARISONS,
    margins: Mapping[str, float] | None = None,
    clusters: Clusters = None,
) -> dict[str, dict[str, PairedResult]]:
    """Paired tests of every comparison (both methods in ``stats``) on every metric.

    ``stats`` maps a method to its per-example statistics, rows aligned across methods.
    Every metric's interval and p-value come from :func:`paired_difference` (one procedure);
    a metric in ``mcnemar_columns`` (e.g. ``{"accuracy": "correct"}``) also gets McNemar's p on
    that 0/1 column, for reference. ``margins`` (metric -> margin) adds :func:`margin_test` to
    LoRA against full. Every test draws the same resamples (same seed); with ``clusters`` (one
    label per row) they resample clusters of duplicate texts, not rows.
    Returns ``{"lora_minus_full": {"f1": result}}``.
    """
    mcnemar_columns = dict(mcnemar_columns or {})
    margins = dict(margins or {})
    out: dict[str, dict[str, PairedResult]] = {}
    for a, b in comparisons:
        if a not in stats or b not in stats:
            continue
        names = (METHOD_NAMES.get(a, a), METHOD_NAMES.get(b, b))
        results = {}
        for metric in metrics:
            margin = margins.get(metric) if (a, b) == MARGIN_COMPARISON else None
            result = paired_difference(
                stats[a],
                stats[b],
                headline,
                metric,
                n_resamples,
                seed,
                level,
                test=test,
                names=names,
                margin=margin,
                clusters=clusters,
            )
            if metric in mcnemar_columns:
                column = mcnemar_columns[metric]
                _, p_value = mcnemar(stats[a][column].to_numpy() > 0, stats[b][column].to_numpy() > 0)
                result = replace(result, mcnemar_p_value=p_value)
            results[metric] = result
        out[comparison_key(a, b)] = results
    return out


def _json_number(value: float, digits: int = 6) -> float:
    return float(value) if math.isnan(value) or math.isinf(value) else round(float(value), digits)


def significance_metrics(results: Mapping[str, Mapping[str, PairedResult]]) -> dict[str, Any]:
    """Flat keys for ``metrics/<task>/significance.json`` (``dvc metrics diff`` compares them):
    ``lora_minus_full.f1.difference``, ``..._ci_low``, ``..._ci_high``, ``..._p_value``,
    ``..._significant`` (1 or 0), ``..._test`` (the test's name) and ``..._se``; for accuracy
    ``..._mcnemar_p_value``; with a margin the :func:`margin_metrics` keys; and once ``level``,
    ``resamples`` and ``examples``, and ``clusters`` where the bootstrap resampled clusters of
    duplicate texts."""
    flat: dict[str, Any] = {}
    for comparison, by_metric in results.items():
        for metric, result in by_metric.items():
            prefix = f"{comparison}.{metric}"
            flat[f"{prefix}.difference"] = _json_number(result.difference)
            flat[f"{prefix}.ci_low"] = _json_number(result.ci_low)
            flat[f"{prefix}.ci_high"] = _json_number(result.ci_high)
            flat[f"{prefix}.p_value"] = _json_number(result.p_value)
            flat[f"{prefix}.significant"] = int(result.significant)
            flat[f"{prefix}.test"] = result.test
            flat[f"{prefix}.se"] = _json_number(result.se)
            if result.mcnemar_p_value is not None:
                flat[f"{prefix}.mcnemar_p_value"] = _json_number(result.mcnemar_p_value)
            if result.margin is not None:
                flat.update(margin_metrics(prefix, result.margin))
            flat.setdefault("level", result.level)
            flat.setdefault("resamples", result.n_resamples)
            flat.setdefault("examples", result.n_examples)
            if result.n_clusters is not None:
                flat.setdefault("clusters", result.n_clusters)
    return flat


def margin_metrics(prefix: str, margin: MarginResult) -> dict[str, Any]:
    """``<prefix>.margin``, ``.noninferior`` and ``.equivalent`` (1 or 0), their one-sided
    ``.noninferiority_p`` and TOST ``.equivalence_p``, the ``.verdict`` in words, the smallest
    ``.detectable`` difference and, where more test examples can settle it, ``.examples_needed``."""
    flat: dict[str, Any] = {
        f"{prefix}.margin": _json_number(margin.margin),
        f"{prefix}.noninferior": int(margin.noninferior),
        f"{prefix}.equivalent": int(margin.equivalent),
        f"{prefix}.noninferiority_p": _json_number(margin.noninferiority_p),
        f"{prefix}.equivalence_p": _json_number(margin.equivalence_p),
        f"{prefix}.verdict": margin.verdict,
        f"{prefix}.detectable": _json_number(margin.detectable),
    }
    if margin.examples_needed is not None:
        flat[f"{prefix}.examples_needed"] = int(margin.examples_needed)
    return flat


# --------------------------------------------------------------------------- a family's metrics file


def add_intervals(
    metrics: Mapping[str, Any],
    family: Any,
    predictions: pd.DataFrame,
    meta: Any,
    n_resamples: int,
    seed: int,
    level: float = 0.95,
    clusters: Clusters = None,
) -> dict[str, Any]:
    """``metrics`` (what ``family.score`` returned) with ``<key>_ci_low`` / ``<key>_ci_high``
    (rounded to 6 digits) for every ``family.HEADLINE_KEYS`` key it has; ``family`` is a task
    family's metrics module. ``clusters`` labels the statistics rows for a cluster bootstrap.
    The keys already there keep their values and order; without test examples, or with
    ``n_resamples == 0``, nothing is added."""
    stats = family.example_stats(predictions, meta)
    if n_resamples == 0 or len(stats) == 0:
        return dict(metrics)
    intervals = bootstrap_intervals(stats, family.HEADLINE, n_resamples, seed, level, clusters)
    wanted = {key: intervals[key] for key in family.HEADLINE_KEYS if key in metrics}
    return {**metrics, **{key: _json_number(value) for key, value in interval_metrics(wanted).items()}}
