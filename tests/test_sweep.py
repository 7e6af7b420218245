"""reprotune-sweep: the best experiment by the validation metric (never the test metric),
from a saved `dvc exp show --json` payload, and DVC's own `-S` grid syntax in a scratch repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reprotune.commands.sweep import candidates, choose, exp_show_payload, queue_arguments, run
from reprotune.core.errors import ReprotuneError

PAYLOAD = Path(__file__).parent / "reference" / "sweep" / "exp_show.json"


def payload() -> list:
    return exp_show_payload(str(PAYLOAD))


def test_best_is_chosen_by_validation_not_test() -> None:
    choice = choose(candidates(payload(), "wnut16", "lora"), "lora")
    assert choice.metric == "f1"
    # lr-exp has the best test f1 (0.60) but the worst validation f1: it must rank last.
    assert [c.name for c in choice.ranked] == ["r16-exp", "r4-exp", "legacy-exp", "main (baseline)", "lr-exp"]
    assert choice.winner is not None and choice.winner.name == "r16-exp"
    assert choice.winner.validation_value == 0.47 and choice.winner.test_value == 0.36
    assert choice.winner.changed == ["wnut16.train_lora.r=16"]
    skipped = {c.name: c.note for c in choice.skipped}
    assert skipped == {
        "loss-exp": "selected by validation loss, not f1",
        "queued-exp": "queued",
        "failed-exp": "failed",
    }, "the workspace row is never a candidate"


def test_legacy_train_info_falls_back_to_best_checkpoint_metric() -> None:
    legacy = next(c for c in candidates(payload(), "wnut16", "lora") if c.name == "legacy-exp")
    assert (legacy.validation_metric, legacy.validation_value, legacy.greater_is_better) == ("f1", 0.43, True)


def test_an_explicit_metric_ranks_only_runs_selected_by_it() -> None:
    choice = choose(candidates(payload(), "wnut16", "lora"), "lora", metric="loss")
    assert [c.name for c in choice.ranked] == ["loss-exp"] and choice.ranked[0].greater_is_better is False


def test_cli_prints_the_table_and_the_winner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    md = tmp_path / "sweep.md"
    assert run(["best", "--task", "wnut16", "--from-json", str(PAYLOAD), "--md", str(md)]) == 0
    out = capsys.readouterr().out
    assert out == md.read_text()
    assert "| experiment | changed params | validation f1 | test (information only) |" in out
    assert "| r16-exp ★ | wnut16.train_lora.r=16 | 0.4700 | f1 0.3600 |" in out
    assert "**Best (lora, validation f1): r16-exp** = 0.4700; `dvc exp apply r16-exp`" in out
    assert "**Best (full, validation f1): main (baseline)** = 0.5200" in out, "full: only the baseline trained it"
    assert "train_lora" not in out.split("### wnut16 · lora")[0], "the full table leaves LoRA's keys out"
    assert run(["best", "--task", "nosuch", "--from-json", str(PAYLOAD)]) == 1


def test_grid_keys_go_under_the_task() -> None:
    assert queue_arguments("wnut16", ["train_lora.r=4,8,16", "tasks.other.train_full.seed=range(1,4)"]) == [
        "dvc",
        "exp",
        "run",
        "--queue",
        "-S",
        "tasks.wnut16.train_lora.r=4,8,16",
        "-S",
        "tasks.other.train_full.seed=range(1,4)",
    ]
    with pytest.raises(ReprotuneError, match="expected key=value"):
        queue_arguments("wnut16", ["train_lora.r"])


STAGE = """import json, os, yaml
p = yaml.safe_load(open("params.yaml"))["tasks"]["t"]["train_lora"]
os.makedirs("metrics/t", exist_ok=True)
# validation rises with r, test falls with it: the sweep must follow validation
json.dump({"best_validation_metric": "f1", "best_validation_value": p["r"] / 100,
           "best_validation_greater_is_better": True}, open("metrics/t/lora-cost.json", "w"))
json.dump({"f1": 1 - p["r"] / 100}, open("metrics/t/lora.json", "w"))
"""

DVC_YAML = """stages:
  train:
    cmd: python stage.py
    deps: [stage.py]
    params: [tasks.t.train_lora]
    metrics:
      - metrics/t/lora-cost.json: {cache: false}
      - metrics/t/lora.json: {cache: false}
"""


def scratch_repo(root: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    (root / "params.yaml").write_text("tasks:\n  t:\n    train_lora:\n      r: 8\n      learning_rate: 0.001\n")
    (root / "stage.py").write_text(STAGE)
    (root / "dvc.yaml").write_text(DVC_YAML)
    for command in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "commit.gpgsign=false", "commit", "-qm", "scratch"],
    ):
        subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
    return env


def exp_show(root: Path, env: dict[str, str]) -> list:
    done = subprocess.run(
        ["dvc", "exp", "show", "--json"], cwd=root, env=env, check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(shutil.which("dvc") is None, reason="needs the dvc command")
def test_dvc_queue_expands_lists_and_ranges_and_best_reads_real_exp_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-S key=4,8,16` and `-S key=range(1,3)` queue one experiment per combination (dvc
    3.x); nothing is run from the queue. Two experiments run in the workspace then give a
    real `dvc exp show --json` for `best`."""
    env = scratch_repo(tmp_path)
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert run(["grid", "--task", "t", "-S", "train_lora.r=4,8,16", "-S", "train_lora.learning_rate=range(1,3)"]) == 0
    queued = sorted(
        (
            rev["data"]["params"]["params.yaml"]["data"]["tasks"]["t"]["train_lora"]["r"],
            rev["data"]["params"]["params.yaml"]["data"]["tasks"]["t"]["train_lora"]["learning_rate"],
        )
        for baseline in exp_show(tmp_path, env)
        for experiment in baseline.get("experiments") or []
        if (experiment.get("executor") or {}).get("state") == "queued"
        for rev in experiment["revs"]
    )
    assert queued == [(r, lr) for r in (4, 8, 16) for lr in (1, 2)]
    subprocess.run(["dvc", "queue", "remove", "--queued"], cwd=tmp_path, env=env, check=True, capture_output=True)

    for r in (4, 16):
        subprocess.run(
            ["dvc", "exp", "run", "-S", f"tasks.t.train_lora.r={r}"],
            cwd=tmp_path,
            env=env,
            check=True,
            capture_output=True,
        )
    capsys.readouterr()
    assert run(["best", "--task", "t", "--method", "lora"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "★" in line]
    assert len(rows) == 1 and "t.train_lora.r=16" in rows[0] and "0.1600" in rows[0], out
    assert "test (information only)" in out and "f1 0.8400" in out


def test_console_script_module_runs() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "reprotune.commands.sweep",
            "best",
            "--task",
            "wnut16",
            "--method",
            "lora",
            "--from-json",
            str(PAYLOAD),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "r16-exp" in done.stdout
