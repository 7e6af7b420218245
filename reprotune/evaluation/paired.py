"""Methods compared on the same test examples: per-example statistics aligned across methods,
the paired tests of every headline metric, and the sentences summary.md shows for them."""

from __future__ import annotations

from typing import Any

import pandas as pd

from reprotune import tasks
from reprotune.core.errors import ReprotuneError
from reprotune.core.params import TaskParams
from reprotune.core.tables import signed
from reprotune.evaluation.clusters import TestClusters
from reprotune.evaluation.uncertainty import POWER, PairedResult, compare_methods, significance_metrics, verdict


def _example_keys(predictions: pd.DataFrame, stats: pd.DataFrame) -> list[Any] | None:
    """What names each statistics row: the example id, or the block for masked-LM."""
    if "id" in predictions and len(predictions) == len(stats):
        return [str(value) for value in predictions["id"]]
    if "block" in stats:
        return [int(value) for value in stats["block"]]
    return None


def aligned_stats(predictions: dict[str, pd.DataFrame], meta: Any, type_name: str) -> dict[str, pd.DataFrame]:
    """Per-example statistics of every method, rows in the same example order (by id or block)."""
    metrics = tasks.metrics(type_name)
    stats = {method: metrics.example_stats(frame, meta).reset_index(drop=True) for method, frame in predictions.items()}
    keys = {method: _example_keys(predictions[method], stats[method]) for method in stats}
    first = next(iter(stats))
    reference = keys[first]
    for method in stats:
        own = keys[method]
        if method == first or own == reference:
            continue
        if reference is None or own is None or sorted(map(str, own)) != sorted(map(str, reference)):
            raise ReprotuneError(
                f"the predictions of '{first}' and '{method}' cover different test examples; re-run the "
                "evaluate stages so every method scores the same tokenized test split"
            )
        position = {key: i for i, key in enumerate(own)}
        stats[method] = stats[method].iloc[[position[key] for key in reference]].reset_index(drop=True)
    return stats


def margins(task: TaskParams, keys: tuple[str, ...]) -> dict[str, float]:
    """Each headline metric's margin: `error_analysis.margins` where it names one, else `margin`."""
    settings = task.error_analysis
    unknown = [metric for metric in settings.margins if metric not in keys]
    if unknown:
        raise ReprotuneError(
            f"params.yaml: 'error_analysis.margins' names '{unknown[0]}', not a headline metric of "
            f"{task.type}; allowed: {', '.join(keys)}"
        )
    return {key: float(settings.margins.get(key, settings.margin)) for key in keys}


def verdict_metric(task: TaskParams, keys: tuple[str, ...]) -> str:
    """The metric of the one-sentence verdict: `error_analysis.verdict_metric`, else the first headline key."""
    chosen = task.error_analysis.verdict_metric
    if chosen is None:
        return keys[0]
    if chosen not in keys:
        raise ReprotuneError(
            f"params.yaml: 'error_analysis.verdict_metric' is '{chosen}', not a headline metric of "
            f"{task.type}; allowed: {', '.join(keys)}"
        )
    return chosen


def significance(
    predictions: dict[str, pd.DataFrame], meta: Any, task: TaskParams, clusters: TestClusters | None = None
) -> dict[str, dict[str, PairedResult]]:
    """LoRA - full, full - baseline and LoRA - baseline on every headline metric, paired on the same
    test examples; LoRA - full also against each metric's margin. With `clusters` (the test
    split's, from the download stage) copies of one text are resampled as one cluster."""
    settings = task.error_analysis.significance
    metrics = tasks.metrics(task.type)
    by_metric = margins(task, metrics.HEADLINE_KEYS)
    verdict_metric(task, metrics.HEADLINE_KEYS)  # a misspelt key fails before any work
    stats = aligned_stats(predictions, meta, task.type)
    if not stats or len(next(iter(stats.values()))) == 0:
        return {}
    first = next(iter(stats))  # aligned_stats puts every method in the first method's row order
    labels = None if clusters is None else clusters.for_table(predictions[first], len(stats[first]))
    return compare_methods(
        stats,
        metrics.HEADLINE,
        metrics.HEADLINE_KEYS,
        settings.resamples,
        settings.seed,
        settings.level,
        test=settings.test,
        mcnemar_columns=getattr(metrics, "MCNEMAR", None),
        margins=by_metric,
        clusters=labels,
    )


def significance_json(results: dict[str, dict[str, PairedResult]], task: TaskParams) -> dict[str, Any]:
    """metrics/<task>/significance.json: the flat keys of every test, and `verdict_metric`, the
    metric whose margin verdict the comparison report words first."""
    flat = significance_metrics(results)
    if flat:
        flat["verdict_metric"] = verdict_metric(task, tasks.metrics(task.type).HEADLINE_KEYS)
    return flat


TITLES = {
    "lora_minus_full": "LoRA against full",
    "full_minus_baseline": "full against the baseline",
    "lora_minus_baseline": "LoRA against the baseline",
}


def _decides(result: PairedResult) -> str:
    if result.test == "paired bootstrap":
        return (
            "the difference b − a, its "
            f"{result.level * 100:g}% paired-bootstrap interval ({result.n_resamples} resamples) and the p-value of "
            "the same resamples, so p < " + f"{1 - result.level:.2g}" + " exactly when the interval leaves out zero; "
            "for accuracy McNemar's p is shown beside it and decides nothing"
        )
    return (
        f"the difference b − a, its {result.level * 100:g}% paired-bootstrap interval ({result.n_resamples} "
        f"resamples) and the p-value of {result.test}, which decides (near the threshold the two can disagree)"
    )


def significance_lines(results: dict[str, dict[str, PairedResult]]) -> list[str]:
    """The section of summary.md: one verdict sentence per comparison and metric, then LoRA's margins."""
    if not results:
        return []
    any_result = next(iter(next(iter(results.values())).values()))
    clustered = (
        f" ({any_result.n_clusters} clusters of copies and near-copies of one text, each resampled with all its rows)"
        if any_result.n_clusters is not None
        else ""
    )
    lines = [
        "## Are the differences significant?",
        "",
        f"Each method against another on the same {any_result.n_examples} test examples{clustered}: "
        + _decides(any_result)
        + ". Significant: p < "
        + f"{1 - any_result.level:.2g}"
        + ".",
        "",
    ]
    for comparison, by_metric in results.items():
        lines.append(f"**{TITLES.get(comparison, comparison)}**")
        lines.append("")
        for metric, result in by_metric.items():
            mcnemar = "" if result.mcnemar_p_value is None else f"; McNemar p = {result.mcnemar_p_value:.3g}"
            lines.append(f"- {metric}: {verdict(result)} ({result.test}{mcnemar})")
        lines.append("")
    return lines + margin_lines(results.get("lora_minus_full", {}))


def _about(count: int) -> str:
    """9,437 -> `9,400`: a sample size from a normal approximation deserves two digits."""
    return f"{round(count, -max(0, len(str(count)) - 2)):,}"


def margin_lines(by_metric: dict[str, PairedResult]) -> list[str]:
    """Is LoRA good enough? Each metric's margin verdict, with what the test set could detect."""
    tested = {metric: result for metric, result in by_metric.items() if result.margin is not None}
    if not tested:
        return []
    any_result = next(iter(tested.values()))
    one_sided = (1 - any_result.level) / 2
    lines = [
        "## Is LoRA good enough?",
        "",
        f"Against a margin (`error_analysis.margin`, per metric `margins`): non-inferior when the "
        f"{any_result.level * 100:g}% interval's bound on LoRA's worse side lies within the margin (a one-sided "
        f"test at {one_sided:.3g}); equivalent when the whole interval lies within ±margin (TOST). With one "
        "training seed the intervals cover the test sample, not another training run "
        "(`reprotune-seeds run TASK --seeds 43 44`).",
        "",
    ]
    for metric, result in tested.items():
        margin = result.margin
        assert margin is not None
        needed = (
            f"; about {_about(margin.examples_needed)} test examples would show non-inferiority if the two are "
            "truly equal"
            if margin.examples_needed is not None and margin.verdict == "too small to tell"
            else ""
        )
        lines.append(
            f"- {metric} (margin {margin.margin:g}): **{margin.verdict}**, interval "
            f"[{signed(result.ci_low)}, {signed(result.ci_high)}]; non-inferiority p = {margin.noninferiority_p:.3g}, "
            f"equivalence p = {margin.equivalence_p:.3g}; the smallest difference {result.n_examples} test "
            f"examples detect ({POWER * 100:g}% power): {margin.detectable:.3f}{needed}"
        )
    return [*lines, ""]


def with_section(summary: str, section: list[str]) -> str:
    """summary.md with `section` right after its title line."""
    if not section:
        return summary
    title, _, rest = summary.partition("\n")
    return "\n".join([title, "", *section]) + "\n" + rest.lstrip("\n")
