"""The search stage's outcome as the train stage reads it; light, so a switched-off search
stage and the train stage's start import no torch for it."""

from __future__ import annotations

import json
from typing import Any

from reprotune.core import paths
from reprotune.core.errors import ReprotuneError


def disabled() -> dict[str, Any]:
    """What the stage writes with `search.enabled: false`: the train section is used as written."""
    return {"summary": {"enabled": False, "chosen": {}}, "trials": [], "cost": {"search_seconds": 0.0}}


def chosen_overrides(task_name: str, method: str) -> dict[str, Any]:
    """The search stage's chosen settings for the train stage ({} when the search is off)."""
    file = paths.search_file(task_name, method)
    try:
        summary = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ReprotuneError(f"{file} is missing; run the search-{method} stage first (dvc repro)") from exc
    except ValueError as exc:
        raise ReprotuneError(f"{file} is not valid JSON ({exc}); run the search-{method} stage again") from exc
    if not isinstance(summary, dict) or not isinstance(summary.get("chosen", {}), dict):
        raise ReprotuneError(f"{file}: 'chosen' must be a mapping of train keys; run the search-{method} stage again")
    return dict(summary.get("chosen", {})) if summary.get("enabled") else {}
