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
from tiny_ner import tiny_task

from reprotune.core.atomic import atomic_dir
from reprotune.training.train import checkpoint_is_complete, last_checkpoint

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
    (workdir / "params.yaml").write_text(yaml.safe_dump({"pipeline": {"tasks": {"t": task["type"]}}, "tasks": {"t": task}}))


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
    assert kill_when(process, lambda: any(map(checkpoint_is_complete, models.glob(".checkpoints-full/checkpoint-*"))))
    # A kill while saving leaves a newer checkpoint without its trainer state; make one.
    complete = Path(last_checkpoint(models / ".checkpoints-full"))
    half_written = complete.with_name("checkpoint-99999")
    shutil.copytree(complete, half_written)
    (half_written / "trainer_state.json").unlink()
    finish(stage(workdir, "train.py", "t", "full"))
    info = json.loads((models / "full" / "train_info.json").read_text())
    assert info["resumed_from_checkpoint"] is True
    finish(stage(workdir, "evaluate.py", "t", "full"))
    assert (workdir / "metrics" / "t" / "full.json").read_text() == uninterrupted


def test_last_checkpoint_skips_and_removes_half_written_ones(tmp_path: Path) -> None:
    for step, state in [(5, '{"global_step": 5}'), (10, '{"global_step": 10}'), (15, None), (20, '{"glob')]:
        checkpoint = tmp_path / f"checkpoint-{step}"
        checkpoint.mkdir()
        (checkpoint / "rng_state.pth").write_bytes(b"x")
        if state is not None:
            (checkpoint / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-notes").mkdir()
    (tmp_path / "checkpoint-30-backup").mkdir()
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-30-backup", "checkpoint-5",
                                                          "checkpoint-notes"]
    assert last_checkpoint(tmp_path / "missing") is None
