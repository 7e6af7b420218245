"""Benchmark (issue 25): what the adapters' dropout buys in quality, against what it costs in
speed (docs/performance.md). In a scratch repo that bench/run_pipeline.py kept, train the
task's LoRA recipe once per `--dropouts` value, everything else equal, and compare the runs on
validation (the train stage's best epoch) and on test, paired on the same examples with the
pipeline's own test (clusters of duplicate texts included):

    python bench/run_pipeline.py wikiann_local --no-export --keep /tmp/lora
    python bench/lora_search.py /tmp/lora/repo wikiann_local --trials 8
    python bench/lora_dropout.py /tmp/lora/repo wikiann_local --dropouts 0.1 0

The recipe is what the task's LoRA search chose on validation (metrics/T/search-lora.json),
or params.yaml's `train_lora` where no search ran; each run is one `dvc exp run` with the
search off and those settings written into `train_lora`. The first value is the reference the
others are compared against. This script chooses nothing: it records every run, validation
first, in bench/results/lora-dropout-<task>.json."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd

from reprotune import tasks
from reprotune.core.atomic import write_json

REPO = Path(__file__).resolve().parents[1]


def read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def recipe(repo: Path, task: str) -> dict[str, Any]:
    """The LoRA settings the search chose on validation: the scratch repo's own record, else
    what bench/lora_search.py recorded of it (bench/results/search-<task>.json; this script's
    own runs turn the search off in the workspace); {} where no search ran."""
    outcome = read(repo / f"metrics/{task}/search-lora.json")
    if not outcome.get("enabled"):
        recorded = read(REPO / "bench" / "results" / f"search-{task}.json").get("runs", {}).get("default", {})
        outcome = recorded.get("search", {}).get("lora", {})
    return dict(outcome.get("chosen") or {}) if outcome.get("enabled") else {}


def overrides(task: str, chosen: dict[str, Any], dropout: float) -> list[str]:
    """`dvc exp run -S` values: the search off, its choice written into train_lora, and `dropout`."""
    changes = [f"tasks.{task}.search.enabled=false", f"tasks.{task}.train_lora.dropout={dropout}"]
    return changes + [f"tasks.{task}.train_lora.{key}={value}" for key, value in chosen.items()]


def train_once(repo: Path, task: str, chosen: dict[str, Any], dropout: float) -> dict[str, Any]:
    """One `dvc exp run` of the LoRA model's evaluate stage (and what it needs) at `dropout`."""
    subprocess.run(["git", "checkout", "-q", "--", "params.yaml"], cwd=repo, check=True)
    changes = overrides(task, chosen, dropout)
    name = f"{task}-lora-dropout-{dropout}{'' if chosen else '-params'}"  # one experiment name per run
    command = ["dvc", "exp", "run", "-f", "-n", name.replace("_", "-").replace(".", "p")]
    for change in changes:
        command += ["-S", change]
    command.append(f"evaluate-lora@{task}")
    started = time.perf_counter()
    subprocess.run(command, cwd=repo, check=True)
    trained = read(repo / f"metrics/{task}/train-lora/metrics.json")
    return {
        "dropout": dropout,
        "overrides": changes,
        "validation": trained.get("eval", {}),
        "test": read(repo / f"metrics/{task}/lora.json"),
        "cost": read(repo / f"metrics/{task}/lora-cost.json"),
        "exp_run_seconds": round(time.perf_counter() - started, 1),
        "_predictions": pd.read_parquet(repo / f"data/{task}/predictions/lora.parquet"),
    }


def paired(repo: Path, task_name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each run against the first on every headline metric, paired on the same test examples,
    by the error-analysis stage's own test (the first run in full's place, the other in LoRA's),
    its margin verdict included; keys `dropout_B_minus_dropout_A.<metric>.<key>`."""
    from reprotune.evaluation.clusters import load_test_clusters
    from reprotune.evaluation.paired import significance, significance_json

    here = Path.cwd()
    os.chdir(repo)  # the pipeline's readers take paths relative to the repo
    try:
        task = tasks.load_task(task_name, "error-analysis")
        meta = tasks.task_meta(task_name, task.type)
        clusters = load_test_clusters(task_name)
        reference = runs[0]["_predictions"]
        out: dict[str, Any] = {}
        for run in runs[1:]:
            flat = significance_json(
                significance({"full": reference, "lora": run["_predictions"]}, meta, task, clusters), task
            )
            label = f"dropout_{run['dropout']}_minus_dropout_{runs[0]['dropout']}"
            out.update({key.replace("lora_minus_full", label): value for key, value in flat.items()})
    finally:
        os.chdir(here)
    for run in runs:
        run.pop("_predictions")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo", type=Path, help="the scratch repo bench/run_pipeline.py --keep made (DIR/repo)")
    parser.add_argument("task")
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.1, 0.0], help="the first is the reference")
    parser.add_argument(
        "--params-recipe",
        action="store_true",
        help="params.yaml's train_lora, not the search's choice (a recipe not selected on validation at one dropout)",
    )
    args = parser.parse_args()
    chosen = {} if args.params_recipe else recipe(args.repo, args.task)
    runs = [train_once(args.repo, args.task, chosen, dropout) for dropout in args.dropouts]
    result = {
        "task": args.task,
        "command": f"python bench/lora_dropout.py REPO {args.task} --dropouts {' '.join(map(str, args.dropouts))}"
        + (" --params-recipe" if args.params_recipe else ""),
        "recipe": chosen or "params.yaml train_lora",
        "recipe_chosen_on": "validation (the task's LoRA search)" if chosen else "not searched",
        "runs": runs,
    }
    result["test_paired"] = paired(args.repo, args.task, runs)
    out = REPO / "bench" / "results" / f"lora-dropout-{args.task}{'-params' if not chosen else ''}.json"
    write_json(out, result)
    for run in runs:
        print(f"dropout {run['dropout']}: validation {run['validation']} test {run['test'].get('f1')}")
    for key, value in result["test_paired"].items():
        if key.endswith((".difference", ".ci_low", ".ci_high", ".verdict")):
            print(f"test {key}: {value}")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
