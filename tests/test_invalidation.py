"""`dvc repro` reruns exactly what changed: code, data and params, on any machine.

Every test here runs with bytecode writing on (users' machines and CI runners write
`__pycache__/` on import) against the tiny profile reproduced once per session.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from e2e import dry_run_stages, run, stage_env
from tiny import copy_repo, git

from reprotune.core.params import STAGE_SECTIONS as ALL_SECTIONS
from reprotune.tasks import FAMILIES, STAGE_SECTIONS

TASKS = [f"tiny_{family}" for family in FAMILIES]


@contextmanager
def edited(repo: Path, relative: str, line: str = "\n# an edit\n") -> Iterator[Path]:
    """Append a line to a file for the duration of the block, then restore it from git."""
    path = repo / relative
    original = path.read_bytes()
    path.write_bytes(original + line.encode())
    try:
        yield path
    finally:
        path.write_bytes(original)


def stages_of(names: set[str]) -> set[str]:
    return {name.split("@")[0] for name in names}


def test_bytecode_and_imports_leave_dvc_status_clean(reproduced: tuple[Path, dict]) -> None:
    repo, _ = reproduced
    modules = sorted(
        ".".join(path.relative_to(repo).with_suffix("").parts)
        for path in (repo / "reprotune").rglob("*.py")
        if path.name != "__init__.py"
    )
    code = f"import importlib\nfor name in {modules!r}:\n    importlib.import_module(name)\n"
    run(repo, sys.executable, "-c", code)
    run(repo, sys.executable, "-m", "compileall", "-q", "reprotune", "stages")
    assert list((repo / "reprotune" / "core").glob("__pycache__/*.pyc")), "bytecode was written"
    assert dry_run_stages(repo) == set()


@pytest.mark.parametrize("family", FAMILIES)
def test_editing_a_family_module_marks_only_the_stages_that_run_it(reproduced: tuple[Path, dict], family: str) -> None:
    repo, _ = reproduced
    task = f"tiny_{family}"
    model_stages = {
        "search-full",
        "search-lora",
        "train-full",
        "train-lora",
        "baseline",
        "evaluate-full",
        "evaluate-lora",
        "export-full",
        "export-lora",
    }
    expected = {
        "sources.py": {"download"},
        "preprocess.py": {"tokenize", *model_stages},
        "family.py": model_stages,
        "metrics.py": {*model_stages, "error-analysis"},
        "analysis.py": {"error-analysis"},
    }
    for module, stages in expected.items():
        with edited(repo, f"reprotune/tasks/{family}/{module}"):
            changed = dry_run_stages(repo)
        assert changed == {f"{stage}@{task}" for stage in stages}, (module, changed)


def test_editing_shared_training_code_marks_search_and_train_stages_only(reproduced: tuple[Path, dict]) -> None:
    repo, _ = reproduced
    with edited(repo, "reprotune/training/train.py"):
        changed = dry_run_stages(repo)
    # the search stages run the train stage's own fit() for each trial
    stages = ("search-full", "search-lora", "train-full", "train-lora")
    assert changed == {f"{stage}@{task}" for task in TASKS for stage in stages}


def test_editing_a_local_source_file_reruns_download_and_picks_the_change_up(reproduced: tuple[Path, dict]) -> None:
    repo, profile = reproduced
    source = Path(profile["tasks"]["tiny_ner"]["download"]["path"])
    original = source.read_text(encoding="utf-8")
    first_token = original.split("\t", 1)[0]
    source.write_text(original.replace(first_token, "Zanzibarian", 1), encoding="utf-8")
    try:
        out = run(repo, "dvc", "repro", "download@tiny_ner").stdout
        assert "Running stage 'download@tiny_ner'" in out
        from datasets import load_from_disk

        raw = load_from_disk(str(repo / "data" / "tiny_ner" / "raw"))
        assert any("Zanzibarian" in tokens for split in raw.values() for tokens in split["tokens"])
    finally:
        source.write_text(original, encoding="utf-8")
        run(repo, "dvc", "repro", "download@tiny_ner")
    assert dry_run_stages(repo) == set(), "the restored file gives the same raw data, so nothing else reruns"


def test_an_unchanged_touched_source_reruns_nothing(reproduced: tuple[Path, dict]) -> None:
    repo, profile = reproduced
    source = Path(profile["tasks"]["tiny_ner"]["download"]["path"])
    source.write_bytes(source.read_bytes())
    out = run(repo, "dvc", "repro").stdout
    assert "Running stage 'download@" not in out and "Running stage 'train" not in out


def test_forced_tokenize_with_unchanged_inputs_leaves_training_up_to_date(reproduced: tuple[Path, dict]) -> None:
    repo, _ = reproduced
    run(repo, "dvc", "repro", "-f", "-s", "tokenize@tiny_ner")
    assert dry_run_stages(repo) == set()


def dvc_stages(repo: Path) -> dict[str, dict]:
    """dvc.yaml's stages expanded for the repo's pipeline.tasks (`${key}` task, `${item}` family)."""
    pipeline = yaml.safe_load((repo / "params.yaml").read_text())["pipeline"]["tasks"]
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    expanded = {}
    for name, stage in spec.items():
        if "foreach" not in stage:
            expanded[name] = stage
            continue
        for task, family in pipeline.items():
            text = json.dumps(stage["do"]).replace("${key}", task).replace("${item}", family)
            expanded[f"{name}@{task}"] = json.loads(text)
    return expanded


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_every_stage_depends_on_each_project_file_it_imported(reproduced: tuple[Path, dict]) -> None:
    repo, _ = reproduced
    audit = repo.parent / "audit"
    stages = dvc_stages(repo)
    checked = 0
    for name, stage in stages.items():
        module, *args = stage["cmd"].split()[2:]  # python -m stages.<script> args
        record = audit / ("-".join([module.split(".")[-1], *args]) + ".json")
        assert record.exists(), f"{name} left no import record"
        missing = [path for path in json.loads(record.read_text()) if not covered(path, stage["deps"])]
        assert not missing, f"{name} imports {missing} but dvc.yaml does not list them as deps"
        checked += 1
    assert checked == len(stages) >= 10 * len(TASKS)


def test_no_stage_depends_on_another_familys_code(reproduced: tuple[Path, dict]) -> None:
    repo, _ = reproduced
    for name, stage in dvc_stages(repo).items():
        families = {m.group(1) for dep in stage.get("deps", []) if (m := re.match(r"reprotune/tasks/(\w+)/", dep))}
        assert len(families) <= 1, (name, families)


def test_each_stage_declares_the_params_sections_it_may_read(reproduced: tuple[Path, dict]) -> None:
    repo, _ = reproduced
    for name, stage in dvc_stages(repo).items():
        if name == "compare":
            assert stage["params"] == ["pipeline.tasks"]
            continue
        kind, task = name.split("@")
        declared = {param.removeprefix(f"tasks.{task}.") for param in stage["params"]}
        assert declared == {"type", *STAGE_SECTIONS[kind]}, name
        assert set(STAGE_SECTIONS[kind]) <= set(ALL_SECTIONS)


def test_the_same_inputs_give_the_same_outs_from_another_checkout_and_venv(
    reproduced: tuple[Path, dict], tmp_path: Path
) -> None:
    """Two checkouts at different paths, a virtual environment at a different path and the
    model copied elsewhere: download and tokenize outs hash the same (dvc.lock)."""
    repo, profile = reproduced
    other = copy_repo(tmp_path / "elsewhere" / "checkout")
    model = Path(profile["tasks"]["tiny_ner"]["model"]["name_or_path"])
    moved_model = tmp_path / "models-here" / "tiny"
    shutil.copytree(model, moved_model)
    params = json.loads(json.dumps(profile).replace(str(model), str(moved_model)))
    (other / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(other, "commit", "-qam", "same profile, model elsewhere")
    venv = tmp_path / "another-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    import site as site_module

    (site / "parent.pth").write_text("\n".join(site_module.getsitepackages()) + "\n")
    env = stage_env()
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    targets = [f"{stage}@{task}" for task in TASKS for stage in ("download", "tokenize")]
    fingerprints = [f"fingerprint@{task}" for task in TASKS]
    run(other, str(venv / "bin" / "python"), "-m", "dvc", "repro", "--single-item", *fingerprints, *targets, env=env)

    def out_hashes(root: Path) -> dict[str, str]:
        lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
        return {out["path"]: out["md5"] for name in targets for out in lock[name]["outs"]}

    assert out_hashes(other) == out_hashes(repo)
