"""The task families, looked up by `tasks.<name>.type`, and each stage's view of its task.

A stage imports only the family modules it runs (see `base.py`) and sees only the
params sections dvc.yaml declares for it (`STAGE_SECTIONS`): reading any other
section is an error at once, so a stage can never depend on a key DVC does not track.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError

from reprotune.core.errors import ReprotuneError, did_you_mean
from reprotune.core.params import (
    PARAMS_FILE,
    GateParams,
    PipelineParams,
    SearchRange,
    TaskParams,
    explain_validation_error,
    load_yaml,
    parse_pipeline,
    read_params,
)
from reprotune.core.params import (
    STAGE_SECTIONS as ALL_SECTIONS,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

    from reprotune.tasks.base import (
        AnalysisModule,
        FamilyFacts,
        MetricsModule,
        ParamsModule,
        PreprocessModule,
        SourcesModule,
        TaskFamily,
    )


def _discover() -> tuple[str, ...]:
    """The family folders: every package under reprotune/tasks/ (a folder with the six modules
    is all a new family takes; tests/test_families.py adds one)."""
    return tuple(sorted(info.name for info in pkgutil.iter_modules(__path__) if info.ispkg))


FAMILIES = _discover()

STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "fingerprint": ("model", "download"),
    "download": ("download",),
    "tokenize": ("model", "tokenize"),
    "search-full": ("model", "search", "train_full"),
    "search-lora": ("model", "search", "train_lora"),
    "train-full": ("model", "train_full"),
    "train-lora": ("model", "train_lora"),
    "baseline": ("model", "evaluate"),
    "evaluate-full": ("model", "evaluate"),
    "evaluate-lora": ("model", "evaluate"),
    "error-analysis": ("error_analysis",),
    "export-full": ("model", "export"),
    "export-lora": ("model", "export"),
}
"""The `tasks.<name>` sections each stage reads, besides `type`; dvc.yaml declares the same."""


def check_type(type_name: str, where: str = "type") -> str:
    if type_name not in FAMILIES:
        raise ReprotuneError(
            f"{PARAMS_FILE}: '{where}' is '{type_name}'{did_you_mean(type_name, FAMILIES)}; "
            f"allowed: {', '.join(sorted(FAMILIES))}"
        )
    return type_name


def _module(type_name: str, part: str) -> Any:
    return importlib.import_module(f"reprotune.tasks.{check_type(type_name)}.{part}")


def facts(type_name: str) -> FamilyFacts:
    """The family package's own facts (pipeline tag, task name, how export scores int8)."""
    return cast("FamilyFacts", importlib.import_module(f"reprotune.tasks.{check_type(type_name)}"))


def params_module(type_name: str) -> ParamsModule:
    return cast("ParamsModule", _module(type_name, "params"))


def sources(type_name: str) -> SourcesModule:
    return cast("SourcesModule", _module(type_name, "sources"))


def preprocess(type_name: str) -> PreprocessModule:
    return cast("PreprocessModule", _module(type_name, "preprocess"))


def metrics(type_name: str) -> MetricsModule:
    return cast("MetricsModule", _module(type_name, "metrics"))


def analysis(type_name: str) -> AnalysisModule:
    return cast("AnalysisModule", _module(type_name, "analysis"))


def family(type_name: str) -> TaskFamily[Any, Any]:
    return cast("TaskFamily[Any, Any]", _module(type_name, "family").FAMILY)


def parse_meta(type_name: str, data: dict[str, Any]) -> BaseModel:
    """meta.json (written by tokenize) as the family's typed Meta."""
    return params_module(type_name).META.model_validate(data)


def task_meta(task_name: str, type_name: str) -> BaseModel:
    """The Meta the tokenize stage wrote for `task_name` (data/<task>/tokenized/meta.json)."""
    from reprotune.core import paths
    from reprotune.core.arrow import read_meta

    return parse_meta(type_name, read_meta(paths.tokenized_dir(task_name)))


def task_tokenizer(task: TaskParams, name_or_path: str | None = None) -> Any:
    """The task's tokenizer (`model` section), or the one saved at `name_or_path` (an export),
    fast and pretokenized or not as the family reads its input."""
    from reprotune.modeling.tokenizer import load_tokenizer

    model = (
        task.model
        if name_or_path is None
        else task.model.model_copy(update={"name_or_path": name_or_path, "revision": None})
    )
    return load_tokenizer(model, pretokenized=params_module(task.type).PRETOKENIZED_INPUT)


def validate_task(name: str, section: Any) -> TaskParams:
    """Validate one `tasks.<name>` section against its family's schema."""
    if not isinstance(section, dict):
        raise ReprotuneError(f"{PARAMS_FILE}: 'tasks.{name}' must be a mapping of stage sections")
    if "type" not in section:
        raise ReprotuneError(f"{PARAMS_FILE}: 'tasks.{name}.type' is missing")
    model = params_module(check_type(str(section["type"]), where=f"tasks.{name}.type")).PARAMS
    try:
        task = model.model_validate(section)
    except ValidationError as exc:
        raise explain_validation_error(exc, model, f"tasks.{name}") from exc
    check_search_space(name, task)
    return task


def check_search_space(name: str, task: TaskParams) -> None:
    """Every value `search.full` / `search.lora` may try is one its train section accepts, so a
    bad choice (`r: [8, .inf]`, an unknown key) stops the first stage, not a trial after training."""
    for method, section in (("full", "train_full"), ("lora", "train_lora")):
        base = getattr(task, section)
        model = type(base)
        allowed = sorted(model.model_fields)
        for key, space in task.search.space(method).items():
            where = f"tasks.{name}.search.{method}.{key}"
            if key not in allowed:
                raise ReprotuneError(
                    f"{PARAMS_FILE}: '{where}' is not a key of {section}{did_you_mean(key, allowed)}; "
                    f"searchable: {', '.join(allowed)}"
                )
            if isinstance(space, SearchRange):  # suggest() draws whole numbers for an int key
                whole = model.model_fields[key].annotation is int
                values: list[Any] = [int(space.low), int(space.high)] if whole else [space.low, space.high]
            else:
                values = space
            for value in values:
                try:
                    model.model_validate({**base.model_dump(), key: value})
                except ValidationError as exc:
                    first = exc.errors()[0]
                    raise ReprotuneError(
                        f"{PARAMS_FILE}: '{where}' may try {value!r}, which {section}.{key} refuses: {first['msg']}"
                    ) from exc


def _sections(data: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(data) - {"pipeline", "tasks", "gate"})  # gate: reprotune-check's own section
    if unknown:
        hint = did_you_mean(unknown[0], ["pipeline", "tasks", "gate"])
        raise ReprotuneError(
            f"{PARAMS_FILE}: unknown top-level key '{unknown[0]}'{hint}; allowed: pipeline, tasks, gate"
        )
    sections = data.get("tasks") or {}
    if not isinstance(sections, dict):
        raise ReprotuneError(f"{PARAMS_FILE}: 'tasks' must be a mapping of task name to its sections")
    return sections


def load_pipeline(path: str | Path = PARAMS_FILE) -> PipelineParams:
    """`pipeline.tasks` checked against the task sections: every name defined, every family right."""
    data = read_params(path)
    sections = _sections(data)
    raw = data.get("pipeline") or {}
    if isinstance(raw, dict) and isinstance(raw.get("tasks"), list):
        example = ", ".join(f"{n}: {sections.get(n, {}).get('type', 'ner')}" for n in raw["tasks"][:2])
        raise ReprotuneError(
            f"{PARAMS_FILE}: pipeline.tasks maps each task to its family so dvc.yaml can depend on that "
            f"family's code; write it as {{{example}}}"
        )
    pipeline = parse_pipeline(raw)
    for name, type_name in pipeline.tasks.items():
        check_type(type_name, where=f"pipeline.tasks.{name}")
        if name not in sections:
            raise ReprotuneError(
                f"{PARAMS_FILE}: pipeline.tasks names '{name}' but there is no 'tasks.{name}' section"
                f"{did_you_mean(name, sections)}; defined: {', '.join(sorted(sections)) or 'none'}"
            )
        declared = sections[name].get("type") if isinstance(sections[name], dict) else None
        if declared != type_name:
            raise ReprotuneError(
                f"{PARAMS_FILE}: pipeline.tasks.{name} is '{type_name}' but tasks.{name}.type is '{declared}'; "
                "make them agree"
            )
    return pipeline


def load_all(path: str | Path = PARAMS_FILE) -> tuple[PipelineParams, dict[str, TaskParams]]:
    """Validate the whole params file, every task included (tests and `reprotune-check`)."""
    pipeline = load_pipeline(path)
    sections = _sections(read_params(path))
    return pipeline, {name: validate_task(name, section) for name, section in sections.items()}


def declared_sections(dvc_file: Path) -> dict[str, list[str]]:
    """`tasks.<task>` section -> the stages of dvc.yaml that declare it (`tasks.${key}.<section>`),
    `type` aside; empty without a dvc.yaml (a stage run outside a DVC project)."""
    if not dvc_file.exists():
        return {}
    stages = (load_yaml(dvc_file.read_text(encoding="utf-8")) or {}).get("stages") or {}
    found: dict[str, list[str]] = {}
    for stage_name, stage in stages.items():
        body = stage.get("do", stage) if isinstance(stage, dict) else {}
        entries: list[Any] = []
        for entry in body.get("params") or []:
            entries.extend(entry.get(PARAMS_FILE) or [] if isinstance(entry, dict) else [entry])
        for entry in entries:
            parts = str(entry).split(".")
            if len(parts) >= 3 and parts[0] == "tasks" and parts[1] == "${key}" and parts[2] != "type":
                found.setdefault(parts[2], []).append(stage_name)
    return found


def check_params_file(name: str, path: str | Path = PARAMS_FILE, dvc_file: str | Path = "dvc.yaml") -> None:
    """The params file's structure, for the first stage that runs (fingerprint): the top level,
    `pipeline` and `gate` (unknown keys included), and every section dvc.yaml declares for task
    `name`, all missing ones named at once. Otherwise DVC stops only at the stage that declares a
    missing section, after training, and a typo under `pipeline` shows only in compare. The task
    itself is validated by `load_task`; other tasks by their own fingerprint stages (validating
    them here would import their families' code, which this stage does not depend on)."""
    load_pipeline(path)
    data = read_params(path)
    try:
        GateParams.model_validate(data.get("gate") or {})
    except ValidationError as exc:
        raise explain_validation_error(exc, GateParams, "gate") from exc
    section = (data.get("tasks") or {}).get(name)
    if not isinstance(section, dict):
        return  # load_task names what is wrong
    declared = declared_sections(Path(dvc_file))
    missing = sorted(s for s in declared if s not in section)
    if missing:
        stages = sorted({f"{stage}@{name}" for s in missing for stage in declared[s]})
        lines = " and ".join(f"'{s}: {{}}'" for s in missing)
        raise ReprotuneError(
            f"{PARAMS_FILE}: tasks.{name} lacks {', '.join(missing)}, which dvc.yaml declares for "
            f"{', '.join(stages)}; add {lines} under tasks.{name} (the defaults)"
        )


class Undeclared:
    """Stands in for a params section the running stage does not declare in dvc.yaml."""

    def __init__(self, where: str, stage: str) -> None:
        self._where, self._stage = where, stage

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        raise ReprotuneError(
            f"internal: stage '{self._stage}' read '{self._where}.{key}', which dvc.yaml does not declare "
            f"for it; declared: {', '.join(STAGE_SECTIONS[self._stage])}"
        )


def load_task(name: str, stage: str | None = None, path: str | Path = PARAMS_FILE) -> TaskParams:
    """Validate `tasks.<name>` (every section, so any typo stops the stage) and return it.

    With `stage`, the sections that stage does not declare are replaced by `Undeclared`."""
    data = read_params(path)
    sections = _sections(data)
    if name not in sections:
        raise ReprotuneError(
            f"{PARAMS_FILE}: no section 'tasks.{name}'{did_you_mean(name, sections)}; "
            f"defined: {', '.join(sorted(sections)) or 'none'}"
        )
    task = validate_task(name, sections[name])
    if stage is None:
        return task
    if stage not in STAGE_SECTIONS:
        raise ReprotuneError(f"unknown stage '{stage}'; allowed: {', '.join(STAGE_SECTIONS)}")
    hidden = {
        s: Undeclared(f"tasks.{name}.{s}", stage) for s in (*ALL_SECTIONS, "gate") if s not in STAGE_SECTIONS[stage]
    }
    return task.model_copy(update=hidden)
