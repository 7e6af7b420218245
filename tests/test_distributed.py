"""Training under torchrun with two CPU processes (gloo DDP) needs no code change and
reaches the single-process metrics within tolerance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_ner import tiny_task

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = {"token_accuracy": 0.02, "f1": 0.05}


def stage(workdir: Path, *command: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(list(command), cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def train_and_evaluate(workdir: Path, batch_size: int, processes: int) -> tuple[dict, dict]:
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["tasks"]["t"]["train_full"]["batch_size"] = batch_size
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    train = [str(REPO / "stages" / "train.py"), "t", "full"]
    if processes > 1:
        stage(workdir, sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), *train)
    else:
        stage(workdir, sys.executable, *train)
    stage(workdir, sys.executable, str(REPO / "stages" / "evaluate.py"), "t", "full")
    info = json.loads((workdir / "models" / "t" / "full" / "train_info.json").read_text())
    return json.loads((workdir / "metrics" / "t" / "full.json").read_text()), info


@pytest.mark.slow  # torchrun: two training processes, then one
def test_two_process_gloo_training_matches_single_process(tmp_path: Path, tiny_model_dir: Path) -> None:
    task = tiny_task(tmp_path / "src", tiny_model_dir)
    task["train_full"] |= {"max_steps": -1, "epochs": 4, "learning_rate": 2e-3}
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"pipeline": {"tasks": {"t": task["type"]}}, "tasks": {"t": task}})
    )
    stage(tmp_path, sys.executable, str(REPO / "stages" / "download.py"), "t")
    stage(tmp_path, sys.executable, str(REPO / "stages" / "tokenize_align.py"), "t")
    stage(tmp_path, sys.executable, str(REPO / "stages" / "search.py"), "t", "full")  # off: train_full as written

    single, single_info = train_and_evaluate(tmp_path, batch_size=8, processes=1)
    double, double_info = train_and_evaluate(tmp_path, batch_size=4, processes=2)

    assert single_info["processes"] == 1 and double_info["processes"] == 2
    assert double_info["train_steps"] == single_info["train_steps"], "same global batch, same number of steps"
    for key, tolerance in TOLERANCE.items():
        assert double[key] == pytest.approx(single[key], abs=tolerance), (key, single[key], double[key])
