"""An onnxruntime session that a family's `predict` / `predict_records` calls like a
transformers model: `model(**batch)` returns an object with `.logits` (or
`.start_logits` / `.end_logits`) as CPU torch tensors, and `.eval()`, `.to()`,
`.config`, `.device` exist so `reprotune.modeling.inference.batches` accepts it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprotune.core.errors import ReprotuneError

ONNX_DIR = "onnx"
ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"


class OnnxOutput(dict):
    """Outputs by name, readable as attributes like a transformers ModelOutput."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    if not Path(path).is_file():
        raise ReprotuneError(f"{path} is missing; run the export stage first (dvc repro export-<method>@<task>)")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ReprotuneError(f"{path} is not a loadable ONNX model: {str(exc).splitlines()[0]}") from exc


class OnnxModel:
    """`model(**batch)` on onnxruntime (CPU). Inputs the graph lacks are ignored;
    `token_type_ids` the graph needs but the batch lacks are zeros."""

    training = False

    def __init__(self, path: str | os.PathLike[str], config: Any = None, threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = session(self.path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        if config is None:
            config = _config_beside(self.path)
        self.config = config
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        if mode:
            raise ReprotuneError("an ONNX model cannot be trained")
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxModel:
        """Stays on the CPU: outputs come back as CPU tensors whatever device is asked for."""
        return self

    def parameters(self) -> Any:
        return iter(())

    def __call__(self, **batch: Any) -> OnnxOutput:
        if "input_ids" not in batch:
            raise ReprotuneError("the ONNX model needs input_ids")
        shape = tuple(batch["input_ids"].shape)
        feed = {}
        for name in self.input_names:
            value = batch.get(name)
            if value is None:
                if name != "token_type_ids":
                    raise ReprotuneError(f"the ONNX model needs input '{name}'")
                feed[name] = np.zeros(shape, dtype=np.int64)
            else:
                feed[name] = (
                    value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
                ).astype(np.int64, copy=False)
        results = self.session.run(self.output_names, feed)
        return OnnxOutput(
            {name: torch.from_numpy(np.ascontiguousarray(out)) for name, out in zip(self.output_names, results)}
        )

    forward = __call__


def _config_beside(path: Path) -> Any:
    """The transformers config of the checkpoint the ONNX file was exported beside (id2label...)."""
    for folder in (path.parent, path.parent.parent):
        if (folder / "config.json").is_file():
            from transformers import AutoConfig

            return AutoConfig.from_pretrained(str(folder))
    return None


def onnx_path(export_dir: Path, int8: bool = False) -> Path:
    return Path(export_dir) / ONNX_DIR / (INT8_FILE if int8 else ONNX_FILE)


def load_onnx_model(export_dir: Path, int8: bool = False, threads: int | None = None) -> OnnxModel:
    """The exported model of `models/<task>/export-<method>/` as an OnnxModel."""
    return OnnxModel(onnx_path(export_dir, int8), threads=threads)


class Predictor:
    """A loaded model with what the family's `predict_records` needs, called per request."""

    def __init__(self, family: Any, model: Any, tokenizer: Any, meta: Any, task: Any, description: dict[str, Any]):
        import threading

        self.family, self.model, self.tokenizer, self.meta, self.task = family, model, tokenizer, meta, task
        self.description = description
        self._lock = threading.Lock()

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.family.predict_fields)

    def __call__(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self._lock:
            try:
                return self.family.predict_records(self.model, self.tokenizer, records, self.meta, self.task)
            except NotImplementedError as exc:
                raise ReprotuneError(str(exc)) from exc


def load_predictor(
    task_name: str,
    method: str,
    fmt: str = "checkpoint",
    params_path: str = "params.yaml",
    int8: bool = False,
    threads: int | None = None,
) -> Predictor:
    """`checkpoint`: the trained model as `reprotune-predict` loads it (full, or base + adapter);
    `onnx`: models/<task>/export-<method>/onnx/model.onnx (or model_int8.onnx), with the
    tokenizer and labels saved beside it."""
    import json

    from reprotune import tasks
    from reprotune.core import paths
    from reprotune.modeling.tokenizer import load_tokenizer

    task = tasks.load_task(task_name, path=params_path)
    family = tasks.family(task.type)
    pretokenized = tasks.params_module(task.type).PRETOKENIZED_INPUT
    if fmt == "onnx":
        directory = Path("models") / task_name / f"export-{method}"
        run_info = directory / paths.RUN_INFO
        if not run_info.is_file():
            raise ReprotuneError(
                f"{directory} is missing; run the export stage first (dvc repro export-{method}@{task_name})"
            )
        meta = tasks.parse_meta(task.type, json.loads(run_info.read_text(encoding="utf-8"))["meta"])
        tokenizer = load_tokenizer(
            task.model.model_copy(update={"name_or_path": str(directory), "revision": None}), pretokenized=pretokenized
        )
        model: Any = load_onnx_model(directory, int8=int8, threads=threads)
    elif fmt == "checkpoint":
        if int8:
            raise ReprotuneError("int8 needs --format onnx")
        from reprotune.evaluation.evaluate import load_method_model

        run_info = paths.model_dir(task_name, method) / paths.RUN_INFO
        if not run_info.is_file():
            raise ReprotuneError(f"{run_info.parent} is missing; train it first (dvc repro train-{method}@{task_name})")
        meta = tasks.parse_meta(task.type, json.loads(run_info.read_text(encoding="utf-8"))["meta"])
        tokenizer = load_tokenizer(task.model, pretokenized=pretokenized)
        model = load_method_model(task_name, method, task, family, meta)
    else:
        raise ReprotuneError(f"unknown format '{fmt}'; allowed: checkpoint, onnx")
    description = {
        "task": task_name,
        "family": task.type,
        "method": method,
        "format": fmt,
        "int8": int8,
        "fields": list(family.predict_fields),
    }
    return Predictor(family, model, tokenizer, meta, task, description)
