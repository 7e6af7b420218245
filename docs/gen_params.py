"""The params reference page, generated from the pydantic schema (reprotune/core/params.py and
each family's reprotune/tasks/<family>/params.py) so it cannot drift from what the stages
validate: every model, every field with its type, constraints, default and description.

docs/hooks.py adds the page to the site at build time (`mkdocs build`), so no generated
file is committed; `python docs/gen_params.py` prints it. tests/test_docs.py checks every
field of every model appears.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from reprotune.tasks import FAMILIES  # every family folder

MODULES = ("reprotune.core.params", *(f"reprotune.tasks.{family}.params" for family in FAMILIES))
PAGE = "reference/params.md"
CONSTRAINTS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤", "min_length": "length ≥", "max_length": "length ≤"}


def models(module_name: str) -> list[type[BaseModel]]:
    """The pydantic models a module defines (aliases such as `PARAMS = NerTaskParams` once), in source order."""
    module = importlib.import_module(module_name)
    found = [
        obj
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseModel)
        and obj.__module__ == module_name
        and obj.__name__ == name
    ]
    return sorted(found, key=lambda cls: inspect.getsourcelines(cls)[1])


def _nested(annotation: Any) -> Iterator[tuple[str, type[BaseModel]]]:
    """Models inside an annotation, with the path suffix they sit at (`.<key>` for dict values)."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        yield "", annotation
        return
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is dict and len(args) == 2:
        for suffix, model in _nested(args[1]):
            yield ".<name>" + suffix, model
    elif origin in (list, tuple):
        for arg in args:
            yield from (("[]" + s, m) for s, m in _nested(arg))
    elif origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in args:
            yield from _nested(arg)


def key_paths() -> dict[type[BaseModel], set[str]]:
    """Where each model sits in params.yaml: walk `pipeline` and each family's `tasks.<task>`."""
    from reprotune.core.params import PipelineParams

    roots: list[tuple[str, type[BaseModel]]] = [("pipeline", PipelineParams)]
    for family in FAMILIES:
        module = importlib.import_module(f"reprotune.tasks.{family}.params")
        roots.append(("tasks.<task>", module.PARAMS))
    paths: dict[type[BaseModel], set[str]] = {}
    todo = list(roots)
    while todo:
        path, model = todo.pop()
        if path in paths.setdefault(model, set()):
            continue
        paths[model].add(path)
        for name, field in model.model_fields.items():
            for suffix, inner in _nested(field.annotation):
                todo.append((f"{path}.{name}{suffix}", inner))
    return paths


def type_text(annotation: Any) -> str:
    """`int | None`, `'a' | 'b'`, `dict[str, float]`: the annotation as a reader writes it."""
    if annotation is type(None):
        return "None"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        limits = _limits(args[1:])
        return type_text(args[0]) + (f" ({limits})" if limits else "")
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(arg) for arg in args)
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in args)
    if origin is not None and args:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_text(arg) for arg in args)}]"
    if inspect.isclass(annotation):
        return annotation.__name__
    return re.sub(r"\b(typing|reprotune)\.([\w.]*\.)?", "", repr(annotation))


def _limits(metadata: Any) -> str:
    """`> 0, ≤ 1` from annotated-types constraints (or a FieldInfo holding them)."""
    parts = []
    for item in metadata:
        for inner in getattr(item, "metadata", None) or [item]:
            for attr, symbol in CONSTRAINTS.items():
                value = getattr(inner, attr, None)
                if value is not None:
                    parts.append(f"{symbol} {value}")
    return ", ".join(parts)


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "required"
    if isinstance(value, BaseModel):
        value = value.model_dump()
    return f"`{json.dumps(value, ensure_ascii=False, default=str)}`"  # as YAML reads it: null, false


def _cell(text: str) -> str:
    """Text for a table cell: pipes outside code spans escaped (inside them they are literal)."""
    parts = text.replace("\n", " ").split("`")
    return "`".join(part if index % 2 else part.replace("|", "\\|") for index, part in enumerate(parts))


def model_section(model: type[BaseModel], paths: set[str]) -> list[str]:
    """A heading, the model's docstring, where it sits, and one row per field."""
    lines = [f"### {model.__name__}", ""]
    doc = inspect.getdoc(model)
    if doc and model.__doc__:  # its own docstring, not BaseModel's
        lines += [doc.split("\n\n")[0].replace("\n", " "), ""]
    if paths:
        lines += ["In params.yaml at " + ", ".join(f"`{p}`" for p in sorted(paths)) + ".", ""]
    if not model.model_fields:
        return [*lines, "(no keys of its own)", ""]
    lines += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        kind = type_text(field.annotation)
        limits = _limits(field.metadata)
        kind = f"`{kind}`" + (f" ({limits})" if limits else "")
        description = field.description or ""
        lines.append(f"| `{name}` | {_cell(kind)} | {_cell(_default(field))} | {_cell(description)} |")
    return [*lines, ""]


def render() -> str:
    """The whole reference page as Markdown."""
    paths = key_paths()
    lines = [
        "# params.yaml reference",
        "",
        "Generated from the pydantic models every stage validates `params.yaml` with",
        "(`reprotune/core/params.py` and `reprotune/tasks/<family>/params.py`) when the site is",
        "built, so it lists exactly the keys the code accepts. A family's model extends the shared",
        "one of the same section: `NerDownloadParams` has every key of `DownloadParams` plus its",
        "own. Defaults are written as YAML reads them (`null`, `false`); `None` in a type is `null`.",
        "An unknown key is refused with one line naming it (see",
        "[Troubleshooting](../troubleshooting.md)); [params.yaml](../params.md) explains the sections.",
        "",
    ]
    titles = {"reprotune.core.params": "Shared by every family"}
    for module_name in MODULES:
        family = module_name.split(".")[2] if module_name.startswith("reprotune.tasks.") else None
        lines += [
            f"## {titles.get(module_name, f'Family `{family}`')}",
            "",
            f"Source: `{module_name.replace('.', '/')}.py`.",
            "",
        ]
        for model in models(module_name):
            lines += model_section(model, paths.get(model, set()))
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
