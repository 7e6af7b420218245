"""Benchmark: LoRA settings against full fine-tuning, one `dvc exp run` per setting, in a
scratch repo that bench/run_pipeline.py kept (so baseline and full are trained once):

    python bench/run_pipeline.py wikiann_local cola_local squad_local --no-export --keep /tmp/lora
    python bench/lora_search.py /tmp/lora/repo wikiann_local all-linear all-linear-r16
    python bench/lora_search.py /tmp/lora/repo cola_local all-linear --metric mcc
    python bench/lora_search.py /tmp/lora/repo wikiann_local defaults nogroup --seeds 1 2 3

Each named setting overrides `train_lora` keys (SETTINGS below; `defaults` overrides nothing).
Only train-lora, evaluate-lora and what follows them rerun. For each setting it records the
LoRA headline metric with its bootstrap interval, LoRA - full with its paired interval and
p-value (metrics/T/significance.json), trainable parameters and training seconds, merged by
setting into bench/results/lora-search-<task>.json, so a search stopped halfway keeps what ran.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ALL_LINEAR = "[query,key,value,dense]"
"""BERT-style encoders' Linear layers: attention q/k/v, attention output, intermediate and output."""

SETTINGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "all-linear": {"target_modules": ALL_LINEAR},
    "all-linear-r16": {"target_modules": ALL_LINEAR, "r": 16, "alpha": 32},
    "all-linear-lr2e-3": {"target_modules": ALL_LINEAR, "learning_rate": 2e-3},
    "all-linear-lr5e-4": {"target_modules": ALL_LINEAR, "learning_rate": 5e-4},
    "all-linear-lr3e-3": {"target_modules": ALL_LINEAR, "learning_rate": 3e-3},
    "all-linear-lr5e-3": {"target_modules": ALL_LINEAR, "learning_rate": 5e-3},
    "all-linear-3ep": {"target_modules": ALL_LINEAR, "epochs": 3},
    "all-linear-lr3e-3-3ep": {"target_modules": ALL_LINEAR, "learning_rate": 3e-3, "epochs": 3},
    "all-linear-2ep": {"target_modules": ALL_LINEAR, "epochs": 2},
    "all-linear-5ep": {"target_modules": ALL_LINEAR, "epochs": 5},
    "all-linear-r16-2ep": {"target_modules": ALL_LINEAR, "r": 16, "alpha": 32, "epochs": 2},
    "all-linear-lr2e-3-2ep": {"target_modules": ALL_LINEAR, "learning_rate": 2e-3, "epochs": 2},
    "all-linear-nogroup": {"target_modules": ALL_LINEAR, "group_by_length": False},
    "nogroup": {"group_by_length": False},
    "lr5e-4": {"learning_rate": 5e-4},
    "lr1e-3": {"learning_rate": 1e-3},
    "lr2e-3": {"learning_rate": 2e-3},
}


def read(repo: Path, relative: str) -> dict[str, Any]:
    return json.loads((repo / relative).read_text())


def run_setting(repo: Path, task: str, name: str, metric: str, seed: int | None, upto: bool) -> dict[str, Any]:
    subprocess.run(["git", "checkout", "-q", "--", "params.yaml"], cwd=repo, check=True)
    changes = SETTINGS[name] | ({} if seed is None else {"seed": seed})
    overrides = [f"++tasks.{task}.train_lora.{key}={value}" for key, value in changes.items()]  # set or add
    label = name if seed is None else f"{name}-seed{seed}"
    command = ["dvc", "exp", "run", "-n", f"{task}-{label}".replace("_", "-")]
    for override in overrides:
        command += ["-S", override]
    if upto:
        command.append(f"error-analysis@{task}")  # what the comparison needs; no export, no report
    started = time.perf_counter()
    subprocess.run(command, cwd=repo, check=True)
    wall = time.perf_counter() - started
    lora, full = read(repo, f"metrics/{task}/lora.json"), read(repo, f"metrics/{task}/full.json")
    cost = read(repo, f"metrics/{task}/lora-cost.json")
    significance = read(repo, f"metrics/{task}/significance.json")
    diff = f"lora_minus_full.{metric}"
    return {
        "overrides": changes,
        "metric": metric,
        "lora": lora[metric],
        "lora_metrics": {key: value for key, value in lora.items() if isinstance(value, (int, float))},
        "lora_ci": [lora.get(f"{metric}_ci_low"), lora.get(f"{metric}_ci_high")],
        "full": full[metric],
        "lora_minus_full": significance.get(f"{diff}.difference"),
        "lora_minus_full_ci": [significance.get(f"{diff}.ci_low"), significance.get(f"{diff}.ci_high")],
        "p_value": significance.get(f"{diff}.p_value"),
        "trainable_params": cost.get("trainable_params"),
        "train_seconds": cost.get("train_seconds"),
        "train_precision": cost.get("train_precision"),
        "exp_run_seconds": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo", type=Path, help="the scratch repo bench/run_pipeline.py --keep made (DIR/repo)")
    parser.add_argument("task")
    parser.add_argument("settings", nargs="+", choices=sorted(SETTINGS))
    parser.add_argument("--metric", default="f1", help="the headline metric to compare (f1, mcc, accuracy, ...)")
    parser.add_argument("--seeds", type=int, nargs="+", help="run each setting with each of these train_lora seeds")
    parser.add_argument(
        "--upto-error-analysis", action="store_true", help="run only the stages up to error-analysis@TASK"
    )
    args = parser.parse_args()
    out = REPO / "bench" / "results" / f"lora-search-{args.task}.json"
    results = json.loads(out.read_text()) if out.exists() else {"task": args.task, "settings": {}}
    runs = [(name, seed) for name in args.settings for seed in (args.seeds or [None])]
    for name, seed in runs:
        row = run_setting(args.repo, args.task, name, args.metric, seed, args.upto_error_analysis)
        name = name if seed is None else f"{name}-seed{seed}"
        results["settings"][name] = row
        out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        gap = row["lora_minus_full"]
        print(
            f"{args.task} {name}: LoRA {args.metric} {row['lora']:.4f} vs full {row['full']:.4f}, "
            f"LoRA - full {gap:+.4f} [{row['lora_minus_full_ci'][0]:+.4f}, {row['lora_minus_full_ci'][1]:+.4f}] "
            f"p={row['p_value']}, {row['train_seconds']} s training",
            flush=True,
        )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
