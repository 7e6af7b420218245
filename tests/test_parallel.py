"""Parallel experiments: two queued experiments running at once (`dvc queue start -j 2`) on the
tiny profile end with the metrics each has when run alone, and share nothing on the way: each
runs in its own DVC temporary workspace (its own checkpoints, atomic temporaries and
.dvc/tmp fingerprint cache), and the main workspace is left clean."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e import run, stage_env
from scratch import debris, stable

RATES = {"same": 1e-3, "high": 3e-3}
"""`same` is tests/tiny_ner.py's rate: the scratch project's own run is its run alone."""
COMPARED = (
    "metrics/t/train-full/metrics.json",
    "metrics/t/full.json",
    "metrics/t/error_summary.json",
    "metrics/t/significance.json",
)


def overrides(rate: float) -> list[str]:
    return ["-S", f"tasks.t.train_full.learning_rate={rate}"]


def queue(repo: Path, suffix: str) -> None:
    for name, rate in RATES.items():
        run(repo, "dvc", "exp", "run", "--queue", "-n", f"{name}-{suffix}", *overrides(rate))


class Watcher(threading.Thread):
    """Every 10 ms while the experiments run: the most DVC temporary workspaces at once and
    every Trainer checkpoint folder seen (a tiny model's exist for well under a second, far
    shorter than one `dvc queue status` call, so the status loop alone would miss them)."""

    def __init__(self, repo: Path) -> None:
        super().__init__(daemon=True)
        self.repo, self.stopped = repo, threading.Event()
        self.most, self.checkpoints = 0, set[Path]()

    def run(self) -> None:
        workspaces = self.repo / ".dvc" / "tmp" / "exps"
        while not self.stopped.wait(0.01):
            self.most = max(self.most, len(list(workspaces.glob("tmp*/dvc.yaml"))))
            self.checkpoints |= set(self.repo.glob("models/t/.checkpoints-*"))
            self.checkpoints |= set(workspaces.glob("tmp*/models/t/.checkpoints-*"))


def drain(repo: Path, suffix: str, jobs: int, timeout: float = 600) -> Watcher:
    """Start `jobs` workers and wait until the experiments `*-suffix` succeeded."""
    watcher = Watcher(repo)
    watcher.start()
    # The workers it starts inherit its stdout and stderr: no pipes, or waiting for it waits for them.
    subprocess.run(
        ["dvc", "queue", "start", "-j", str(jobs)],
        cwd=repo,
        env=stage_env(),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    names = {f"{name}-{suffix}" for name in RATES}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            rows = {
                fields[1]: fields[-1]
                for fields in map(str.split, run(repo, "dvc", "queue", "status").stdout.splitlines())
                if len(fields) >= 4 and fields[1] in names
            }
            failed = [name for name, state in rows.items() if state == "Failed"]
            assert not failed, run(repo, "dvc", "queue", "logs", failed[0]).stdout[-3000:]
            if len(rows) == len(names) and set(rows.values()) == {"Success"}:
                return watcher
            time.sleep(0.2)
    finally:
        watcher.stopped.set()
        watcher.join()
    raise AssertionError("the queued experiments did not finish in time")


def experiment_metrics(repo: Path) -> dict[str, dict]:
    """Each named experiment's learning rate and metrics files (timings left out), from
    `dvc exp show --json`."""
    found = {}
    for commit in json.loads(run(repo, "dvc", "exp", "show", "--json").stdout):
        for experiment in commit.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                metrics = (rev.get("data") or {}).get("metrics") or {}
                params = rev["data"]["params"]["params.yaml"]["data"]
                found[rev["name"]] = {
                    "learning_rate": params["tasks"]["t"]["train_full"]["learning_rate"],
                    **{path: stable(metrics[path]["data"]) for path in COMPARED},
                }
    return found


@pytest.fixture()
def repo(scratch_reproduced: tuple[Path, dict], tmp_path: Path) -> Iterator[Path]:
    repo = Path(shutil.copytree(scratch_reproduced[0], tmp_path / "repo", symlinks=True))
    yield repo
    subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=repo, capture_output=True)


def test_two_queued_experiments_at_once_match_each_alone(repo: Path, scratch_reproduced: tuple[Path, dict]) -> None:
    alone = {"same": {path: scratch_reproduced[1][path] for path in COMPARED}}
    # `high` alone, in a temporary workspace of its own.
    run(repo, "dvc", "exp", "run", "--temp", "-n", "high-1", *overrides(RATES["high"]))
    shutil.rmtree(repo / ".dvc" / "cache" / "runs", ignore_errors=True)  # run every stage again, not from the run-cache
    queue(repo, "2")
    watcher = drain(repo, "2", jobs=2)
    assert watcher.most == 2, "the two experiments never ran at the same time"
    # Each kept its Trainer checkpoints in its own workspace, none in the main one.
    checkpoints = watcher.checkpoints
    assert checkpoints and all(".dvc/tmp/exps/tmp" in path.as_posix() for path in checkpoints), checkpoints

    metrics = experiment_metrics(repo)
    alone["high"] = {path: metrics["high-1"][path] for path in COMPARED}
    for name, rate in RATES.items():
        assert metrics[f"{name}-2"]["learning_rate"] == rate  # `dvc exp show` lists the grid's params
        assert {path: metrics[f"{name}-2"][path] for path in COMPARED} == alone[name], name
    assert alone["high"] != alone["same"]  # the parameter took effect

    assert debris(repo) == []
    assert not list(repo.glob("models/t/.checkpoints-*"))
    assert not list((repo / ".dvc" / "tmp" / "exps").glob("tmp*"))
    assert "tmp" not in run(repo, "git", "status", "--porcelain").stdout
    cache = repo / ".dvc" / "tmp" / "reprotune-fingerprints.json"
    json.loads(cache.read_text())  # the workspace's hash cache is whole
