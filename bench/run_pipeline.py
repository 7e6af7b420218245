"""Benchmark: `dvc repro` of chosen params.yaml tasks in a scratch copy of the repo,
then a table of baseline / full / LoRA metrics and costs (also saved as JSON).

    python bench/run_pipeline.py wikiann_local            # the NER benchmark
    python bench/run_pipeline.py cola_local --keep /tmp/b # keep the scratch repo
    python bench/run_pipeline.py squad_local --no-export  # quality only: skip the export stages

Relative data paths in `download` are made absolute, so `../shared/data/...` works
from the copy. Results go to bench/results/<task>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

from reprotune.testing import copy_repo, git  # noqa: E402

METHODS = ("baseline", "full", "lora")
COST_KEYS = ("train_seconds", "train_samples_per_second", "trainable_params", "peak_memory_mb", "shipped_bytes")


def absolutise(node: object) -> object:
    if isinstance(node, dict):
        return {key: absolutise(value) for key, value in node.items()}
    if isinstance(node, list):
        return [absolutise(value) for value in node]
    if isinstance(node, str) and node.startswith(("./", "../")):
        return str((REPO / node).resolve())
    return node


def scalar_metrics(metrics: dict) -> dict[str, float]:
    return {key: value for key, value in metrics.items() if isinstance(value, (int, float)) and key != "sentences"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="+", help="task names from params.yaml")
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it")
    parser.add_argument("--collect", type=Path, help="only print/save the results of a kept scratch repo")
    parser.add_argument("--no-export", action="store_true", help="export.enabled: false for these tasks")
    args = parser.parse_args()
    if args.collect:
        collect(args.collect, args.tasks, None)
        return

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    unknown = [task for task in args.tasks if task not in params["tasks"]]
    if unknown:
        sys.exit(f"error: unknown task(s) {unknown}; params.yaml defines {sorted(params['tasks'])}")
    root = args.keep or Path(tempfile.mkdtemp(prefix="reprotune-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    repo = copy_repo(root / "repo")
    params["pipeline"]["tasks"] = {task: params["tasks"][task]["type"] for task in args.tasks}
    params["tasks"] = {name: absolutise(section) for name, section in params["tasks"].items()}
    if args.no_export:
        for task in args.tasks:
            params["tasks"][task]["export"] = {**(params["tasks"][task].get("export") or {}), "enabled": False}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "commit", "-qam", "bench profile")

    started = time.perf_counter()
    subprocess.run(["dvc", "repro"], cwd=repo, check=True)
    collect(repo, args.tasks, time.perf_counter() - started)


def collect(repo: Path, tasks: list[str], wall: float | None) -> None:
    """Print and save the metrics of a finished scratch repo."""
    results_dir = REPO / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        result = {"task": task, "dvc_repro_seconds": round(wall, 1) if wall else None, "methods": {}}
        print(f"\n== {task}" + (f" (dvc repro {wall:.0f}s for all tasks)" if wall else ""))
        for method in METHODS:
            metrics = json.loads((repo / "metrics" / task / f"{method}.json").read_text())
            cost = json.loads((repo / "metrics" / task / f"{method}-cost.json").read_text())
            result["methods"][method] = {"metrics": metrics, "cost": cost}
            shown = ", ".join(f"{k} {v:.4f}" for k, v in scalar_metrics(metrics).items())
            costs = ", ".join(f"{k} {cost[k]}" for k in COST_KEYS if k in cost)
            print(f"{method:9s} {shown}\n{'':9s} {costs}")
        (results_dir / f"{task}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"\nresults: {results_dir}; scratch repo: {repo}")


if __name__ == "__main__":
    main()
