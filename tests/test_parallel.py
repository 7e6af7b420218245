"""Parallel experiments: two queued experiments running at once (`dvc queue start -j 2`) on the
tiny profile end with the metrics each has when run alone, and share nothing on the way: each
runs in its own DVC temporary workspace (its own checkpoints, atomic temporaries and
.dvc/tmp fingerprint cache), and the main workspace is left clean."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e import run, stage_env
from scratch import debris, scratch_repo, stable

RATES = {"high": 3e-3, "low": 3e-4}
COMPARED = (
    "metrics/t/train-full/metrics.json",
    "metrics/t/full.json",
    "metrics/t/error_summary.json",
    "metrics/t/significance.json",
)


def queue(repo: Path, suffix: str) -> None:
    for name, rate in RATES.items():
        run(
            repo,
            "dvc",
            "exp",
            "run",
            "--queue",
            "-n",
            f"{name}-{suffix}",
            "-S",
            f"tasks.t.train_full.learning_rate={rate}",
        )


def drain(repo: Path, suffix: str, jobs: int, timeout: float = 600) -> tuple[int, set[Path]]:
    """Start `jobs` workers and wait until the experiments `*-suffix` succeeded; the most
    workspaces seen at once and every checkpoint folder seen."""
    # The workers it starts inherit its stdout and stderr: no pipes, or waiting for it waits for them.
    subprocess.run(
        ["dvc", "queue", "start", "-j", str(jobs)],
        cwd=repo,
        env=stage_env(),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workspaces = repo / ".dvc" / "tmp" / "exps"
    names = {f"{name}-{suffix}" for name in RATES}
    most, checkpoints = 0, set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        most = max(most, len(list(workspaces.glob("tmp*/dvc.yaml"))))
        checkpoints |= set(repo.glob("models/t/.checkpoints-*")) | set(workspaces.glob("tmp*/models/t/.checkpoints-*"))
        rows = {
            fields[1]: fields[-1]
            for fields in map(str.split, run(repo, "dvc", "queue", "status").stdout.splitlines())
            if len(fields) >= 4 and fields[1] in names
        }
        failed = [name for name, state in rows.items() if state == "Failed"]
        assert not failed, run(repo, "dvc", "queue", "logs", failed[0]).stdout[-3000:]
        if len(rows) == len(names) and set(rows.values()) == {"Success"}:
            return most, checkpoints
        time.sleep(0.2)
    raise AssertionError("the queued experiments did not finish in time")


def experiment_metrics(repo: Path) -> dict[str, dict]:
    """Each named experiment's metrics files (timings left out), from `dvc exp show --json`."""
    found = {}
    for commit in json.loads(run(repo, "dvc", "exp", "show", "--json").stdout):
        for experiment in commit.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                metrics = (rev.get("data") or {}).get("metrics") or {}
                found[rev["name"]] = {path: stable(metrics[path]["data"]) for path in COMPARED}
    return found


@pytest.fixture()
def repo(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Path]:
    repo = scratch_repo(tmp_path, tiny_model_dir)
    yield repo
    subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=repo, capture_output=True)


def test_two_queued_experiments_at_once_match_each_alone(repo: Path) -> None:
    queue(repo, "1")
    most, _ = drain(repo, "1", jobs=1)
    assert most == 1
    shutil.rmtree(repo / ".dvc" / "cache" / "runs", ignore_errors=True)  # run every stage again, not from the run-cache
    queue(repo, "2")
    most, checkpoints = drain(repo, "2", jobs=2)
    assert most == 2, "the two experiments never ran at the same time"
    # Each kept its Trainer checkpoints in its own workspace, none in the main one.
    assert checkpoints and all(".dvc/tmp/exps/tmp" in path.as_posix() for path in checkpoints), checkpoints

    metrics = experiment_metrics(repo)
    for name in RATES:
        assert metrics[f"{name}-2"] == metrics[f"{name}-1"], name
    assert metrics["high-1"] != metrics["low-1"]  # the parameter took effect

    assert debris(repo) == []
    assert not list(repo.glob("models/t/.checkpoints-*"))
    assert not list((repo / ".dvc" / "tmp" / "exps").glob("tmp*"))
    assert "tmp" not in run(repo, "git", "status", "--porcelain").stdout
    cache = repo / ".dvc" / "tmp" / "reprotune-fingerprints.json"
    json.loads(cache.read_text())  # the workspace's hash cache is whole
