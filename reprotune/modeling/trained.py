"""A trained model back from its DVC out, the one way evaluate, export, predict and serve load it."""

from __future__ import annotations

from typing import Any

from reprotune.core import paths
from reprotune.core.errors import ReprotuneError
from reprotune.core.params import TaskParams


def load_trained(task_name: str, method: str, task: TaskParams, family: Any, meta: Any) -> Any:
    """full: the checkpoint (models/<task>/full); lora: the base model params name, with the
    adapter and head from models/<task>/lora (peft), never the base its config records."""
    directory = paths.model_dir(task_name, method)
    if not directory.is_dir():
        raise ReprotuneError(f"{directory} is missing; run the train-{method} stage first (dvc repro)")
    if method == "full":
        return family.build_model(task, meta, source=str(directory))
    from peft import PeftModel

    return PeftModel.from_pretrained(family.build_model(task, meta), str(directory))
