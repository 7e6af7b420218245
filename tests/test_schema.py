"""The params schema refuses, in one line at params load, what would crash or waste a run later:
non-finite numbers, out-of-range values, coerced types; and the first stage (fingerprint)
checks the whole file's structure and every section dvc.yaml declares, before any training."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from reprotune import tasks
from reprotune.core.errors import ReprotuneError
from reprotune.core.params import SEED_LIMIT, load_yaml, parse_pipeline

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
FAMILIES = ("ner", "classification", "qa", "mlm")


def family_task(family: str, root: Path) -> dict[str, Any]:
    """A valid task of `family` (tests/tiny_<family>.py), with every stage section."""
    sys.path.insert(0, str(TESTS))
    try:
        module = importlib.import_module(f"tiny_{family}")
    finally:
        sys.path.remove(str(TESTS))
    task: dict[str, Any] = module.tiny_task(root / family, Path("model"))
    return task | {"search": {}, "export": {}}


def write_params(directory: Path, task: dict[str, Any], **top: Any) -> Path:
    path = directory / "params.yaml"
    pipeline = {"tasks": {"t": task["type"]}, **top.pop("pipeline_extra", {})}
    path.write_text(yaml.safe_dump({"pipeline": pipeline, "tasks": {"t": task}, **top}, sort_keys=False))
    return path


def refusal(path: Path) -> str:
    with pytest.raises(ReprotuneError) as caught:
        tasks.load_task("t", path=path)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- the cases of issue 26, written as YAML so PyYAML's reading of each literal is part of it ---


@pytest.mark.parametrize(
    "section,key,literal,expected",
    [
        ("train_full", "learning_rate", ".inf", "finite number"),
        ("train_lora", "learning_rate", ".nan", "finite number"),
        ("train_full", "epochs", ".inf", "finite number"),
        ("train_full", "seed", "-1", "greater than or equal to 0"),
        ("train_lora", "seed", "99999999999999", f"less than {SEED_LIMIT}"),
        ("train_lora", "target_modules", "[]", "empty list"),
        ("train_lora", "r", "true", "valid integer"),
        ("train_lora", "r", '"8"', "without quotes"),
        ("train_full", "batch_size", "1e8", "whole number"),
        ("train_full", "batch_size", "100000000", "less than or equal to 65536"),
        ("train_lora", "alpha", "-.inf", "finite number"),
        ("train_full", "weight_decay", ".nan", "finite number"),
        ("evaluate", "batch_size", "1e8", "whole number"),
        ("error_analysis", "margin", ".inf", "finite number"),
        ("export", "int8_tolerance", ".nan", "finite number"),
        ("train_full", "tf32", '"yes"', "valid boolean"),
    ],
)
def test_issue_cases_are_refused_in_one_line(
    tmp_path: Path, section: str, key: str, literal: str, expected: str
) -> None:
    path = write_params(tmp_path, family_task("ner", tmp_path) | {section: {key: "__V__"}})
    path.write_text(path.read_text().replace("__V__", literal))
    message = refusal(path)
    assert message.startswith("params.yaml: ") and f"tasks.t.{section}.{key}" in message and expected in message


@pytest.mark.parametrize(
    "section,value",
    [
        ({"download": {"make_splits": {"seed": -1}}}, "download.make_splits.seed"),
        ({"download": {"sample_seed": 2**32}}, "download.sample_seed"),
        ({"download": {"max_samples": {"train": 0}}}, "download.max_samples.train"),
        ({"download": {"near_duplicates": {"threshold": float("inf")}}}, "download.near_duplicates.threshold"),
        ({"evaluate": {"seed": 2**32}}, "evaluate.seed"),
        ({"evaluate": {"bootstrap": {"level": float("nan")}}}, "evaluate.bootstrap.level"),
        ({"evaluate": {"bootstrap": {"resamples": 10**8}}}, "evaluate.bootstrap.resamples"),
        ({"error_analysis": {"significance": {"seed": -3}}}, "error_analysis.significance.seed"),
        ({"error_analysis": {"margins": {"f1": float("inf")}}}, "error_analysis.margins"),
        ({"train_full": {"class_weights": {"O": float("nan")}}}, "train_full.class_weights"),
        ({"train_lora": {"early_stopping": {"patience": 2, "threshold": float("inf")}}}, "early_stopping.threshold"),
        ({"search": {"seed": -1}}, "search.seed"),
        ({"search": {"trials": True}}, "search.trials"),
        ({"search": {"max_epochs": float("inf")}}, "search.max_epochs"),
        ({"search": {"full": {"learning_rate": {"low": 1e-5, "high": float("inf")}}}}, "search.full.learning_rate"),
        ({"export": {"batch_size": 10**8}}, "export.batch_size"),
        ({"gate": {"f1": {"max_drop": float("inf")}}}, "gate.f1.max_drop"),
        ({"gate": {"f1": {"max_drop": 0.01, "range": [0, float("nan")]}}}, "gate.f1.range"),
    ],
)
def test_nested_and_mapped_numbers_are_checked_too(tmp_path: Path, section: dict[str, Any], value: str) -> None:
    task = family_task("ner", tmp_path)
    for name, body in section.items():
        task[name] = {**task.get(name, {}), **body}
    assert "'tasks.t." in (message := refusal(write_params(tmp_path, task))) and f".{value}" in message


@pytest.mark.parametrize(
    "section,expected",
    [
        ({"search": {"trials": "8"}}, "'tasks.t.search.trials': Input should be a valid integer (got '8'); write"),
        ({"train_lora": {"class_weights": {"O": True}}}, "'tasks.t.train_lora.class_weights.O': Input should be a"),
        ({"train_lora": {"target_modules": ["query", 3]}}, "'tasks.t.train_lora.target_modules.1': Input should"),
    ],
)
def test_a_union_error_names_the_key_not_the_union_member(
    tmp_path: Path, section: dict[str, Any], expected: str
) -> None:
    task = family_task("ner", tmp_path)
    for name, body in section.items():
        task[name] = {**task.get(name, {}), **body}
    assert expected in refusal(write_params(tmp_path, task))


def test_ints_where_floats_go_and_yaml_exponents_without_a_point_are_numbers(tmp_path: Path) -> None:
    path = write_params(tmp_path, family_task("ner", tmp_path) | {"train_full": {"epochs": "__E__", "lr": 0}})
    text = path.read_text().replace("__E__", "3").replace("lr: 0", "learning_rate: 2e-5")
    path.write_text(text + "gate: {}\n")
    task = tasks.load_task("t", path=path)
    assert task.train_full.epochs == 3.0 and task.train_full.learning_rate == 2e-5
    assert load_yaml("a: 2e-5\nb: 1E8\nc: '8'\nd: 1.5e-3\ne: 12\nf: 1_000\n") == {
        "a": 2e-5,
        "b": 1e8,
        "c": "8",
        "d": 1.5e-3,
        "e": 12,
        "f": 1000,
    }


def test_the_gate_range_is_still_read_from_a_yaml_list(tmp_path: Path) -> None:
    task = family_task("ner", tmp_path) | {"gate": {"loss": {"max_drop": 0.1, "range": [0, None]}}}
    assert tasks.load_task("t", path=write_params(tmp_path, task)).gate["loss"].range == (0.0, None)


# --- every numeric field of every family's schema ---------------------------------------------

NEEDS = {"early_stopping": {"patience": 1}, "windows": {"stride": 4}}
"""Keys an optional nested section needs before its other keys are looked at."""


def _plain(annotation: Any) -> list[Any]:
    """The types a field may hold: Optional and Union unpacked, Annotated stripped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _plain(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [t for arg in get_args(annotation) for t in _plain(arg)]
    return [annotation]


def scalar_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], set[Any]]]:
    """(path, {int, float, str...}) of every number-holding field, nested models included."""
    for name, info in model.model_fields.items():
        kinds = _plain(info.annotation)
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                yield from scalar_fields(kind, (*prefix, name))
        found = {k for k in kinds if k in (int, float, str)}
        if found & {int, float}:
            yield (*prefix, name), found


def with_value(task: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    task = yaml.safe_load(yaml.safe_dump(task))  # a deep copy
    node = task
    for part in path[:-1]:
        node[part] = {**NEEDS.get(part, {}), **(node.get(part) or {})}
        node = node[part]
    node[path[-1]] = value
    return task


def bad_values(path: tuple[str, ...], kinds: set[Any]) -> list[Any]:
    values: list[Any] = [True]
    if str not in kinds:
        values.append("1")
    if float in kinds:
        values += [float("inf"), float("-inf"), float("nan")]
    if path[-1].endswith("seed"):
        values += [-1, SEED_LIMIT]
    if path[-1] == "batch_size":
        values.append(10**8)
    return values


@pytest.mark.parametrize("family", FAMILIES)
def test_every_numeric_field_refuses_non_finite_out_of_range_and_coerced_values(family: str, tmp_path: Path) -> None:
    task = family_task(family, tmp_path)
    model = tasks.params_module(family).PARAMS
    tasks.validate_task("t", task)  # the base is valid
    fields = list(scalar_fields(model))
    assert len(fields) > 50, fields
    accepted = []
    for path, kinds in fields:
        for value in bad_values(path, kinds):
            try:
                tasks.validate_task("t", with_value(task, path, value))
            except ReprotuneError as exc:
                assert "\n" not in str(exc) and f"tasks.t.{'.'.join(path)}" in str(exc), (path, value, str(exc))
            else:
                accepted.append((path, value))
    assert accepted == []


# --- the search space is checked against the train sections ------------------------------


@pytest.mark.parametrize(
    "space,expected",
    [
        ({"lora": {"r": [8, float("inf")]}}, "'tasks.t.search.lora.r' may try inf"),
        ({"lora": {"r": [8, "16"]}}, "'tasks.t.search.lora.r' may try '16'"),
        ({"full": {"seed": [1, -1]}}, "'tasks.t.search.full.seed' may try -1"),
        ({"full": {"batch_size": {"low": 8, "high": 1e9}}}, "'tasks.t.search.full.batch_size' may try 1000000000"),
        ({"full": {"r": [8]}}, "'tasks.t.search.full.r' is not a key of train_full"),
    ],
)
def test_search_values_are_checked_against_the_train_section(
    tmp_path: Path, space: dict[str, Any], expected: str
) -> None:
    message = refusal(write_params(tmp_path, family_task("ner", tmp_path) | {"search": space}))
    assert expected in message


def test_a_whole_number_range_for_an_int_key_is_accepted(tmp_path: Path) -> None:
    task = family_task("ner", tmp_path) | {"search": {"lora": {"r": {"low": 4, "high": 16}}}}
    assert tasks.load_task("t", path=write_params(tmp_path, task)).search.lora["r"].high == 16


# --- the first stage checks the whole file's structure -----------------------------------


def test_an_unknown_pipeline_key_stops_the_first_stage(tmp_path: Path) -> None:
    path = write_params(tmp_path, family_task("ner", tmp_path), pipeline_extra={"taks_order": 1})
    with pytest.raises(ReprotuneError, match=r"unknown key 'pipeline.taks_order'; allowed keys: tasks$"):
        tasks.check_params_file("t", path, tmp_path / "dvc.yaml")
    with pytest.raises(ReprotuneError, match="unknown key 'pipeline.taks_order'"):
        parse_pipeline({"tasks": {"t": "ner"}, "taks_order": 1})  # what compare reads


def test_an_unknown_top_level_gate_key_stops_the_first_stage(tmp_path: Path) -> None:
    path = write_params(tmp_path, family_task("ner", tmp_path), gate={"referenc": "v1"})
    with pytest.raises(ReprotuneError, match=r"unknown key 'gate.referenc' \(did you mean 'reference'\?\)"):
        tasks.check_params_file("t", path, tmp_path / "dvc.yaml")


def test_every_section_dvc_yaml_declares_is_named_at_once_when_missing(tmp_path: Path) -> None:
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    task = family_task("ner", tmp_path)
    for name in ("export", "search", "evaluate"):
        del task[name]
    with pytest.raises(ReprotuneError) as caught:
        tasks.check_params_file("t", write_params(tmp_path, task), tmp_path / "dvc.yaml")
    message = str(caught.value)
    assert "tasks.t lacks evaluate, export, search, which dvc.yaml declares for baseline@t," in message
    assert "export-lora@t" in message and "search-full@t" in message
    assert "add 'evaluate: {}' and 'export: {}' and 'search: {}' under tasks.t" in message


def test_only_sections_the_projects_dvc_yaml_declares_are_required(tmp_path: Path) -> None:
    task = family_task("ner", tmp_path)
    del task["export"]
    path = write_params(tmp_path, task)
    tasks.check_params_file("t", path, tmp_path / "dvc.yaml")  # no dvc.yaml: a stage run on its own
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for name in ("export-full", "export-lora"):
        del pipeline["stages"][name]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    tasks.check_params_file("t", path, tmp_path / "dvc.yaml")  # as tests/scratch.py builds it


def test_the_projects_own_params_pass_the_first_stage_checks() -> None:
    pipeline = tasks.load_pipeline(REPO / "params.yaml")
    for name in pipeline.tasks:
        tasks.check_params_file(name, REPO / "params.yaml", REPO / "dvc.yaml")


def test_the_fingerprint_stage_prints_one_line_and_writes_nothing(tmp_path: Path) -> None:
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    task = family_task("ner", tmp_path)
    del task["export"]
    write_params(tmp_path, task)
    result = subprocess.run(
        [sys.executable, "-m", "stages.fingerprint", "t"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "tasks.t lacks export" in result.stderr
    assert not (tmp_path / "data").exists()


def test_the_optimizer_names_match_transformers() -> None:
    from transformers.training_args import OptimizerNames

    from reprotune.core.params import OPTIMIZERS

    assert OPTIMIZERS == tuple(name.value for name in OptimizerNames)
