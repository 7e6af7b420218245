"""Faults lose nothing: a stage killed at any moment leaves the old output or none, no
temporary that git or DVC would see, a `dvc status` that says the stage must run, and a rerun
with the same metrics; a killed training run resumed with `resume: true` reaches the same metrics.

Quick stages are killed inside the window the test hook REPROTUNE_PAUSE_BEFORE_RENAME opens
(reprotune.core.atomic: a sleep right before each rename into place), so every kill lands
between "the complete temporary exists" and "the target is replaced"."""

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
from e2e import dry_run_stages, run, stage_env
from scratch import debris, metrics_snapshot
from tiny import git
from tiny_ner import TINY_TRAIN, tiny_task

from reprotune.core.atomic import PAUSE_ENV, atomic_dir
from reprotune.training.train import checkpoint_is_complete, last_checkpoint

REPO = Path(__file__).resolve().parents[1]
PAUSE = {PAUSE_ENV: "2"}
"""Wide enough for a 10 ms poll on a loaded machine, short enough not to slow the renames before."""


def stage(workdir: Path, script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, str(REPO / "stages" / script), *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


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
    params = {"pipeline": {"tasks": {"t": task["type"]}}, "tasks": {"t": task}}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """Downloaded and tokenized once; each test works on its own copy."""
    root = tmp_path_factory.mktemp("faults")
    task = tiny_task(root / "src", tiny_model_dir)
    task["train_full"] |= {"max_steps": -1, "epochs": 12, "logging_steps": 5}
    write_params(root, task)
    for script in ("download.py", "tokenize_align.py"):
        finish(stage(root, script, "t"))
    finish(stage(root, "search.py", "t", "full"))  # search off: the train section as written
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


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.slow  # stages started and killed in subprocesses
def test_download_killed_while_saving_leaves_old_output(workdir: Path) -> None:
    raw = workdir / "data" / "t" / "raw"
    before = snapshot(raw)
    process = stage(workdir, "download.py", "t", env=PAUSE)
    assert kill_when(process, lambda: any((workdir / "data" / "t").glob(".raw.tmp-*/dataset_dict.json")))
    assert snapshot(raw) == before
    assert debris(workdir)  # the kill left its temporary (ignored by git and DVC) ...
    finish(stage(workdir, "download.py", "t"))
    assert debris(workdir) == []  # ... which the next run removes first
    assert snapshot(raw) == before


@pytest.mark.slow  # stages started and killed in subprocesses
@pytest.mark.parametrize("point", ["starting", "after-first-checkpoint", "saving-the-model"])
def test_train_killed_at_any_point_leaves_no_partial_model(workdir: Path, point: str) -> None:
    models = workdir / "models" / "t"
    checks = {
        "starting": lambda: True,
        "after-first-checkpoint": lambda: any(models.glob(".checkpoints-full/checkpoint-*/rng_state.pth")),
        "saving-the-model": lambda: any(models.glob(".full.tmp-*/model.safetensors")),
    }
    if point == "saving-the-model":  # no need for the long run the checkpoints need
        task = yaml.safe_load((workdir / "params.yaml").read_text())["tasks"]["t"]
        write_params(workdir, task | {"train_full": {**task["train_full"], **TINY_TRAIN}})
    process = stage(workdir, "train.py", "t", "full", env=PAUSE)
    if point == "starting":
        time.sleep(1.0)
    killed = kill_when(process, checks[point])
    assert killed or point == "starting"
    target = models / "full"
    assert not target.exists() or complete_model(target)
    # Whatever the kill left (metrics/t/.train-full.tmp-*, models/t/.full.tmp-*) goes when a stage starts.
    finish(stage(workdir, "fingerprint.py", "t"))
    assert debris(workdir) == []


# Each stage, killed inside `dvc repro` (with its child) while it writes this temporary, after
# this script was edited so that the stage (and the others running the script) must run.
KILLS = {
    "download@t": ("download.py", "data/t/.raw.tmp-*"),
    "tokenize@t": ("tokenize_align.py", "data/t/.tokenized.tmp-*"),
    "train-full@t": ("train.py", "metrics/t/.train-full.tmp-*"),  # while training (dvclive's folder)
    "evaluate-full@t": ("evaluate.py", "metrics/t/.full.json.tmp-*"),  # its predictions already renamed
    "error-analysis@t": ("error_analysis.py", "reports/.t.tmp-*"),
    "compare": ("compare.py", "reports/.comparison.tmp-*"),
}
RUN_BY = {
    "download.py": {"download@t"},
    "tokenize_align.py": {"tokenize@t"},
    "train.py": {"train-full@t", "train-lora@t"},
    "evaluate.py": {"baseline@t", "evaluate-full@t", "evaluate-lora@t"},
    "error_analysis.py": {"error-analysis@t"},
    "compare.py": {"compare"},
}


def outputs(repo: Path) -> dict[str, bytes]:
    """The stage outputs' files (not temporaries, checkpoints or .gitignore files)."""
    files = [path for top in ("data", "models", "metrics", "reports") for path in sorted((repo / top).rglob("*"))]
    return {
        path.relative_to(repo).as_posix(): path.read_bytes()
        for path in files
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(repo).parts)
    }


def must_run_stages(repo: Path, deleted: set[str]) -> dict[str, bool]:
    """Stages `dvc status` lists (fingerprints aside), each with whether all it reports is deps
    that hold a file in `deleted`."""
    status = json.loads(run(repo, "dvc", "status", "--json").stdout or "{}")
    listed = {}
    for name, changes in status.items():
        if changes == ["always changed"]:
            continue
        deps = [
            path
            for change in changes
            if isinstance(change, dict)
            for kind, paths in change.items()
            if kind == "changed deps"
            for path in paths
        ]
        only_deleted_deps = all(isinstance(change, dict) and set(change) == {"changed deps"} for change in changes)
        listed[name] = only_deleted_deps and all(
            any(file == dep or file.startswith(dep.rstrip("/") + "/") for file in deleted) for dep in deps
        )
    return listed


@pytest.mark.parametrize("stage_name", list(KILLS))
def test_every_stage_killed_in_dvc_repro_reruns_to_the_same_metrics(
    scratch_reproduced: tuple[Path, dict], tmp_path: Path, stage_name: str
) -> None:
    script, temporary = KILLS[stage_name]
    repo = Path(shutil.copytree(scratch_reproduced[0], tmp_path / "repo", symlinks=True))
    with (repo / "stages" / script).open("a") as handle:
        handle.write("# edited: the stage must run again\n")
    before = outputs(repo)

    process = subprocess.Popen(
        ["dvc", "repro", "-s", stage_name],
        cwd=repo,
        env={**stage_env(), **PAUSE},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not any(repo.glob(temporary)):
        assert process.poll() is None, f"{stage_name} finished before writing {temporary}"
        assert time.monotonic() < deadline, f"{stage_name} never wrote {temporary}"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # dvc and the stage, as a power cut or the OOM killer would
    process.wait()
    while time.monotonic() < deadline:  # every process of the group gone, none finishing the job
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)

    # The old output or none (`dvc repro` removes a stage's outs before running it): never a new
    # or half-written file ...
    after = outputs(repo)
    assert [name for name in after if after[name] != before.get(name)] == []
    # ... no temporary git would add or DVC would hash (compare depends on all of metrics/) ...
    left = debris(repo)
    assert any(repo.glob(temporary)) and left
    assert "tmp-" not in git(repo, "status", "--porcelain", "--untracked-files=all")
    assert run(repo, "dvc", "check-ignore", *left).stdout.split() == left
    # ... and DVC says the stage must run, and the stages after it if the kill removed what they read.
    must_run = must_run_stages(repo, deleted=set(before) - set(after))
    assert RUN_BY[script] <= must_run.keys()
    assert all(must_run[name] for name in must_run.keys() - RUN_BY[script]), must_run

    run(repo, "dvc", "repro", "-s", stage_name)
    assert debris(repo) == []
    assert stage_name not in dry_run_stages(repo)
    assert metrics_snapshot(repo) == scratch_reproduced[1]


@pytest.mark.slow  # stages started and killed in subprocesses
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
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-10",
        "checkpoint-30-backup",
        "checkpoint-5",
        "checkpoint-notes",
    ]
    assert last_checkpoint(tmp_path / "missing") is None
