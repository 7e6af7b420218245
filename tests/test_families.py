"""The family contract: every family folder provides what reprotune/tasks/base.py's Protocols
name, with the same parameters, and a new family is its folder alone (no table elsewhere)."""

from __future__ import annotations

import inspect
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from reprotune import tasks
from reprotune.tasks import base

ROOT = Path(__file__).resolve().parents[1]
MODULES = {
    "params": base.ParamsModule,
    "sources": base.SourcesModule,
    "preprocess": base.PreprocessModule,
    "metrics": base.MetricsModule,
    "analysis": base.AnalysisModule,
}


def members(protocol: type) -> dict[str, Any]:
    """A Protocol's names: annotated attributes (None) and methods (the function)."""
    names: dict[str, Any] = {name: None for name in getattr(protocol, "__annotations__", {})}
    for name, value in vars(protocol).items():
        if not name.startswith("_") and callable(value):
            names[name] = value
    return names


def parameters(function: Any, drop_self: bool) -> list[tuple[str, Any]]:
    params = list(inspect.signature(function).parameters.values())[1 if drop_self else 0 :]
    return [(p.name, p.kind) if p.kind is not inspect.Parameter.POSITIONAL_ONLY else ("", p.kind) for p in params]


@pytest.mark.parametrize("family", tasks.FAMILIES)
@pytest.mark.parametrize("part", sorted(MODULES))
def test_every_family_module_provides_its_protocol(family: str, part: str) -> None:
    module = getattr(tasks, f"{part}_module" if part == "params" else part)(family)
    for name, declared in members(MODULES[part]).items():
        assert hasattr(module, name), f"reprotune/tasks/{family}/{part}.py lacks {name} ({MODULES[part].__name__})"
        value = getattr(module, name)
        if declared is None:
            continue
        if isinstance(inspect.getattr_static(MODULES[part], name), property):
            assert value is not None  # a module constant (PARAMS, META, HEADLINE)
            continue
        # Positional-only in the Protocol: the module may name them as it likes, but not add or drop one.
        wanted = parameters(declared, drop_self=True)
        got = parameters(value, drop_self=False)
        assert len(got) == len(wanted), f"{family}/{part}.{name}{inspect.signature(value)} against {wanted}"
        for (want_name, want_kind), (got_name, got_kind) in zip(wanted, got):
            if want_kind is inspect.Parameter.POSITIONAL_ONLY:
                assert got_kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            else:
                assert (got_name, got_kind) == (want_name, want_kind), f"{family}/{part}.{name}"


@pytest.mark.parametrize("family", tasks.FAMILIES)
def test_every_family_has_its_facts_and_one_task_family(family: str) -> None:
    facts = tasks.facts(family)
    for name, kind in get_type_hints(base.FamilyFacts).items():
        assert isinstance(getattr(facts, name, None), kind), f"reprotune/tasks/{family}/__init__.py: {name}"
    assert isinstance(tasks.family(family), base.TaskFamily)  # an ABC: every abstract method defined
    assert tasks.params_module(family).PARAMS.model_fields["type"].annotation.__args__ == (family,)


FAKE = {
    "__init__.py": '''
        """A fifth family for the test: classification under another name."""
        PIPELINE_TAG = "text-classification"
        TASK_NAME = "Fake classification"
        INT8_METRIC = True
    ''',
    "params.py": """
        from typing import Literal

        from reprotune.tasks.classification.params import META, PRETOKENIZED_INPUT, ClassificationTaskParams


        class FakeTaskParams(ClassificationTaskParams):
            type: Literal["fake"]  # type: ignore[assignment]


        PARAMS = FakeTaskParams
        __all__ = ["META", "PARAMS", "PRETOKENIZED_INPUT"]
    """,
    **{
        f"{part}.py": f"from reprotune.tasks.classification.{part} import *  # noqa: F403\n"
        f"from reprotune.tasks.classification.{part} import {names}  # noqa: F401\n"
        for part, names in {
            "sources": "SPLIT_GROUP_COLUMN, TEXT_FIELDS, load_raw, validate_raw",
            "preprocess": "prepare_meta, tokenize",
            "metrics": "HEADLINE, HEADLINE_KEYS, example_stats, score",
            "analysis": "analyse",
            "family": "FAMILY",
        }.items()
    },
}
CHECK = """
import yaml
from reprotune import tasks

assert "fake" in tasks.FAMILIES, tasks.FAMILIES
section = yaml.safe_load(open("params.yaml"))["tasks"]["bbcnews"]
task = tasks.validate_task("mine", {**section, "type": "fake"})
assert task.type == "fake" and tasks.family("fake") is tasks.family("classification")
assert tasks.metrics("fake").HEADLINE_KEYS == ("accuracy", "macro_f1", "mcc")
assert tasks.facts("fake").PIPELINE_TAG == "text-classification"
print(tasks.facts("fake").PIPELINE_TAG)
"""


def test_a_fifth_family_is_its_folder_alone(tmp_path: Path) -> None:
    """Copy the package, add `reprotune/tasks/fake/` (nothing else edited): the registry lists
    it, params accept it, and its modules and facts are found (the model card and export read
    the facts from there)."""
    shutil.copytree(ROOT / "reprotune", tmp_path / "reprotune", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    folder = tmp_path / "reprotune" / "tasks" / "fake"
    folder.mkdir()
    for name, text in FAKE.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=120, env={"PATH": ""}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "text-classification"
