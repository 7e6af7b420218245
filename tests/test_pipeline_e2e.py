"""`dvc repro` of a tiny profile (every task family) in a temporary copy of the repo."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from e2e import EXPORTED_FAMILIES, dry_run_stages, run, set_param
from tiny import git

TESTS = Path(__file__).resolve().parent


def test_every_task_produces_metrics_reports_and_plots(reproduced: tuple[Path, dict]) -> None:
    repo, profile = reproduced
    for task in profile["pipeline"]["tasks"]:
        for method in ("baseline", "full", "lora"):
            metrics = json.loads((repo / "metrics" / task / f"{method}.json").read_text())
            assert metrics, f"{task}/{method}.json is empty"
            cost = json.loads((repo / "metrics" / task / f"{method}-cost.json").read_text())
            assert cost["total_params"] > 0
        lora_cost = json.loads((repo / "metrics" / task / "lora-cost.json").read_text())
        full_cost = json.loads((repo / "metrics" / task / "full-cost.json").read_text())
        assert lora_cost["trainable_params"] < full_cost["trainable_params"]
        assert lora_cost["shipped_bytes"] < full_cost["shipped_bytes"], "a LoRA out holds only the adapter"
        assert (repo / "reports" / task / "summary.md").read_text().strip()
        assert list((repo / "metrics" / task / "confusion").glob("*.csv"))
        assert (repo / "metrics" / task / "train-full" / "plots").is_dir()
        exported = json.loads((repo / "metrics" / task / "export-lora.json").read_text())
        if profile["tasks"][task]["type"] not in EXPORTED_FAMILIES:
            assert exported == {"enabled": False}
            continue
        assert exported["parity"]["onnx"]["mismatches"] == 0 and "latency" in exported
        card = (repo / "models" / task / "export-lora" / "README.md").read_text()
        assert card.startswith("---") and "## Test results" in card and "No test metrics found" not in card
        assert (repo / "models" / task / "export-lora" / "onnx" / "model.onnx").exists()
    comparison = (repo / "reports" / "comparison" / "comparison.md").read_text()
    for task in profile["pipeline"]["tasks"]:
        assert f"## {task} (" in comparison and f"{task}-confusion-lora.svg" in comparison
    assert dry_run_stages(repo) == set()


def test_ner_metrics_are_computed_from_predictions(reproduced: tuple[Path, dict]) -> None:
    import pandas as pd

    from reprotune.tasks.ner.metrics import entity_scores

    repo, _ = reproduced
    predictions = pd.read_parquet(repo / "data" / "tiny_ner" / "predictions" / "full.parquet")
    recomputed = entity_scores([list(g) for g in predictions["gold"]], [list(p) for p in predictions["pred"]])
    stored = json.loads((repo / "metrics" / "tiny_ner" / "full.json").read_text())
    assert {key: stored[key] for key in recomputed} == json.loads(json.dumps(recomputed))
    for key in ("f1", "precision", "recall"):
        assert stored[f"{key}_ci_low"] <= stored[key] <= stored[f"{key}_ci_high"]
    assert stored["eval_precision"] == "fp32" and stored["eval_device"] == "cpu"


def test_lora_param_change_reruns_only_lora_stages(reproduced: tuple[Path, dict]) -> None:
    repo, _ = reproduced
    set_param(repo, "tasks.tiny_ner.train_lora.r", 2)
    try:
        # the LoRA search reads train_lora as its base recipe (off here: it rewrites the same note)
        assert dry_run_stages(repo) == {"search-lora@tiny_ner", "train-lora@tiny_ner"}
    finally:
        git(repo, "checkout", "params.yaml")


def test_evaluate_param_change_retrains_nothing(reproduced: tuple[Path, dict]) -> None:
    repo, _ = reproduced
    set_param(repo, "tasks.tiny_ner.evaluate.batch_size", 3)
    try:
        stages = dry_run_stages(repo)
    finally:
        git(repo, "checkout", "params.yaml")
    assert stages == {"evaluate-full@tiny_ner", "evaluate-lora@tiny_ner", "baseline@tiny_ner"}


def test_metrics_diff_compares_full_and_lora(reproduced: tuple[Path, dict]) -> None:
    repo, _ = reproduced
    shown = run(repo, "dvc", "metrics", "show", "--json").stdout
    assert "metrics/tiny_ner/full.json" in shown and "metrics/tiny_ner/lora.json" in shown


QUALITY_FILES = ("baseline.json", "full.json", "lora.json")
REFERENCE = TESTS / "reference"
TOLERANCE = 1e-4
"""Absolute for metrics up to 1, relative above (a perplexity of 29,266 moves in its 4th
decimal when a summation order changes)."""


def quality_metrics(repo: Path, tasks: list[str]) -> dict[str, bytes]:
    return {
        f"metrics/{task}/{name}": (repo / "metrics" / task / name).read_bytes()
        for task in tasks
        for name in QUALITY_FILES
    }


def test_removed_output_is_restored_from_cache_without_retraining(reproduced: tuple[Path, dict]) -> None:
    repo, _ = reproduced
    curves = repo / "metrics" / "tiny_ner" / "train-full" / "plots"
    shutil.rmtree(repo / "models" / "tiny_ner" / "full")
    shutil.rmtree(curves)
    shutil.rmtree(repo / "metrics" / "tiny_ner" / "confusion")
    out = run(repo, "dvc", "repro").stdout
    assert "Running stage 'train-full@tiny_ner'" not in out
    assert "Running stage 'error-analysis@tiny_ner'" not in out
    assert "'train-full@tiny_ner' is cached" in out
    assert (repo / "models" / "tiny_ner" / "full" / "train_info.json").exists()
    assert list(curves.rglob("loss.tsv")) and list((repo / "metrics" / "tiny_ner" / "confusion").glob("*.csv"))


def test_dvc_plots_show_draws_only_the_curated_set(reproduced: tuple[Path, dict]) -> None:
    """No stage plot (dvclive's every curve, the confusion matrices) joins dvc.yaml's top-level
    set by default, and a curve is still drawn on request by its path."""
    import yaml

    repo, _ = reproduced
    curated = {
        next(iter(e)) if isinstance(e, dict) else e for e in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]
    }
    shown = json.loads(run(repo, "dvc", "plots", "show", "--json").stdout)["data"]
    assert set(shown) <= curated, set(shown) - curated
    loss = "metrics/tiny_ner/train-full/plots/metrics/loss.tsv"
    on_request = json.loads(run(repo, "dvc", "plots", "show", "--json", loss).stdout)["data"]
    assert any(loss in name for name in on_request), list(on_request)


def test_same_params_and_seed_give_bit_identical_metrics(reproduced: tuple[Path, dict]) -> None:
    repo, profile = reproduced
    before = quality_metrics(repo, ["tiny_ner"])
    # Train both methods again (their inputs are cached), then everything downstream of them.
    out = run(repo, "dvc", "repro", "-f", "-s", "train-full@tiny_ner", "train-lora@tiny_ner").stdout
    assert "Running stage 'train-full@tiny_ner'" in out and "Running stage 'train-lora@tiny_ner'" in out
    run(repo, "dvc", "repro", "error-analysis@tiny_ner")
    assert quality_metrics(repo, ["tiny_ner"]) == before


def drifted(old: object, new: object) -> bool:
    """Numbers within TOLERANCE agree; anything else (a precision name, a flag) must be equal."""
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        return abs(float(new) - float(old)) > TOLERANCE * max(1.0, abs(float(old)))
    return old != new


def test_metrics_match_the_committed_reference(reproduced: tuple[Path, dict]) -> None:
    """CI's reproduction check: this run against tests/reference through `dvc metrics diff`.
    Regenerate the reference with REPROTUNE_UPDATE_REFERENCE=1 after an intended change."""
    repo, profile = reproduced
    produced = quality_metrics(repo, profile["pipeline"]["tasks"])
    if os.environ.get("REPROTUNE_UPDATE_REFERENCE") == "1":
        for name, content in produced.items():
            (REFERENCE / name).parent.mkdir(parents=True, exist_ok=True)
            (REFERENCE / name).write_bytes(content)
        pytest.skip("reference metrics rewritten")
    missing = [name for name in produced if not (REFERENCE / name).exists()]
    assert not missing, f"no reference for {missing}; run REPROTUNE_UPDATE_REFERENCE=1 python -m pytest {__file__}"
    for name in produced:
        (repo / name).write_bytes((REFERENCE / name).read_bytes())
    git(repo, "add", "-f", *produced)
    git(repo, "commit", "-qm", "reference metrics")
    try:
        for name, content in produced.items():
            (repo / name).write_bytes(content)
        diff = json.loads(
            run(repo, "dvc", "metrics", "diff", "HEAD", "--json", "--all", "--targets", *produced).stdout or "{}"
        )
    finally:
        git(repo, "reset", "-q", "HEAD~1")
    drift = [
        f"{path} {key}: reference {change.get('old')} -> now {change.get('new')}"
        for path, changes in diff.items()
        for key, change in changes.items()
        if drifted(change.get("old"), change.get("new"))
    ]
    assert not drift, "metrics drifted beyond tolerance {:g}:\n{}".format(TOLERANCE, "\n".join(drift))


def test_remote_cache_restores_a_fresh_clone_without_rerunning(reproduced: tuple[Path, dict], tmp_path: Path) -> None:
    repo, profile = reproduced
    run(repo, "dvc", "repro")  # bring every stage up to date after the forced reruns above
    remote = tmp_path / "remote"
    run(repo, "dvc", "remote", "add", "-f", "-d", "team", str(remote))
    run(repo, "dvc", "push")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "results and remote")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    run(clone, "dvc", "pull")
    assert (clone / "models" / "tiny_ner" / "lora" / "adapter_model.safetensors").exists()
    assert (clone / "data" / "tiny_ner" / "tokenized" / "meta.json").exists()
    assert dry_run_stages(clone) == set()
    ran = re.findall(r"Running stage '([^']+)'", run(clone, "dvc", "repro").stdout)
    assert all(name.startswith("fingerprint@") for name in ran), ran


def test_predict_command_reads_stdin_and_loads_base_plus_adapter(reproduced: tuple[Path, dict]) -> None:
    repo, _ = reproduced
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "reprotune-predict"),
            "tiny_ner",
            "--method",
            "lora",
            "--input",
            "-",
            "--html",
            "out.html",
        ],
        cwd=repo,
        env=env,
        input='Obama visited Paris\n{"text": "Bob lives in Rome"}\n',
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["text"] for line in lines] == ["Obama visited Paris", "Bob lives in Rome"]
    for line in lines:
        for entity in line["entities"]:
            assert line["text"][entity["start"] : entity["end"]] == entity["text"] and 0 <= entity["score"] <= 1
    assert (repo / "out.html").read_text().count("<p>") == 2
