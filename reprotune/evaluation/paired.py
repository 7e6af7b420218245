"""Methods compared on the same test examples: per-example statistics aligned across methods,
the paired tests of every headline metric, and the sentences summary.md shows for them."""

from __future__ import annotations

from typing import Any

import pandas as pd

from reprotune import tasks
from reprotune.core.errors import ReprotuneError
from reprotune.core.params import TaskParams
from reprotune.evaluation.uncertainty import PairedResult, compare_methods, verdict


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


def significance(
    predictions: dict[str, pd.DataFrame], meta: Any, task: TaskParams
) -> dict[str, dict[str, PairedResult]]:
    """LoRA - full, full - baseline and LoRA - baseline on every headline metric, paired on the same test examples."""
    settings = task.error_analysis.significance
    metrics = tasks.metrics(task.type)
    stats = aligned_stats(predictions, meta, task.type)
    if not stats or len(next(iter(stats.values()))) == 0:
        return {}
    return compare_methods(
        stats,
        metrics.HEADLINE,
        metrics.HEADLINE_KEYS,
        settings.resamples,
        settings.seed,
        settings.level,
        test=settings.test,
        mcnemar_columns=getattr(metrics, "MCNEMAR", None),
    )


TITLES = {
    "lora_minus_full": "LoRA against full",
    "full_minus_baseline": "full against the baseline",
    "lora_minus_baseline": "LoRA against the baseline",
}


def significance_lines(results: dict[str, dict[str, PairedResult]]) -> list[str]:
    """The section of summary.md: one verdict sentence per comparison and metric."""
    if not results:
        return []
    any_result = next(iter(next(iter(results.values())).values()))
    lines = [
        "## Are the differences significant?",
        "",
        f"Each method against another on the same {any_result.n_examples} test examples: the difference "
        f"b − a, its {any_result.level * 100:g}% paired-bootstrap interval ({any_result.n_resamples} resamples) "
        "and the p-value of the test named after it (McNemar's where each example is simply right or wrong). "
        "Significant: p < " + f"{1 - any_result.level:.2g}" + ".",
        "",
    ]
    for comparison, by_metric in results.items():
        lines.append(f"**{TITLES.get(comparison, comparison)}**")
        lines.append("")
        for metric, result in by_metric.items():
            lines.append(f"- {metric}: {verdict(result)} ({result.test})")
        lines.append("")
    return lines


def with_section(summary: str, section: list[str]) -> str:
    """summary.md with `section` right after its title line."""
    if not section:
        return summary
    title, _, rest = summary.partition("\n")
    return "\n".join([title, "", *section]) + "\n" + rest.lstrip("\n")
