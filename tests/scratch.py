"""A scratch DVC project for fault tests: a copy of the repo with one tiny NER task `t`
(tests/tiny_ner.py, fp32) and without the export stages, reproduced and committed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from e2e import run
from tiny import copy_repo, git
from tiny_ner import tiny_task

UNSTABLE = re.compile(r"runtime|per_second|seconds|memory")
"""Metric keys that measure the machine, not the result (timings, memory)."""


def scratch_repo(root: Path, model_dir: Path) -> Path:
    repo = copy_repo(root / "repo")
    task = tiny_task(root / "src", model_dir)
    for section in ("train_full", "train_lora", "evaluate"):
        task[section] = {**task[section], "precision": "fp32"}
    task.setdefault("search", {"enabled": False})
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    for name in [name for name in pipeline["stages"] if name.startswith("export")]:
        del pipeline["stages"][name]  # ONNX export: slow, and no fault of its own to test here
    pipeline.pop("artifacts", None)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    (repo / "params.yaml").write_text(
        yaml.safe_dump({"pipeline": {"tasks": {"t": "ner"}}, "tasks": {"t": task}}, sort_keys=False)
    )
    run(repo, "dvc", "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "reproduced")
    return repo


def stable(value: Any) -> Any:
    """A metrics document without the keys that vary from run to run on one machine."""
    if isinstance(value, dict):
        return {key: stable(item) for key, item in value.items() if not UNSTABLE.search(key)}
    return value


def metrics_snapshot(repo: Path) -> dict[str, Any]:
    """Every metrics JSON file of the project, without timings."""
    return {
        path.relative_to(repo).as_posix(): stable(json.loads(path.read_text()))
        for path in sorted((repo / "metrics").rglob("*.json"))
    }


def debris(repo: Path) -> list[str]:
    """Temporaries of atomic writes anywhere in the project (outside .git and .dvc)."""
    return sorted(
        path.relative_to(repo).as_posix()
        for path in repo.rglob(".*.tmp-*")
        if path.relative_to(repo).parts[0] not in (".git", ".dvc")
    )
