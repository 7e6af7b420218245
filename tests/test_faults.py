"""Faults lose nothing: a stage killed at any moment leaves the old output or none, and a
killed training run resumed with `resume: true` reaches the same metrics."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from reprotune.atomic import atomic_dir
from tiny_ner import tiny_task

REPO = Path(__file__).resolve().parents[1]


def stage(workdir: Path, script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "stages" / script), *args], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]


def kill_when(process: subprocess.Popen, ready: callable, timeout: float = 120) -> bool:
    """SIGKILL the stage as soon as `ready()` holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.01)
    process.kill()
    raise AssertionError("stage neither finished nor reached the kill point")


def write_params(workdir: Path, task: dict) -> None:
    (workdir / "params.yaml").write_text(yaml.safe_dump({"pipeline": {"tasks": ["t"]}, "tasks": {"t": task}}))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """Downloaded and tokenized once; each test works on its own copy."""
    root = tmp_path_factory.mktemp("faults")
    task = tiny_task(root / "src", tiny_model_dir)
    task["train_full"] |= {"max_steps": -1, "epochs": 12, "logging_steps": 5}
    write_params(root, task)
    for script in ("download.py", "tokenize_align.py"):
        finish(stage(root, script, "t"))
    return root


@pytest.fixture()
def workdir(prepared: Path, tmp_path: Path) -> Path:
    shutil.copytree(prepared, tmp_path / "w")
    return tmp_path / "w"


def complete_model(path: Path) -> bool:
    return (path / "train_info.json").exists() and (path / "model.safetensors").exists()


def test_atomic_dir_keeps_the_old_output_when_the_block_fails(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("killed")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_download_killed_while_saving_leaves_old_output(workdir: Path) -> None:
    raw = workdir / "data" / "t" / "raw"
    before = sorted(p.relative_to(raw) for p in raw.rglob("*"))
    process = stage(workdir, "download.py", "t")
    killed = kill_when(process, lambda: any((workdir / "data" / "t").glob(".raw.tmp-*/*")))
    assert sorted(p.relative_to(raw) for p in raw.rglob("*")) == before, f"killed={killed}"


@pytest.mark.parametrize("point", ["starting", "after-first-checkpoint", "saving-the-model"])
def test_train_killed_at_any_point_leaves_no_partial_model(workdir: Path, point: str) -> None:
    models = workdir / "models" / "t"
    checks = {
        "starting": lambda: True,
        "after-first-checkpoint": lambda: any(models.glob(".checkpoints-full/checkpoint-*/rng_state.pth")),
        "saving-the-model": lambda: any(models.glob(".full.tmp-*/*")),
    }
    process = stage(workdir, "train.py", "t", "full")
    if point == "starting":
        time.sleep(1.0)
    kill_when(process, checks[point])
    target = models / "full"
    assert not target.exists() or complete_model(target)


def test_killed_training_resumes_to_the_same_metrics(workdir: Path) -> None:
    finish(stage(workdir, "train.py", "t", "full"))
    finish(stage(workdir, "evaluate.py", "t", "full"))
    uninterrupted = (workdir / "metrics" / "t" / "full.json").read_text()

    task = yaml.safe_load((workdir / "params.yaml").read_text())["tasks"]["t"]
    task["train_full"]["resume"] = True
    write_params(workdir, task)
    models = workdir / "models" / "t"
    process = stage(workdir, "train.py", "t", "full")
    assert kill_when(process, lambda: any(models.glob(".checkpoints-full/checkpoint-*/rng_state.pth")))
    finish(stage(workdir, "train.py", "t", "full"))
    info = json.loads((models / "full" / "train_info.json").read_text())
    assert info["resumed_from_checkpoint"] is True
    finish(stage(workdir, "evaluate.py", "t", "full"))
    assert (workdir / "metrics" / "t" / "full.json").read_text() == uninterrupted
