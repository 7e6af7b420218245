"""Benchmark: long inputs, strided windows against truncation (`tokenize.windows`).

Runs the params.yaml `bbcnews` task (BBC News articles, ~480 tokens on average, at
max_length 128) twice through the stages, full fine-tuning only, in a scratch directory:
once as it stands (truncation: the first 128 tokens of each article), once with
`tokenize.windows: {stride, aggregate}` (every window trained on, a document's window
logits aggregated). The windowed model is also scored with the other aggregate, with no
retraining. Results go to bench/results/long-inputs-<task>.json.

    python bench/long_inputs.py                          # bbcnews, 2 epochs, stride 32, mean
    python bench/long_inputs.py --max-samples 200 50 100 --epochs 1   # a quicker run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
KEYS = ("accuracy", "macro_f1", "mcc")


def stage(scratch: Path, module: str, *args: str) -> float:
    """One stage as dvc.yaml runs it (`python -m stages.<module>`), in `scratch`; its seconds."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", f"stages.{module}", *args], cwd=scratch, env=env, check=True)
    return time.perf_counter() - started


def other_aggregate(scratch: Path, name: str, how: str) -> dict[str, Any]:
    """The trained windowed model's test metrics with `how` as the aggregate (same windows, same model)."""
    sys.path.insert(0, str(REPO))
    cwd = Path.cwd()
    os.chdir(scratch)
    try:
        from reprotune import tasks
        from reprotune.core import paths
        from reprotune.core.arrow import load_dataset_dir, read_meta
        from reprotune.modeling.tokenizer import load_tokenizer

        task = tasks.load_task(name, "evaluate-full")
        family = tasks.family(task.type)
        meta = tasks.parse_meta(task.type, read_meta(paths.tokenized_dir(name)))
        meta = meta.model_copy(update={"windows": meta.windows.model_copy(update={"aggregate": how})})
        model = family.build_model(task, meta, source=str(paths.model_dir(name, "full")))
        features = load_dataset_dir(paths.tokenized_dir(name), "tokenize")["test"]
        raw = load_dataset_dir(paths.raw_dir(name), "download")["test"]
        table = family.predict(model, load_tokenizer(task.model), raw, features, meta, task)
        return tasks.metrics(task.type).score(table, meta, task)
    finally:
        os.chdir(cwd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="bbcnews", help="a classification task of params.yaml")
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--aggregate", default="mean", choices=["mean", "max"])
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument(
        "--max-samples",
        type=int,
        nargs=3,
        metavar=("TRAIN", "VALIDATION", "TEST"),
        help="override download.max_samples (default: the task's own)",
    )
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it")
    args = parser.parse_args()

    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    base = params["tasks"][args.task]
    if base["type"] != "classification":
        sys.exit(f"error: {args.task} is a {base['type']} task; this benchmark needs a classification task")
    base["train_full"]["epochs"] = args.epochs
    if args.max_samples:
        base["download"]["max_samples"] = dict(zip(("train", "validation", "test"), args.max_samples))
    windows = {"stride": args.stride, "aggregate": args.aggregate}
    runs = {"truncation": args.task, "windows": f"{args.task}_windows"}
    sections = {
        runs["truncation"]: base,
        runs["windows"]: {**base, "tokenize": {**base["tokenize"], "windows": windows}},
    }
    root = args.keep or Path(tempfile.mkdtemp(prefix="reprotune-long-inputs-"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(
        yaml.safe_dump(
            {"pipeline": {"tasks": {name: "classification" for name in sections}}, "tasks": sections}, sort_keys=False
        ),
        encoding="utf-8",
    )

    result: dict[str, Any] = {
        "task": args.task,
        "max_length": base["tokenize"]["max_length"],
        "windows": windows,
        "epochs": args.epochs,
        "max_samples": base["download"].get("max_samples"),
        "command": "python bench/long_inputs.py " + " ".join(sys.argv[1:]),
        "runs": {},
    }
    for label, name in runs.items():
        seconds = {
            key: stage(root, module, *extra)
            for key, module, extra in (
                ("download", "download", (name,)),
                ("tokenize", "tokenize_align", (name,)),
                ("train", "train", (name, "full")),
                ("evaluate", "evaluate", (name, "full")),
            )
        }
        metrics = json.loads((root / "metrics" / name / "full.json").read_text(encoding="utf-8"))
        report = json.loads((root / "metrics" / name / "tokenize.json").read_text(encoding="utf-8"))
        cost = json.loads((root / "metrics" / name / "full-cost.json").read_text(encoding="utf-8"))
        result["runs"][label] = {
            **{key: metrics[key] for key in KEYS},
            **{f"{key}_ci": [metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")] for key in KEYS[:1]},
            "tokenize": {
                split: {
                    key: report[split][key]
                    for key in ("examples", "truncated", "tokens_mean", "windows", "examples_windowed")
                    if key in report[split]
                }
                for split in ("train", "validation", "test")
            },
            "train_steps": cost.get("train_steps"),
            "train_seconds": cost.get("train_seconds"),
            "eval_seconds": cost.get("eval_seconds"),
            "stage_seconds": {k: round(v, 1) for k, v in seconds.items()},
        }
    other = "max" if args.aggregate == "mean" else "mean"
    scores = other_aggregate(root, runs["windows"], other)
    result["runs"][f"windows_{other}_same_model"] = {key: scores[key] for key in KEYS}

    out = REPO / "bench" / "results" / f"long-inputs-{args.task}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"\n== {args.task}: max_length {result['max_length']}, windows {windows}, {args.epochs} epochs")
    for label, run in result["runs"].items():
        print(f"{label:26s} " + ", ".join(f"{key} {run[key]:.4f}" for key in KEYS))
    print(f"results: {out}; scratch: {root}")


if __name__ == "__main__":
    main()
