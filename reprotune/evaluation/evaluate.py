"""Evaluate a method on the test split: predictions table, metrics from it (each headline
metric with its bootstrap confidence interval, copies of one text resampled as one), and the
cost figures recorded at training time."""

from __future__ import annotations

import json
import time
from typing import Any

from reprotune import tasks
from reprotune.core import paths
from reprotune.core.arrow import load_dataset_dir
from reprotune.core.atomic import write_frame, write_json
from reprotune.core.params import TaskParams
from reprotune.core.paths import TRAIN_INFO
from reprotune.evaluation.clusters import TestClusters, load_test_clusters
from reprotune.evaluation.seeding import seed_everything
from reprotune.evaluation.uncertainty import add_intervals
from reprotune.modeling.model import count_parameters
from reprotune.modeling.precision import resolve
from reprotune.modeling.trained import load_trained
from reprotune.tasks.base import TaskFamily


def load_method_model(task_name: str, method: str, task: TaskParams, family: TaskFamily[Any, Any], meta: Any) -> Any:
    """baseline: the pretrained encoder with a fresh head; full and lora: the trained model."""
    if method == "baseline":
        seed_everything(task.evaluate.seed)
        return family.build_model(task, meta)
    return load_trained(task_name, method, task, family, meta)


def with_intervals(
    metrics: dict[str, Any], predictions: Any, meta: Any, task: TaskParams, clusters: TestClusters | None = None
) -> dict[str, Any]:
    """`metrics` with `<key>_ci_low` / `<key>_ci_high` added for every headline key of the family
    (seeded percentile bootstrap over test examples, `evaluate.bootstrap`; over clusters of
    duplicate texts where `clusters` matches the statistics rows); the keys already there keep
    their values and order. No test example or `resamples: 0`: no interval keys."""
    settings = task.evaluate.bootstrap
    family = tasks.metrics(task.type)
    labels = None
    if clusters is not None and settings.resamples:
        labels = clusters.for_table(predictions, len(family.example_stats(predictions, meta)))
    return add_intervals(
        metrics, family, predictions, meta, settings.resamples, settings.seed, settings.level, clusters=labels
    )


def tuned_task(task_name: str, method: str, task: TaskParams, family: TaskFamily[Any, Any]) -> TaskParams:
    """`task` with what the evaluate stage chose on validation for this model (recorded in its
    metrics file) applied, so predict and serve post-process as the test was scored."""
    recorded = paths.metrics_file(task_name, method)
    if not recorded.is_file():
        return task
    return family.with_tuned(task, json.loads(recorded.read_text(encoding="utf-8")))


def evaluate(task_name: str, method: str, task: TaskParams) -> dict[str, Any]:
    paths.check_method(method, paths.EVAL_METHODS)
    evaluated = resolve(task.evaluate.precision, f"tasks.{task_name}.evaluate.precision")
    tokenized_path = paths.tokenized_dir(task_name)
    tokenized = load_dataset_dir(tokenized_path, "tokenize")
    raw_splits = load_dataset_dir(paths.raw_dir(task_name), "download")
    features, raw = tokenized["test"], raw_splits["test"]
    family = tasks.family(task.type)
    meta = tasks.task_meta(task_name, task.type)
    tokenizer = tasks.task_tokenizer(task)
    model = load_method_model(task_name, method, task, family, meta)
    # Settings the family chooses on validation (QA's no-answer margin), applied unchanged to test.
    tuned = family.tune_on_validation(model, tokenizer, raw_splits["validation"], tokenized["validation"], meta, task)
    task = family.with_tuned(task, tuned)

    started = time.perf_counter()
    predictions = family.predict(model, tokenizer, raw, features, meta, task)
    seconds = time.perf_counter() - started
    clusters = load_test_clusters(task_name, raw["id"][:] if "id" in raw.column_names else None)
    metrics = with_intervals(tasks.metrics(task.type).score(predictions, meta, task), predictions, meta, task, clusters)
    metrics.update(tuned)
    # Which arithmetic made these numbers, so a diff between two machines explains itself.
    metrics.update(eval_precision=evaluated.dtype, eval_device=evaluated.device, cpu_bf16=evaluated.cpu_bf16)

    cost: dict[str, Any] = {
        "eval_seconds": round(seconds, 2),
        "eval_precision": evaluated.dtype,
        "eval_examples_per_second": round(len(raw) / seconds, 2) if seconds > 0 else None,
    }
    info_file = paths.model_dir(task_name, method) / TRAIN_INFO
    if method != "baseline" and info_file.exists():
        cost.update(json.loads(info_file.read_text(encoding="utf-8")))
    else:
        cost.update(count_parameters(model))

    write_frame(paths.predictions_file(task_name, method), predictions)
    write_json(paths.metrics_file(task_name, method), metrics)
    write_json(paths.cost_file(task_name, method), cost)
    return metrics
