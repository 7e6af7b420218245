"""The comparison report: for every task, baseline / full / LoRA side by side with
their costs, training curves and confusion matrices, readable in one screen; every headline
number with its bootstrap interval, and the paired verdict of LoRA against full."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from reprotune.core.paths import EVAL_METHODS as METHODS
from reprotune.core.tables import p_text, signed
from reprotune.reporting import charts
from reprotune.reporting.tuning import tuning_lines

COST_ROWS = (
    ("train seconds", "train_seconds", "{:.0f}"),
    ("train samples/s", "train_samples_per_second", "{:.1f}"),
    ("peak memory MB", "peak_memory_mb", "{:.0f}"),
    ("trainable params", "trainable_params", "{:,}"),
    ("total params", "total_params", "{:,}"),
    ("shipped size MB", "shipped_bytes", None),
)


CI_SUFFIXES = ("_ci_low", "_ci_high")
COMPARISONS = (
    ("lora_minus_full", "LoRA", "full"),
    ("full_minus_baseline", "full", "baseline"),
    ("lora_minus_baseline", "LoRA", "baseline"),
)
"""significance.json prefixes, as (key, b, a): the difference is b - a."""

HOW_TO_READ = [
    "**How to read this.** A number followed by `[low, high]` is the test-split score with its confidence",
    "interval (95% unless `evaluate.bootstrap.level` says otherwise): a seeded bootstrap that resamples the test",
    "examples (sentences for NER, documents for classification, questions for QA, blocks for masked-LM). It",
    "shows how much the score would move on another test set of the same size; a few hundred examples leave",
    "several points of room. Two intervals that overlap do not settle whether two methods differ: both are",
    "scored on the same examples, so read the paired test under each table instead. There, a line such as",
    "`LoRA − full = −0.012 [−0.031, +0.006], p = 0.21: not significant at 95%` (an illustration, not a result)",
    "would say LoRA scored 0.012 lower,",
    "the difference could plausibly lie anywhere from −0.031 to +0.006 (zero included), and a gap this size",
    "arises by chance too often (p ≥ 0.05) to call one method better. Significant means the interval of the",
    "difference excludes zero, not that the difference is large: the interval tells how large it may be.",
    "Interval and p-value come from the same paired bootstrap, for accuracy too (McNemar's p is shown beside",
    "it and decides nothing); with `error_analysis.significance.test: randomisation` that test's p decides.",
    "Not significant is not the same as equally good: the sentence that opens each task says whether LoRA",
    "is good enough against a margin (`error_analysis.margin`, in the metric's units): non-inferior when the",
    "interval's bound on LoRA's worse side lies within the margin, equivalent when the whole interval does.",
    "Details per task: `metrics/<task>/significance.json` (`dvc metrics diff` compares them across experiments).",
    "",
]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def metric_rows(metrics: dict[str, dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Top-level numbers, then the F1 of each type/class found in nested score tables."""
    keys: list[str] = []
    nested: list[tuple[str, str]] = []
    for values in metrics.values():
        for key, value in values.items():
            if key.endswith(CI_SUFFIXES):
                continue  # shown beside their metric
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in keys:
                keys.append(key)
            elif isinstance(value, dict):
                for name, scores in value.items():
                    if isinstance(scores, dict) and "f1" in scores and (key, name) not in nested:
                        nested.append((key, name))
    rows = [(key, [metrics[m].get(key) for m in METHODS]) for key in keys]
    rows += [(f"f1 {name}", [metrics[m].get(key, {}).get(name, {}).get("f1") for m in METHODS]) for key, name in nested]
    return rows


def _cell(value: Any, fmt: str | None = "{:.4f}") -> str:
    if value is None:
        return "–"
    if isinstance(value, int) and fmt == "{:.4f}":
        return str(value)
    if isinstance(value, float) and fmt == "{:.4f}":
        return f"{value:.4f}"
    return fmt.format(value) if fmt else str(value)


def interval(values: dict[str, Any], key: str) -> tuple[float, float] | None:
    """The bootstrap interval of `key` in one metrics file, if it has one."""
    low, high = values.get(f"{key}_ci_low"), values.get(f"{key}_ci_high")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    return (float(low), float(high)) if numbers else None  # type: ignore[arg-type]


def with_interval(value: Any, bounds: tuple[float, float] | None) -> str:
    """`0.407 [0.362, 0.451]`; a value without an interval as before."""
    if bounds is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return _cell(value)
    return f"{value:.3f} [{bounds[0]:.3f}, {bounds[1]:.3f}]"


def verdict_text(significance: dict[str, Any], comparison: str, metric: str, names: tuple[str, str]) -> str | None:
    """The paired verdict of one comparison and metric read back from significance.json, worded as
    reprotune.evaluation.uncertainty.verdict words it: `LoRA − full = −0.012 [−0.031, +0.006], p = 0.21:
    not significant at 95%`; None when the file lacks it."""
    prefix = f"{comparison}.{metric}."
    try:
        difference, low, high, p_value = (
            float(significance[prefix + k]) for k in ("difference", "ci_low", "ci_high", "p_value")
        )
        significant = bool(significance[prefix + "significant"])
    except (KeyError, TypeError, ValueError):
        return None
    level = float(significance.get("level", 0.95))
    words = "significant" if significant else "not significant"
    return (
        f"{names[0]} \u2212 {names[1]} = {signed(difference)} [{signed(low)}, {signed(high)}], "
        f"{p_text(p_value)}: {words} at {level * 100:g}%"
    )


# --------------------------------------------------------------------------- the one-sentence verdict

METRIC_WORDS = {
    "f1": "F1",
    "exact_match": "EM",
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "mcc": "MCC",
    "precision": "precision",
    "recall": "recall",
    "top_k_accuracy": "top-k accuracy",
}


def _lower_is_better(metric: str) -> bool:
    """As reprotune.evaluation.uncertainty.lower_is_better: loss and perplexity fall as models improve."""
    return "loss" in metric or "perplexity" in metric


def _amount(value: float, metric: str, exact: bool = False) -> str:
    """A size of difference in the metric's words: `0.8 F1 points` (`1 F1 point` for an `exact`
    setting such as the margin); perplexity and loss in their own units."""
    if _lower_is_better(metric):
        return f"{value:.3g} {metric}"
    text = f"{value * 100:g}" if exact else f"{value * 100:.1f}"
    return f"{text} {METRIC_WORDS.get(metric, metric)} point{'' if text == '1' else 's'}"


def _range(low: float, high: float, metric: str) -> str:
    """`3.1 to 6.0 F1 points`: two sizes of difference, the unit once."""
    if _lower_is_better(metric):
        return f"{low:.3g} to {high:.3g} {metric}"
    return f"{low * 100:.1f} to {high * 100:.1f} {METRIC_WORDS.get(metric, metric)} points"


def _span(low: float, high: float, metric: str) -> str:
    """`−0.8 to +0.6 F1 points`: an interval of LoRA's advantage, signed."""
    if _lower_is_better(metric):
        return f"{signed(low)} to {signed(high)}"
    word = METRIC_WORDS.get(metric, metric)
    return f"{signed_points(low)} to {signed_points(high)} {word} points"


def signed_points(value: float) -> str:
    """0.023 -> `+2.3` (points, with a real minus sign)."""
    return f"{value * 100:+.1f}".replace("-", "\u2212")


def _about(count: int) -> str:
    """9,437 -> `9,400`: a sample size from a normal approximation deserves two digits."""
    digits = max(0, len(str(count)) - 2)
    return f"{round(count, -digits):,}"


def _number(flat: dict[str, Any], key: str) -> float | None:
    value = flat.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def cost_phrase(costs: dict[str, dict[str, Any]]) -> str:
    """`, with 0.6% of the trainable parameters and 1/153 of the shipped size` from the cost files."""
    full, lora = costs.get("full") or {}, costs.get("lora") or {}
    parts = []
    trainable_full, trainable_lora = _number(full, "trainable_params"), _number(lora, "trainable_params")
    if trainable_full and trainable_lora:
        share = 100 * trainable_lora / trainable_full
        parts.append(f"{share:.0f}%" if share >= 10 else f"{share:.2g}%")
        parts[-1] += " of the trainable parameters"
    shipped_full, shipped_lora = _number(full, "shipped_bytes"), _number(lora, "shipped_bytes")
    if shipped_full and shipped_lora:
        ratio = shipped_full / shipped_lora
        parts.append(f"1/{ratio:.0f} of the shipped size" if ratio >= 1.5 else f"{1 / ratio:.2g}× the shipped size")
    return f", with {' and '.join(parts)}" if parts else ""


def verdict_sentence(flat: dict[str, Any], prefix: str, metric: str, costs: dict[str, dict[str, Any]]) -> str | None:
    """LoRA against full in one sentence, from the margin keys under `prefix` (`lora_minus_full.f1.`)."""
    word = flat.get(prefix + "verdict")
    numbers = [_number(flat, prefix + key) for key in ("ci_low", "ci_high", "margin")]
    if not isinstance(word, str) or any(value is None for value in numbers):
        return None
    low, high, margin = (float(value) for value in numbers)  # type: ignore[arg-type]
    if _lower_is_better(metric):
        low, high = -high, -low  # positive: LoRA is better
    level = f"{float(flat.get('level', 0.95)) * 100:g}%"
    within = _amount(margin, metric, exact=True)
    cost = cost_phrase(costs)
    if word == "better":
        return f"LoRA is better here: by {_range(low, high, metric)} ({level} interval){cost}."
    if word == "equivalent":
        return f"LoRA is as good as full here: within ±{within} ({level} interval {_span(low, high, metric)}){cost}."
    if word == "good enough":
        return f"LoRA is good enough here: at worst {_amount(-low, metric)} below full ({level} bound){cost}."
    if word == "worse":
        return f"LoRA is worse: by {_range(-high, -low, metric)} ({level} interval)."
    needed = _number(flat, prefix + "examples_needed")
    examples = flat.get("examples")
    has = f" (it has {examples:,})" if isinstance(examples, int) else ""
    take = (
        f"it would take about {_about(int(needed))} test examples{has}"
        if needed is not None
        else "more training seeds would be needed, not only more test examples"
    )
    return f"The test set is too small to tell within {within}: {take}."


def _across_seeds(seeds: dict[str, Any]) -> dict[str, Any] | None:
    """seeds.json's LoRA - full keys without their `seeds.` prefix, when it tested two seeds or more."""
    count = seeds.get("seeds")
    if not isinstance(count, int) or count < 2:
        return None
    view = {key.removeprefix("seeds."): value for key, value in seeds.items() if key.startswith("seeds.")}
    return {**view, "verdict_metric": seeds.get("verdict_metric")} if view else None


def _verdict_metric(flat: dict[str, Any]) -> str | None:
    chosen = flat.get("verdict_metric")
    if isinstance(chosen, str):
        return chosen
    found = [key.split(".")[1] for key in flat if key.startswith("lora_minus_full.") and key.endswith(".verdict")]
    return found[0] if found else None


def seeds_verdict_sentence(seeds: dict[str, Any], costs: dict[str, dict[str, Any]] | None = None) -> str | None:
    """`Across 3 training seeds: LoRA is ...` from a seeds.json summary; None without a seed test."""
    view = _across_seeds(seeds)
    metric = _verdict_metric(view) if view else None
    if view is None or metric is None:
        return None
    sentence = verdict_sentence(view, f"lora_minus_full.{metric}.", metric, costs or {})
    return f"Across {seeds['seeds']} training seeds: {sentence}" if sentence else None


def verdict_lines(task: str, significance: dict[str, Any], seeds: dict[str, Any], costs: dict[str, Any]) -> list[str]:
    """What opens a task's section: the verdict in one sentence (across seeds when seeds.json has
    two or more), the margin and the smallest detectable difference, and with one seed the caveat."""
    view = _across_seeds(seeds)
    flat = view if view is not None else significance
    metric = _verdict_metric(flat)
    if metric is None:
        return []
    prefix = f"lora_minus_full.{metric}."
    sentence = verdict_sentence(flat, prefix, metric, costs)
    if sentence is None:
        return []
    detectable, margin = _number(flat, prefix + "detectable"), _number(flat, prefix + "margin")
    examples = flat.get("examples")
    sample = f"these {examples:,} test examples" if isinstance(examples, int) else "this test set"
    if view is not None:
        sentence = f"Across {seeds['seeds']} training seeds: {sentence}"
        sample = f"{seeds['seeds']} seeds on {sample}"
    low, high = _number(flat, prefix + "ci_low"), _number(flat, prefix + "ci_high")
    interval_text = (
        f"LoRA − full = {_span(low, high, metric)} ({float(flat.get('level', 0.95)) * 100:g}% interval)"
        if low is not None and high is not None
        else ""
    )
    details = [
        f"Margin ±{_amount(margin, metric, exact=True)} (`error_analysis.margin`)" if margin is not None else "",
        interval_text,
        f"the smallest difference {sample} could detect: {_amount(detectable, metric)} (80% power)"
        if detectable is not None and detectable == detectable
        else "",
    ]
    lines = [f"**{sentence}**", "", "; ".join(part for part in details if part) + ".", ""]
    if view is None:
        lines += [
            "One training seed per method: the intervals cover the test sample, not another training run; "
            f"`reprotune-seeds run {task} --seeds 43 44`, then `reprotune-seeds report {task}` puts the seeds' "
            "variance into this verdict.",
            "",
        ]
    return lines


def overlap_lines(download_report: dict[str, Any], resampled_clusters: int | None = None) -> list[str]:
    """How many evaluation examples share their text with train (download_report.json `overlap`),
    and the test split's rows against its distinct texts (`test_count_lines`)."""
    overlap = download_report.get("overlap") or {}
    parts = [
        f"{o['with_text_in_train']} of {o['examples']} {split}"
        for split in ("test", "validation")
        if isinstance(o := overlap.get(split), dict) and "examples" in o
    ]
    if not parts:
        return []
    carved = [split for split in ("test", "validation") if (overlap.get(split) or {}).get("split_from") == "train"]
    how = (
        f"{' and '.join(carved)} carved from train with `download.duplicates: "
        f"{(download_report.get('carving') or {}).get('duplicates', 'group')}`"
        if carved
        else ""
    )
    given = "splits given by the source are kept as they are and only counted"
    return [
        f"**Overlap with train:** {' and '.join(parts)} examples have a text (ignoring case and white space) "
        f"that train also holds ({'; '.join(filter(None, [how, given]))}).",
        "",
        *test_count_lines(overlap.get("test"), resampled_clusters),
    ]


def _count(entry: dict[str, Any], key: str) -> int | None:
    value = entry.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def test_count_lines(test: Any, resampled_clusters: int | None = None) -> list[str]:
    """The test split counted two ways, rows and distinct texts (and near-duplicate clusters),
    with how many rows have a near-duplicate in train; `resampled_clusters` (significance.json
    `clusters`) says the intervals resampled clusters, not rows."""
    if not isinstance(test, dict) or _count(test, "examples") is None:
        return []
    counts = [f"{test['examples']} rows"]
    for key, words in (
        ("distinct_texts", "distinct texts"),
        ("near_duplicate_clusters", "clusters of near-duplicates"),
    ):
        if (value := _count(test, key)) is not None:
            counts.append(f"{value} {words}")
    if len(counts) == 1:
        return []
    near = _count(test, "with_near_duplicate_in_train")
    in_train = f"; {near} of its rows have a near-duplicate (or a copy) in train" if near is not None else ""
    if isinstance(resampled_clusters, int) and not isinstance(resampled_clusters, bool):
        how = f" The intervals and paired tests resample its {resampled_clusters} clusters, each with all its rows."
    elif _count(test, "distinct_texts") not in (None, test["examples"]):
        how = " The intervals and paired tests resample rows, so a repeated text counts more than once."
    else:
        how = ""
    return [f"**Test split:** {', '.join(counts)}{in_train}.{how}", ""]


def seeds_lines(seeds: dict[str, Any]) -> list[str]:
    """Mean ± sd over training seeds beside the single-run numbers (`reprotune-seeds report`)."""
    if not seeds.get("seeds"):
        return []
    keys = sorted({key.split(".")[1] for key in seeds if key.startswith("full.") and key.endswith(".mean")})
    cells = [
        f"{key} full {seeds[f'full.{key}.mean']:.4f} ± {seeds[f'full.{key}.sd']:.4f}, "
        f"LoRA {seeds[f'lora.{key}.mean']:.4f} ± {seeds[f'lora.{key}.sd']:.4f}"
        for key in keys
    ]
    lines = [
        f"**Across {seeds['seeds']} training seeds** ({', '.join(map(str, seeds.get('seed_values', [])))}; "
        "mean ± sd): " + "; ".join(cells) + ".",
        "",
    ]
    lines += [f"- across seeds, {metric}: {text}" for metric, text in (seeds.get("verdicts") or {}).items()]
    return [*lines, ""] if seeds.get("verdicts") else lines


def significance_lines(significance: dict[str, Any]) -> list[str]:
    """Per comparison (LoRA against full first) one line per headline metric, from significance.json."""
    lines: list[str] = []
    for comparison, b, a in COMPARISONS:
        metrics = sorted(
            {
                key[len(comparison) + 1 :].rsplit(".", 1)[0]
                for key in significance
                if key.startswith(comparison + ".") and key.endswith(".difference")
            }
        )
        sentences = []
        for metric in metrics:
            text = verdict_text(significance, comparison, metric, (b, a))
            if text is not None:
                test = significance.get(f"{comparison}.{metric}.test")
                sentences.append(f"- {metric}: {text}" + (f" ({test})" if isinstance(test, str) else ""))
        if not sentences:
            continue
        if comparison == "lora_minus_full":
            examples = significance.get("examples")
            on = f" on the same {examples} test examples" if isinstance(examples, int) else ""
            lines += [f"**{b} against {a}**, paired{on}:", "", *sentences, ""]
        else:
            lines += [f"{b} against the {a}:", "", *sentences, ""]
    return lines


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def read_curve(plots_dir: Path, name: str) -> tuple[list[tuple[float, float]], str]:
    """One dvclive curve (`eval/f1.tsv`) as (x, value) points and the x axis's name. dvclive's
    `step` column is its log index, not an epoch: `epoch.tsv` maps each index to the epoch the
    Trainer reported there, so the points sit at the epochs they were logged at (logging steps
    part way through an epoch as fractions); without it, the log index, named as such."""
    path = plots_dir / name
    if not path.exists():
        return [], ""
    rows = _read_tsv(path)
    value_key = next((k for k in rows[0] if k not in ("step", "timestamp")), None) if rows else None
    if value_key is None:
        return [], ""
    epochs_path = plots_dir / "epoch.tsv"
    epochs = {r["step"]: float(r["epoch"]) for r in _read_tsv(epochs_path)} if epochs_path.exists() else {}
    if epochs and all(r["step"] in epochs for r in rows):
        return [(epochs[r["step"]], float(r[value_key])) for r in rows], "epoch"
    return [(float(r["step"]), float(r[value_key])) for r in rows], "dvclive log index"


def _curves(metrics_dir: Path, task: str, name: str) -> tuple[dict[str, list[tuple[float, float]]], str]:
    series, x_label = {}, "epoch"
    for method in ("full", "lora"):
        points, label = read_curve(metrics_dir / task / f"train-{method}" / "plots" / "metrics", name)
        if points:
            series[method], x_label = points, label
    return series, x_label


CURVE_TITLES = {"loss.tsv": ("training loss", "loss (cross-entropy, nats)")}


def axis_label(metric: str) -> str:
    """A validation metric's axis with its unit: losses in nats, MCC from -1 to 1, perplexity as
    is, the rest (F1, accuracy, exact match: shares of examples) from 0 to 1."""
    if "loss" in metric:
        return f"{metric} (cross-entropy, nats)"
    if "perplexity" in metric:
        return f"{metric} (exp of the loss)"
    if metric == "mcc":
        return "MCC (−1 to 1)"
    return f"{metric} (0 to 1)"


def chart_files(metrics_dir: Path, task: str, significance: dict[str, Any], out_dir: Path) -> list[str]:
    """Draw the task's charts into out_dir; return their file names in reading order."""
    figures: list[tuple[str, Any]] = []
    eval_dir = metrics_dir / task / "train-full" / "plots" / "metrics" / "eval"
    eval_names = sorted(p.name for p in eval_dir.glob("*.tsv")) if eval_dir.exists() else []
    wanted = [n for n in eval_names if n not in ("runtime.tsv", "samples_per_second.tsv", "steps_per_second.tsv")]
    for name in ["loss.tsv"] + [f"eval/{n}" for n in wanted[:2]]:
        series, x_label = _curves(metrics_dir, task, name)
        metric = name.removeprefix("eval/").removesuffix(".tsv")
        title, y_label = CURVE_TITLES.get(name, (f"validation {metric}", metric))
        if name.startswith("eval/"):
            y_label = axis_label(metric)
        figure = charts.curve_figure(series, f"{task}: {title}", x_label, y_label)
        figures.append((f"{task}-{name.replace('/', '-').removesuffix('.tsv')}.svg", figure))
    figures.append((f"{task}-lora-minus-full.svg", charts.differences_figure(significance, task)))
    trials: dict[str, list[dict[str, Any]]] = {}
    metric = ""
    for method in ("full", "lora"):
        rows = _read_json_list(metrics_dir / task / f"search-{method}" / "trials.json")
        if rows:
            trials[method] = rows
            metric = metric or str(_read_json(metrics_dir / task / f"search-{method}.json").get("metric", "metric"))
    figures.append((f"{task}-search-trials.svg", charts.trials_figure(trials, metric, task) if trials else None))
    for method in ("full", "lora"):
        path = metrics_dir / task / "confusion" / f"{method}.csv"
        if path.exists():
            with open(path, encoding="utf-8") as handle:
                pairs = [(row["actual"], row["predicted"]) for row in csv.DictReader(handle)]
            label = charts.LABELS[method]
            figures.append((f"{task}-confusion-{method}.svg", charts.confusion_figure(pairs, f"{task}: {label}")))
    files = []
    for file, figure in figures:
        if figure is not None:
            (out_dir / file).write_text(charts.to_svg(figure), encoding="utf-8")
            files.append(file)
    return files


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []


def build(task_types: dict[str, str], metrics_dir: Path, out_dir: Path) -> str:
    """Write comparison.md and its SVG pictures into out_dir; return the Markdown.
    `task_types` is pipeline.tasks: task name -> family, in report order."""
    tasks = list(task_types)
    lines = [
        "# Full fine-tuning against LoRA",
        "",
        "Test-split metrics computed from each method's predictions; `baseline` is the pretrained encoder",
        "with an untrained head. Curves are validation metrics and training loss at the epochs they were logged.",
        "",
    ]
    all_metrics = {task: {m: _read_json(metrics_dir / task / f"{m}.json") for m in METHODS} for task in tasks}
    significance = {task: _read_json(metrics_dir / task / "significance.json") for task in tasks}
    if any(
        interval(values, key) for by_method in all_metrics.values() for values in by_method.values() for key in values
    ) or any(significance.values()):
        lines += HOW_TO_READ
    for task in tasks:
        metrics = all_metrics[task]
        costs = {m: _read_json(metrics_dir / task / f"{m}-cost.json") for m in METHODS}
        seeds = _read_json(metrics_dir / task / "seeds.json")
        lines += [f"## {task} ({task_types.get(task, '?')})", ""]
        lines += verdict_lines(task, significance[task], seeds, costs)
        lines += ["| | baseline | full | LoRA |", "| --- | --- | --- | --- |"]
        for name, values in metric_rows(metrics):
            cells = [with_interval(v, interval(metrics[m], name)) for m, v in zip(METHODS, values)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for label, key, fmt in COST_ROWS:
            values = [costs[m].get(key) for m in METHODS]
            if key == "shipped_bytes":
                cells = [_cell(v / 2**20 if v else None, "{:.1f}") for v in values]
            else:
                cells = [
                    _cell(v, fmt) if m != "baseline" or key == "total_params" else "–" for m, v in zip(METHODS, values)
                ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += tuning_lines(metrics_dir, task)
        lines += overlap_lines(
            _read_json(metrics_dir / task / "tokenize.json").get("download") or {}, significance[task].get("clusters")
        )
        lines += significance_lines(significance[task])
        lines += seeds_lines(seeds)
        pictures = chart_files(metrics_dir, task, significance[task], out_dir)
        lines += [
            " ".join(f"![{p}]({p})" for p in pictures),
            "",
            f"Details: `reports/{task}/summary.md`; interactive charts: `dvc plots show` "
            f"(every training curve: `dvc plots show metrics/{task}/train-full/plots`).",
            "",
        ]
    markdown = "\n".join(lines)
    (out_dir / "comparison.md").write_text(markdown, encoding="utf-8")
    return markdown
