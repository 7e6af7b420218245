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
