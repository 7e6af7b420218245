"""Benchmark: full fine-tuning against LoRA, each tuned on validation by the search stages,
then tested once. Run in a scratch repo that bench/run_pipeline.py kept:

    python bench/run_pipeline.py wikiann_local cola_local squad_local --no-export --keep /tmp/lora
    python bench/lora_search.py /tmp/lora/repo wikiann_local --trials 8
    python bench/lora_search.py /tmp/lora/repo cola_local --trials 8 --sampler-seeds 0 1 2

Each (task, sampler seed) is one `dvc exp run` with `tasks.T.search.enabled=true`: the
search-full and search-lora stages choose each method's settings on the validation split with
the same budget (`search.trials`), the train stages train what they chose, and the evaluate
and error-analysis stages score the two chosen models on test, once. This script chooses
nothing: it records what the search chose and on which validation score
(metrics/T/search-<method>.json), and the one test comparison of the chosen LoRA against the
chosen full (metrics/T/significance.json: difference, paired interval, p-value, margin
verdict), merged by run into bench/results/search-<task>.json. Several sampler seeds show how
much the choice, and so the test result, moves with the search's own randomness; they are
not candidates to pick from by their test scores.

The earlier hand search (bench/results/lora-search-<task>.json) compared LoRA settings by
their test-set differences; it is kept as a record, not as a way to choose.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from reprotune.core.atomic import write_json

REPO = Path(__file__).resolve().parents[1]
METHODS = ("full", "lora")
SEARCH_KEYS = (
    "metric",
    "direction",
    "sampler",
    "budget",
    "trials",
    "best_trial",
    "best_value",
    "chosen",
    "chosen_from",
)
"""What each method's search outcome (metrics/T/search-<method>.json) contributes to the record."""


def read(repo: Path, relative: str) -> dict[str, Any]:
    path = repo / relative
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def overrides(task: str, trials: int | None, sampler_seed: int | None) -> list[str]:
    """`dvc exp run -S` values that turn the search on (and set its budget and sampler seed)."""
    changes = [f"tasks.{task}.search.enabled=true"]
    if trials is not None:
        changes.append(f"tasks.{task}.search.trials={trials}")
    if sampler_seed is not None:
        changes.append(f"tasks.{task}.search.seed={sampler_seed}")
    return changes


def record(repo: Path, task: str, metric: str | None = None) -> dict[str, Any]:
    """What one run chose on validation and how the chosen models compare on test.

    `metric` defaults to significance.json's `verdict_metric`. Test numbers are read, never
    compared across runs or settings here."""
    significance = read(repo, f"metrics/{task}/significance.json")
    metric = metric or str(significance.get("verdict_metric") or "")
    prefix = f"lora_minus_full.{metric}."
    search = {}
    for method in METHODS:
        outcome = read(repo, f"metrics/{task}/search-{method}.json")
        search[method] = {key: outcome.get(key) for key in SEARCH_KEYS if key in outcome}
        search[method]["enabled"] = bool(outcome.get("enabled"))
    scores = {method: read(repo, f"metrics/{task}/{method}.json") for method in METHODS}
    cost = {method: read(repo, f"metrics/{task}/{method}-cost.json") for method in METHODS}
    test = {
        "metric": metric,
        **{method: scores[method].get(metric) for method in METHODS},
        **{
            key: significance.get(prefix + key)
            for key in ("difference", "ci_low", "ci_high", "p_value", "margin", "verdict", "detectable")
        },
        "examples": significance.get("examples"),
        "clusters": significance.get("clusters"),
    }
    return {
        "chosen_on": "validation",
        "search": search,
        "test": test,
        "cost": {
            method: {key: cost[method].get(key) for key in ("trainable_params", "train_seconds")} for method in METHODS
        },
    }


def run(repo: Path, task: str, trials: int | None, sampler_seed: int | None, metric: str | None) -> dict[str, Any]:
    subprocess.run(["git", "checkout", "-q", "--", "params.yaml"], cwd=repo, check=True)
    label = "search" if sampler_seed is None else f"search-seed{sampler_seed}"
    command = ["dvc", "exp", "run", "-n", f"{task}-{label}".replace("_", "-")]
    for change in overrides(task, trials, sampler_seed):
        command += ["-S", change]
    command.append(f"error-analysis@{task}")  # what the comparison needs; no export, no report
    started = time.perf_counter()
    subprocess.run(command, cwd=repo, check=True)
    row = record(repo, task, metric)
    row["exp_run_seconds"] = round(time.perf_counter() - started, 1)
    row["overrides"] = overrides(task, trials, sampler_seed)
    return row


def line(task: str, label: str, row: dict[str, Any]) -> str:
    """One printed line: the chosen settings and the test verdict of that one choice."""
    test, search = row["test"], row["search"]

    def number(value: Any) -> str:
        return f"{value:+.4f}" if isinstance(value, (int, float)) else "n/a"

    return (
        f"{task} {label}: chosen on validation full {search['full'].get('chosen')}, "
        f"LoRA {search['lora'].get('chosen')}; test LoRA - full {test['metric']} {number(test['difference'])} "
        f"[{number(test['ci_low'])}, {number(test['ci_high'])}], {test.get('verdict') or 'no verdict'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo", type=Path, help="the scratch repo bench/run_pipeline.py --keep made (DIR/repo)")
    parser.add_argument("task")
    parser.add_argument("--trials", type=int, help="search.trials for each method (default: params.yaml's)")
    parser.add_argument("--sampler-seeds", type=int, nargs="+", help="one search per sampler seed (search.seed)")
    parser.add_argument("--metric", help="the headline metric to record (default: the task's verdict metric)")
    args = parser.parse_args()
    out = REPO / "bench" / "results" / f"search-{args.task}.json"
    results = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {"task": args.task, "runs": {}}
    for seed in args.sampler_seeds or [None]:
        label = "default" if seed is None else f"sampler-seed{seed}"
        row = run(args.repo, args.task, args.trials, seed, args.metric)
        results["runs"][label] = row
        write_json(out, results)
        print(line(args.task, label, row), flush=True)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
