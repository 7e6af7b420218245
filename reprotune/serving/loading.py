"""A trained or exported model folder, checked file by file before anything loads it, so
a truncated, broken or missing file is named in one line (not a peft/safetensors traceback).

Loading itself is the pipeline's: `evaluation.evaluate.load_method_model` (the base model
built from params, `package:` names resolved there, plus the adapter) or the export stage's
ONNX files; an adapter's `base_model_name_or_path` is never used to find the base."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprotune import tasks
from reprotune.core import paths
from reprotune.core.errors import ReprotuneError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
FULL_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass
class Loaded:
    """What online prediction needs: the family, model, tokenizer, meta and task params."""

    family: Any
    model: Any
    tokenizer: Any
    meta: Any
    task: Any
    description: dict[str, Any]


def read_json_file(path: Path, rerun: str) -> Any:
    if not path.is_file():
        raise ReprotuneError(f"{path} is missing; {rerun}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ReprotuneError(f"{path} is not UTF-8 text; {rerun}") from None
    except json.JSONDecodeError as exc:
        raise ReprotuneError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); {rerun}") from None


def check_safetensors(path: Path, rerun: str) -> None:
    """Open the file's header and every tensor: a truncated file fails here, named."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                handle.get_slice(name)
    except Exception as exc:  # SafetensorError, OSError: both mean the file is unusable
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReprotuneError(f"{path} is not a readable safetensors file ({reason}); {rerun}") from None


def check_weights(directory: Path, names: tuple[str, ...], rerun: str) -> None:
    present = [directory / name for name in names if (directory / name).is_file()]
    if not present:
        raise ReprotuneError(f"{directory / names[0]} is missing; {rerun}")
    if present[0].suffix == ".safetensors":
        check_safetensors(present[0], rerun)


def read_meta(task: Any, run_info: Path, rerun: str) -> Any:
    info = read_json_file(run_info, rerun)
    if not isinstance(info, dict) or not isinstance(info.get("meta"), dict):
        raise ReprotuneError(f"{run_info} has no 'meta' object; {rerun}")
    try:
        return tasks.parse_meta(task.type, info["meta"])
    except ReprotuneError:
        raise
    except Exception as exc:  # a pydantic ValidationError: the meta does not fit the family
        raise ReprotuneError(f"{run_info}: 'meta' does not fit a {task.type} task; {rerun}") from exc


def check_checkpoint(directory: Path, method: str, rerun: str) -> None:
    """The files `load_method_model` reads for `full` or `lora`, each present and readable."""
    if method == "lora":
        read_json_file(directory / ADAPTER_CONFIG, rerun)
        check_weights(directory, ADAPTER_WEIGHTS, rerun)
    else:
        read_json_file(directory / "config.json", rerun)
        check_weights(directory, FULL_WEIGHTS, rerun)


def load(
    task_name: str,
    method: str,
    fmt: str = "checkpoint",
    params_path: str = "params.yaml",
    int8: bool = False,
    threads: int | None = None,
) -> Loaded:
    """`checkpoint`: models/<task>/<method> (full, or base + adapter); `onnx`:
    models/<task>/export-<method>/onnx/model.onnx (model_int8.onnx with int8), on `threads`
    onnxruntime threads."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar is noise before one-line errors
    task = tasks.load_task(task_name, path=params_path)
    family = tasks.family(task.type)
    if fmt == "onnx":
        from reprotune.export.outputs import export_dir
        from reprotune.export.runtime import load_onnx_model

        directory = export_dir(task_name, method)
        rerun = f"run the export stage again (dvc repro export-{method}@{task_name})"
        meta = read_meta(task, directory / paths.RUN_INFO, rerun)
        tokenizer = tasks.task_tokenizer(task, str(directory))
        model: Any = load_onnx_model(directory, int8=int8, threads=threads)
    elif fmt == "checkpoint":
        if int8:
            raise ReprotuneError("int8 needs --format onnx")
        directory = paths.model_dir(task_name, method)
        rerun = f"train it again (dvc repro train-{method}@{task_name})"
        meta = read_meta(task, directory / paths.RUN_INFO, rerun)
        check_checkpoint(directory, method, rerun)
        tokenizer = tasks.task_tokenizer(task)
        from reprotune.evaluation.evaluate import load_method_model

        try:
            model = load_method_model(task_name, method, task, family, meta)
        except ReprotuneError:
            raise
        except Exception as exc:  # a file the checks above passed but the loader refused
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ReprotuneError(f"{directory}: the {method} model does not load ({reason}); {rerun}") from exc
    else:
        raise ReprotuneError(f"unknown format '{fmt}'; allowed: checkpoint, onnx")
    from reprotune.evaluation.evaluate import tuned_task

    # what evaluate chose on validation for this method (QA's no-answer margin), as the test was scored
    task = tuned_task(task_name, method, task, family)
    description = {
        "task": task_name,
        "family": task.type,
        "method": method,
        "format": fmt,
        "int8": int8,
        "fields": list(family.predict_fields),
    }
    return Loaded(family, model, tokenizer, meta, task, description)
