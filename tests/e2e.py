"""The tiny end-to-end profile: one tiny task per family, reproduced once per session in a
temporary copy of the repo, with bytecode writing on (as on users' machines and CI)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

TESTS = Path(__file__).resolve().parent
ALWAYS_CHANGED = "always changed"


EXPORTED_FAMILIES = ("ner",)
"""Families whose export stages the tiny profile runs; the others are tests/test_export.py's."""


def tiny_profile(root: Path, model_dir: Path) -> dict:
    """params.yaml with one tiny task per family, from every tests/tiny_<family>.py, in fp32:
    `precision: auto` means bf16 on CPUs that have it, and tests/reference must hold on any CPU
    (bf16 determinism is tested in tests/test_precision.py)."""
    tasks = {}
    for module_file in sorted(TESTS.glob("tiny_*.py")):
        family = module_file.stem.removeprefix("tiny_")
        module = importlib.import_module(module_file.stem)
        task = module.tiny_task(root / "tiny-data" / family, model_dir)
        for section in ("train_full", "train_lora", "evaluate"):
            task[section] = {**task[section], "precision": "fp32"}
        task.setdefault("search", {"enabled": False})  # tests/test_search.py runs searches
        # Exported end to end for NER; the ONNX parity of classification and QA is tested in
        # tests/test_export.py, and masked-LM is served from checkpoints only.
        task["export"] = {"latency_examples": 8, "batch_size": 8, "enabled": family in EXPORTED_FAMILIES}
        tasks[f"tiny_{family}"] = task
    return {"pipeline": {"tasks": {name: task["type"] for name, task in tasks.items()}}, "tasks": tasks}


def stage_env(audit_dir: Path | None = None) -> dict[str, str]:
    """The environment stages run in: the Hub off, and Python writing bytecode as it does
    by default (these machines set PYTHONDONTWRITEBYTECODE; users' machines do not)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if audit_dir is not None:
        env["REPROTUNE_AUDIT_DIR"] = str(audit_dir)
    return env


def run(repo: Path, *args: str, timeout: int = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        list(args), cwd=repo, env=env or stage_env(), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def dry_run_stages(repo: Path) -> set[str]:
    """Stages that `dvc status` reports as changed (their own deps or params); the
    fingerprint stages, which always run, only when their deps changed."""
    status = json.loads(run(repo, "dvc", "status", "--json").stdout or "{}")
    return {name for name, changes in status.items() if changes != [ALWAYS_CHANGED]}


def set_param(repo: Path, dotted: str, value: object) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    node = params
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
