"""Benchmark: the SQuAD 2.0 no-answer margin chosen on validation (issue #28), before and after.

    python bench/qa_null.py                                  # the README row (slow on a CPU)
    python bench/qa_null.py --train 300 --test 300 --name qa-null-small   # a quick look

Builds a SQuAD-2.0-format set from the shared SQuAD v1.1 files: a share of the questions
(`--unanswerable`, default 0.45) is re-paired with a paragraph of another article and loses its
answers, so it cannot be answered from its new context. Train (and the validation carved from
it) come from the train subset, test from the dev set; the files are written to the scratch
directory, never to the repository. The task is `squad_local` of params.yaml with these files,
`version_2_with_negative: true`, search and export off. The stages run in the scratch directory
(download, tokenize, train full and LoRA, evaluate baseline/full/LoRA) with
`evaluate.null_threshold: auto` (after), then evaluate again with a fixed margin of 0 (before).
Results: bench/results/<name>.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "squad-v1.1"
TASK = "qa_null"
METHODS = ("baseline", "full", "lora")


def make_unanswerable(squad: dict[str, Any], share: float, seed: int) -> tuple[dict[str, Any], int]:
    """A copy of SQuAD v1.1 JSON where `share` of the questions (drawn with `seed`) moved to a
    paragraph of another article, without answers: unanswerable where they now stand."""
    rng = random.Random(seed)
    articles = [
        {"title": article.get("title", f"article-{a}"), "paragraphs": [dict(p, qas=[]) for p in article["paragraphs"]]}
        for a, article in enumerate(squad["data"])
    ]
    moved = 0
    for a, article in enumerate(squad["data"]):
        for p, paragraph in enumerate(article["paragraphs"]):
            for qa in paragraph["qas"]:
                if len(articles) > 1 and rng.random() < share:
                    other = rng.choice([i for i in range(len(articles)) if i != a])
                    target = rng.choice(articles[other]["paragraphs"])
                    target["qas"].append(
                        {"id": qa["id"], "question": qa["question"], "answers": [], "is_impossible": True}
                    )
                    moved += 1
                else:
                    articles[a]["paragraphs"][p]["qas"].append(dict(qa, is_impossible=False))
    return {"version": "v2.0", "data": articles}, moved


def build_data(out: Path, share: float, seed: int) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    facts: dict[str, Any] = {}
    for split, name in (("train", "train-v1.1-subset.json"), ("test", "dev-v1.1.json")):
        squad = json.loads((DATA / name).read_text(encoding="utf-8"))
        # Titles are lost in the train subset: give each paragraph its own article there.
        if split == "train":
            squad = {
                "data": [
                    {"title": f"train-{i}", "paragraphs": [paragraph]}
                    for i, paragraph in enumerate(p for article in squad["data"] for p in article["paragraphs"])
                ]
            }
        data, moved = make_unanswerable(squad, share, seed)
        (out / f"{split}-v2.json").write_text(json.dumps(data), encoding="utf-8")
        facts[split] = {"file": name, "unanswerable_made": moved}
    return facts


def task_section(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    section = json.loads(json.dumps(params["tasks"]["squad_local"]))
    section["download"] |= {
        "files": {"train": str(out / "train-v2.json"), "test": str(out / "test-v2.json")},
        "version_2_with_negative": True,
        "split_by": "context",
        "max_samples": {"train": args.train, "validation": args.validation, "test": args.test},
    }
    section["search"] = {"enabled": False}
    section["export"] = {"enabled": False}
    section["evaluate"] = {**section.get("evaluate", {}), "null_threshold": "auto"}
    for method in ("train_full", "train_lora"):
        section[method] = {**section[method], "epochs": args.epochs}
    return section


def write_params(root: Path, section: dict[str, Any]) -> None:
    params = {"pipeline": {"tasks": {TASK: "qa"}}, "tasks": {TASK: section}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def stage(root: Path, module: str, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-m", f"stages.{module}", TASK, *args], cwd=root, env=env, check=True)


def metrics(root: Path, method: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((root / "metrics" / TASK / f"{method}.json").read_text(encoding="utf-8"))
    return loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unanswerable", type=float, default=0.45, help="share of questions re-paired")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=2400, help="train questions (max_samples)")
    parser.add_argument("--validation", type=int, default=250)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--name", default="qa-null", help="bench/results/<name>.json")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="reprotune-qa-null-"))
    root.mkdir(parents=True, exist_ok=True)
    facts = build_data(root / "source", args.unanswerable, args.seed)
    section = task_section(root / "source", args)
    write_params(root, section)
    started = time.perf_counter()
    stage(root, "download")
    stage(root, "tokenize_align")
    for method in ("full", "lora"):
        stage(root, "search", method)  # search.enabled false: records that train uses its section as written
        stage(root, "train", method)
    after = {}
    for method in METHODS:
        stage(root, "evaluate", method)
        after[method] = metrics(root, method)
    write_params(root, section | {"evaluate": {**section["evaluate"], "null_threshold": 0.0}})
    before = {}
    for method in METHODS:
        stage(root, "evaluate", method)
        before[method] = metrics(root, method)
    seconds = time.perf_counter() - started

    report = json.loads((root / "data" / TASK / "raw" / "download_report.json").read_text(encoding="utf-8"))
    result = {
        "command": "python bench/qa_null.py " + " ".join(sys.argv[1:]),
        "data": facts | {"examples": report.get("examples")},
        "unanswerable_share": args.unanswerable,
        "epochs": args.epochs,
        "seconds": round(seconds, 1),
        "before_margin_0": before,
        "after_validation_margin": after,
    }
    out = REPO / "bench" / "results" / f"{args.name}.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print("| method | margin | EM | F1 [95% CI] | HasAns F1 | NoAns acc | answered |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for method in METHODS:
        for row in (before[method], after[method]):
            margin = "0" if row["null_threshold_source"] == "params" else f"{row['null_threshold']:.3f} (validation)"
            interval = f"[{row.get('f1_ci_low', float('nan')):.3f}, {row.get('f1_ci_high', float('nan')):.3f}]"
            print(
                f"| {method} | {margin} | {row['exact_match']:.3f} | {row['f1']:.3f} {interval} "
                f"| {row['has_answer_f1']:.3f} | {row['no_answer_accuracy']:.3f} | {row['answered']:.3f} |"
            )
    print(f"\n{seconds:.0f}s; results: {out}; scratch: {root}")


if __name__ == "__main__":
    main()
