"""reprotune-seeds: one task trained with several seeds, each seed a DVC experiment (so each is
cached and reproducible on its own), summarised as mean ± standard deviation per method and a
LoRA-against-full test whose interval and verdict include the seeds' variance.

    reprotune-seeds run wnut16 --seeds 43 44     # `dvc exp run --temp` per seed: both methods get it
    reprotune-seeds report wnut16                # metrics/wnut16/seeds.json + reports/seeds/wnut16.md

The workspace's own run counts as one seed. `report` takes the experiments of the current
commit whose params differ from the workspace's only in `train_full.seed` / `train_lora.seed`
of that task (and set both alike), reads their prediction tables from the DVC cache, and tests
LoRA - full across seeds: the difference of the per-seed means, with the seeds' spread and the
test examples' in its variance (`uncertainty.seed_difference`), against the task's margin.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from reprotune import tasks
from reprotune.core import paths
from reprotune.core.atomic import write_json, write_text
from reprotune.core.cli import run_stage
from reprotune.core.errors import ReprotuneError
from reprotune.evaluation.clusters import TestClusters, load_test_clusters
from reprotune.evaluation.paired import aligned_stats, margins, verdict_metric
from reprotune.evaluation.uncertainty import PairedResult, seed_difference, significance_metrics, verdict
from reprotune.reporting.report import seeds_verdict_sentence

SEED_KEYS = ("train_full", "train_lora")


def _dvc(*args: str) -> str:
    result = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ReprotuneError(f"dvc {' '.join(args[:3])} failed: {last}")
    return result.stdout


def run_seeds(task_name: str, seeds: list[int]) -> list[str]:
    """One `dvc exp run --temp` per seed (the workspace is left as it is); returns their names."""
    names = []
    for seed in seeds:
        name = f"{task_name}-seed{seed}"
        # `++`: set the key whether or not params.yaml writes it (the default seed may be implicit)
        overrides = [arg for key in SEED_KEYS for arg in ("-S", f"++tasks.{task_name}.{key}.seed={seed}")]
        _dvc("exp", "run", "--temp", "-n", name, *overrides)
        names.append(name)
    return names


def _without_seeds(params: dict[str, Any], task_name: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(params))
    for key in SEED_KEYS:
        copy.get("tasks", {}).get(task_name, {}).get(key, {}).pop("seed", None)
    return copy


def seed_of(params: dict[str, Any], task_name: str) -> int | None:
    """The run's training seed, when both methods share it."""
    section = params.get("tasks", {}).get(task_name, {})
    values = {section.get(key, {}).get("seed", 42) for key in SEED_KEYS}
    return values.pop() if len(values) == 1 else None


def seed_runs(task_name: str) -> dict[int, str | None]:
    """seed -> experiment revision (None: the workspace) for the runs that differ only in seed."""
    workspace = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    own_seed = seed_of(workspace, task_name)
    if own_seed is None:
        raise ReprotuneError(f"tasks.{task_name}.train_full.seed and train_lora.seed differ; set them alike")
    runs: dict[int, str | None] = {own_seed: None}
    reference = _without_seeds(workspace, task_name)
    for commit in json.loads(_dvc("exp", "show", "--json") or "[]"):
        for experiment in commit.get("experiments") or []:
            for revision in experiment.get("revs", []):
                data = revision.get("data") or {}
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
                seed = seed_of(params, task_name)
                if seed is not None and seed not in runs and _without_seeds(params, task_name) == reference:
                    runs[seed] = revision["rev"]
    return dict(sorted(runs.items()))


@contextmanager
def _opened(path: Path, rev: str | None) -> Iterator[Any]:
    if rev is None:
        with open(path, "rb") as handle:
            yield handle
        return
    import dvc.api

    with dvc.api.open(str(path), rev=rev, mode="rb") as handle:
        yield handle


def load_predictions(task_name: str, runs: dict[int, str | None]) -> dict[int, dict[str, pd.DataFrame]]:
    out: dict[int, dict[str, pd.DataFrame]] = {}
    for seed, rev in runs.items():
        out[seed] = {}
        for method in paths.METHODS:
            with _opened(paths.predictions_file(task_name, method), rev) as handle:
                out[seed][method] = pd.read_parquet(handle)
    return out


def summarise(
    task_name: str,
    type_name: str,
    predictions: dict[int, dict[str, pd.DataFrame]],
    meta: Any,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    margin_of: dict[str, float] | None = None,
    headline_metric: str | None = None,
    clusters: TestClusters | None = None,
) -> dict[str, Any]:
    """Per-seed headline metrics, their mean and sd, and LoRA - full tested across seeds
    (``seeds.lora_minus_full.<metric>.*``, with the margin keys where ``margin_of`` names one).
    With ``clusters`` (the download stage's duplicate clusters of the test split) the test
    examples' part of the variance resamples clusters, as the single-seed test does."""
    metrics = tasks.metrics(type_name)
    stats = {run: aligned_stats(tables, meta, type_name) for run, tables in predictions.items()}
    first = next(iter(predictions.values()))
    labels = None if clusters is None else clusters.for_table(first["full"], len(next(iter(stats.values()))["full"]))
    per_seed: dict[str, dict[str, list[float]]] = {}
    for method in paths.METHODS:
        per_seed[method] = {key: [] for key in metrics.HEADLINE_KEYS}
        for run in stats:
            headline = metrics.HEADLINE(stats[run][method])
            for key in metrics.HEADLINE_KEYS:
                per_seed[method][key].append(float(headline[key]))
    summary: dict[str, Any] = {"seeds": len(stats), "seed_values": list(stats)}
    for method, by_key in per_seed.items():
        for key, values in by_key.items():
            summary[f"{method}.{key}.mean"] = round(statistics.fmean(values), 6)
            summary[f"{method}.{key}.sd"] = round(statistics.stdev(values), 6) if len(values) > 1 else 0.0
            summary[f"{method}.{key}.per_seed"] = [round(value, 6) for value in values]
    if len(stats) < 2:
        return summary
    results: dict[str, PairedResult] = {
        key: seed_difference(
            [stats[run]["full"] for run in stats],
            [stats[run]["lora"] for run in stats],
            metrics.HEADLINE,
            key,
            resamples,
            seed,
            level,
            names=("full", "LoRA"),
            margin=(margin_of or {}).get(key),
            clusters=labels,
        )
        for key in metrics.HEADLINE_KEYS
    }
    summary.update({f"seeds.{key}": value for key, value in significance_metrics({"lora_minus_full": results}).items()})
    summary["verdict_metric"] = headline_metric or metrics.HEADLINE_KEYS[0]
    summary["verdicts"] = {metric: verdict(result) for metric, result in results.items()}
    return summary


def markdown(task_name: str, summary: dict[str, Any], keys: tuple[str, ...]) -> str:
    seeds = ", ".join(str(seed) for seed in summary["seed_values"])
    lines = [
        f"# {task_name}: full against LoRA over {summary['seeds']} training seeds ({seeds})",
        "",
        "| metric | full mean ± sd | LoRA mean ± sd | per seed (full / LoRA) |",
        "| --- | --- | --- | --- |",
    ]
    for key in keys:
        full = [summary[f"full.{key}.{part}"] for part in ("mean", "sd", "per_seed")]
        lora = [summary[f"lora.{key}.{part}"] for part in ("mean", "sd", "per_seed")]
        per = "; ".join(f"{a:.4f} / {b:.4f}" for a, b in zip(full[2], lora[2], strict=True))
        lines.append(f"| {key} | {full[0]:.4f} ± {full[1]:.4f} | {lora[0]:.4f} ± {lora[1]:.4f} | {per} |")
    sentence = seeds_verdict_sentence(summary)
    lines += [
        "",
        *([sentence, ""] if sentence else []),
        "LoRA − full across seeds: the mean over seeds of each method's score on the same test examples, "
        "tested with both the seeds' spread and the test examples' (a seed-level t-test with the "
        "paired-bootstrap variance of the examples added):",
        "",
    ]
    lines += [f"- {metric}: {text}" for metric, text in summary.get("verdicts", {}).items()]
    return "\n".join(lines) + "\n"


def report(task_name: str) -> Path:
    task = tasks.load_task(task_name, "error-analysis")
    runs = seed_runs(task_name)
    if len(runs) < 2:
        raise ReprotuneError(
            f"only one seed of '{task_name}' found (the workspace); run more first: reprotune-seeds run {task_name} "
            "--seeds 43 44"
        )
    meta = tasks.task_meta(task_name, task.type)
    settings = task.error_analysis.significance
    keys = tasks.metrics(task.type).HEADLINE_KEYS
    summary = summarise(
        task_name,
        task.type,
        load_predictions(task_name, runs),
        meta,
        settings.resamples,
        settings.seed,
        settings.level,
        margin_of=margins(task, keys),
        headline_metric=verdict_metric(task, keys),
        clusters=load_test_clusters(task_name),
    )
    write_json(paths.seeds_file(task_name), summary)
    target = Path("reports") / "seeds" / f"{task_name}.md"
    write_text(target, markdown(task_name, summary, tasks.metrics(task.type).HEADLINE_KEYS))
    return target


def main(argv: list[str]) -> str:
    parser = argparse.ArgumentParser(
        prog="reprotune-seeds", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate more seeds as DVC experiments")
    run.add_argument("task")
    run.add_argument("--seeds", type=int, nargs="+", required=True)
    summary = sub.add_parser("report", help="mean ± sd over seeds and LoRA - full tested across seeds")
    summary.add_argument("task")
    args = parser.parse_args(argv)
    if args.command == "run":
        names = run_seeds(args.task, args.seeds)
        return f"seeds {args.task}: ran {', '.join(names)}; now `reprotune-seeds report {args.task}`"
    target = report(args.task)
    return f"seeds {args.task}: read {target} (numbers in {paths.seeds_file(args.task)})"


def console() -> None:
    run_stage(main)
