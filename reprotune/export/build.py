"""The export stage's work for one task and method: merged checkpoint, ONNX and int8
files, parity checks, sizes and latency, model card; optionally the Hub push.

It reads only the task's `type`, `model` and `export` params, plus files on disk: the
trained model, the test split (raw and tokenized), the metrics JSON, the download report
and dvc.lock (for the card)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from reprotune import tasks
from reprotune.core import paths
from reprotune.core.arrow import load_dataset_dir
from reprotune.core.atomic import atomic_dir, write_json
from reprotune.core.errors import ReprotuneError
from reprotune.core.params import TaskParams
from reprotune.export import card, latency, parity
from reprotune.export.merge import merge_lora, save_checkpoint
from reprotune.export.onnx import export_onnx, input_names, output_names, quantize_int8
from reprotune.export.outputs import export_dir, export_metrics_file
from reprotune.export.params import ExportParams
from reprotune.export.runtime import OnnxModel, onnx_path
from reprotune.modeling.trained import load_trained


def with_evaluate(task: TaskParams, settings: ExportParams) -> TaskParams:
    """The task with the family's default evaluate section (batch size from export, fp32):
    the same post-processing for PyTorch and int8, read from no undeclared param."""
    section: Any = type(task).model_fields["evaluate"].annotation
    evaluate = section.model_validate({"batch_size": settings.batch_size, "precision": "fp32"})
    return task.model_copy(update={"evaluate": evaluate})


def family_metric(
    family: Any, type_name: str, model: Any, tokenizer: Any, raw: Any, features: Any, meta: Any, task: TaskParams
) -> float:
    table = family.predict(model, tokenizer, raw, features, meta, task)
    scores = tasks.metrics(type_name).score(table, meta, task)
    value = scores.get(family.default_metric)
    if not isinstance(value, (int, float)):
        raise ReprotuneError(f"parity: the {type_name} metrics have no number '{family.default_metric}'")
    return float(value)


def run_export(task_name: str, method: str, task: TaskParams, root: Path = Path(".")) -> dict[str, Any]:
    import torch

    paths.check_method(method)
    settings: ExportParams = task.export
    if settings.quantize_int8 and not settings.onnx:
        raise ReprotuneError("params.yaml: export.quantize_int8 needs export.onnx: true")
    family = tasks.family(task.type)
    tokenized = paths.tokenized_dir(task_name)
    features = load_dataset_dir(tokenized, "tokenize")["test"]
    raw = load_dataset_dir(paths.raw_dir(task_name), "download")["test"]
    meta = tasks.task_meta(task_name, task.type)
    tokenizer = tasks.task_tokenizer(task)
    trained = load_trained(task_name, method, task, family, meta).to("cpu").eval()
    merged = merge_lora(copy.deepcopy(trained)) if method == "lora" else trained
    threads = settings.threads or torch.get_num_threads()
    collate = family.collator(tokenizer, task, meta)
    run_info_file = paths.model_dir(task_name, method) / paths.RUN_INFO
    run_info = (
        json.loads(run_info_file.read_text(encoding="utf-8"))
        if run_info_file.is_file()
        else {"task": task_name, "base_model": task.model.name_or_path, "meta": meta.model_dump(mode="json")}
    )
    run_info.update({"method": method, "exported": True})

    target = export_dir(task_name, method)
    with atomic_dir(target) as out:
        save_checkpoint(merged, tokenizer, out, run_info)
        inputs, outputs = input_names(merged, tokenizer), output_names(merged)
        candidates: dict[str, Any] = {"merged": merged} if method == "lora" else {}
        onnx_info: dict[str, Any] = {}
        if settings.onnx:
            onnx_info = export_onnx(merged, tokenizer, onnx_path(out), settings.opset)
            candidates["onnx"] = OnnxModel(onnx_path(out), config=merged.config, threads=threads)
            if settings.quantize_int8:
                quantize_int8(onnx_path(out), onnx_path(out, int8=True))
                candidates["int8"] = OnnxModel(onnx_path(out, int8=True), config=merged.config, threads=threads)

        # parity ------------------------------------------------------------------
        with latency.torch_threads(threads):
            reports = parity.compare(
                trained,
                candidates,
                features,
                collate,
                settings.batch_size,
                inputs,
                outputs,
                settings.tie_margin,
                settings.parity_examples,
                family.model_columns(),
            )
        for name in ("merged", "onnx"):
            if name in reports:
                parity.check_identical(reports[name], "merged LoRA" if name == "merged" else "fp32 ONNX")
        if "int8" in candidates:
            if tasks.facts(task.type).INT8_METRIC:
                scored = with_evaluate(task, settings)
                with latency.torch_threads(threads):
                    reference = family_metric(family, task.type, merged, tokenizer, raw, features, meta, scored)
                    quantized = family_metric(
                        family, task.type, candidates["int8"], tokenizer, raw, features, meta, scored
                    )
                metric_name = family.default_metric
            else:
                metric_name = "label_accuracy"
                scores = reports["pytorch"].get(metric_name), reports["int8"].get(metric_name)
                if scores[0] is None or scores[1] is None:
                    raise ReprotuneError("parity: the test features carry no labels to score int8 against")
                reference, quantized = float(scores[0]), float(scores[1])
            reports["int8"]["metric"] = parity.check_metric(metric_name, reference, quantized, settings.int8_tolerance)
        reports.pop("pytorch", None)

        # size and latency ---------------------------------------------------------
        single, batched = latency.inputs(
            features, collate, settings.latency_examples, settings.batch_size, inputs, family.model_columns()
        )
        timings = {"pytorch": latency.measure_torch(merged, single, batched, threads)}
        for name in ("onnx", "int8"):
            if name in candidates:
                timings[name] = latency.measure(candidates[name], single, batched)
        sizes = {"pytorch": latency.weights_bytes(out)}
        if method == "lora":
            sizes["adapter"] = latency.weights_bytes(paths.model_dir(task_name, method))
        for name in ("onnx", "int8"):
            if name in candidates:
                sizes[name] = latency.size_bytes(onnx_path(out, int8=name == "int8"))
        metrics = {
            "size_bytes": sizes,
            "latency": timings,
            "parity": reports,
            "threads": threads,
            "onnx": onnx_info,
            "test_features": len(features),
        }

        artifacts = ["model", *(name for name in ("onnx", "int8") if name in candidates)]
        info = card.gather(
            task_name, method, task.type, task.model, meta.model_dump(mode="json"), metrics, root, artifacts
        )
        (out / "README.md").write_text(card.render(info), encoding="utf-8")

    write_json(export_metrics_file(task_name, method), metrics)
    if settings.push_to_hub:
        from reprotune.export.push import push

        metrics["hub"] = push(target, settings.push_to_hub, list(settings.hub_artifacts), settings.hub_private)
    return metrics
