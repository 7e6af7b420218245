"""The task families, looked up by `tasks.<name>.type` in params.yaml."""

from __future__ import annotations

import importlib

from reprotune.core.errors import ReprotuneError, did_you_mean
from reprotune.tasks.base import TaskFamily

FAMILY_MODULES = {
    "ner": "reprotune.tasks.ner",
    "mlm": "reprotune.tasks.mlm",
    "qa": "reprotune.tasks.qa",
    "classification": "reprotune.tasks.classification",
}


def get_family(type_name: str, where: str = "type") -> TaskFamily:
    """Import the family module for a task type; an unknown type names the allowed ones."""
    if type_name not in FAMILY_MODULES:
        allowed = ", ".join(sorted(FAMILY_MODULES))
        raise ReprotuneError(
            f"params.yaml: '{where}' is '{type_name}'{did_you_mean(type_name, FAMILY_MODULES)}; allowed: {allowed}"
        )
    return importlib.import_module(FAMILY_MODULES[type_name]).FAMILY
