"""Arrow dataset directories that stages hand to each other: saved atomically, loaded with a hint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import DatasetDict, load_from_disk

from reprotune.core.atomic import atomic_dir
from reprotune.core.errors import ReprotuneError

SPLITS = ("train", "validation", "test")


def save_dataset(dataset: DatasetDict, target: Path, extra_json: dict[str, Any] | None = None) -> None:
    """save_to_disk into a temporary directory, then rename into place."""
    with atomic_dir(target) as tmp:
        dataset.save_to_disk(str(tmp))
        for name, payload in (extra_json or {}).items():
            (tmp / name).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_dataset_dir(path: Path, stage_hint: str) -> DatasetDict:
    if not path.exists():
        raise ReprotuneError(f"{path} is missing; run the {stage_hint} stage first (dvc repro)")
    return load_from_disk(str(path))


def read_meta(tokenized: Path) -> dict[str, Any]:
    return json.loads((tokenized / "meta.json").read_text(encoding="utf-8"))
