"""`--quality`: does the fast training path cost accuracy? Train one NER model on a
WikiANN subset twice, from the same initial weights and with the same hyper-parameters
(params.yaml's `wikiann_local` task), once with the project's TrainingArguments and once
with the seed notebooks' speed settings (fp32, no TF32, random sampling, non-fused AdamW,
no pad-to-8), and score both on the same test sentences with the pipeline's own predict
and score. The batches are also drawn in a different order (length grouping), so the F1
difference includes seed-like noise; the tolerance is stated with the result.

`--quality-compare precision` trains the train stage's path twice instead, in fp32 and in
bf16 autocast (a CPU with native bf16 or a GPU), each evaluated at its own precision as the
evaluate stage would. Either way the result carries the paired bootstrap interval of the
F1 difference over the test sentences (per-sentence entity tp/fp/fn, additive headline)."""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict
from throughput_align import wikiann
from throughput_device import MemoryMeter, PrecisionFlags, cuda
from throughput_train import quiet

from reprotune.core.params import read_params
from reprotune.evaluation.uncertainty import additive, paired_difference, verdict
from reprotune.modeling.precision import cpu_bf16_support, resolve
from reprotune.modeling.tokenizer import load_tokenizer
from reprotune.sources.splits import limit_samples
from reprotune.tasks import validate_task
from reprotune.training.train import ordered_eval_trainer, training_arguments

TASK = "wikiann_local"
SPLIT_FILES = {"train": "train", "validation": "dev", "test": "test"}


def task_params(repo: Path, model_ref: str, sizes: dict[str, int], epochs: float | None) -> Any:
    """params.yaml's wikiann_local section with the model and subset sizes of this run."""
    section = dict(read_params(repo / "params.yaml")["tasks"][TASK])
    section["model"] = {**section["model"], "name_or_path": model_ref}
    section["download"] = {**section["download"], "max_samples": sizes}
    if epochs is not None:
        section["train_full"] = {**section["train_full"], "epochs": epochs}
    return validate_task(TASK, section)


def seed_style_arguments(params: Any, output_dir: Path) -> Any:
    """The same schedule, selection and hyper-parameters as training_arguments, with the
    notebooks' speed settings: fp32, random sampling, adamw_torch, default workers; TF32 is
    left at torch's default (off for matmuls), restored by train_and_score."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        seed=params.seed,
        data_seed=params.seed,
        num_train_epochs=params.epochs,
        learning_rate=params.learning_rate,
        per_device_train_batch_size=params.batch_size,
        per_device_eval_batch_size=params.eval_batch_size,
        weight_decay=params.weight_decay,
        warmup_steps=params.warmup if params.warmup < 1 else int(params.warmup),
        lr_scheduler_type=params.lr_scheduler,
        max_grad_norm=params.max_grad_norm,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="f1",
        greater_is_better=True,
        optim="adamw_torch",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not cuda(),
        remove_unused_columns=False,
    )


PAIRS = {"styles": ("seed", "fast"), "precision": ("fp32", "bf16")}
"""--quality-compare: the two paths trained, a then b; the difference is b - a."""
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@additive("tp", "fp", "fn")
def entity_f1(sums: Any, n_rows: int) -> dict[str, Any]:
    """Micro entity F1 from summed per-sentence counts (the score() F1, unrounded)."""
    denominator = 2 * sums["tp"] + sums["fp"] + sums["fn"]
    return {"f1": np.where(denominator > 0, 2 * sums["tp"] / np.where(denominator > 0, denominator, 1), 0.0)}


def sentence_counts(predictions: Any) -> Any:
    """Per test sentence: strict-IOB2 entities right (tp), predicted but wrong (fp), missed (fn)."""
    import pandas as pd

    from reprotune.tasks.ner.metrics import entities

    rows = []
    for gold_tags, pred_tags in zip(predictions["gold"], predictions["pred"]):
        gold, pred = entities(list(gold_tags)), entities(list(pred_tags))
        rows.append({"tp": len(gold & pred), "fp": len(pred - gold), "fn": len(gold - pred)})
    return pd.DataFrame(rows, columns=["tp", "fp", "fn"])


def paired_f1(results: dict[str, dict[str, Any]], names: tuple[str, str], level: float = 0.95) -> dict[str, Any]:
    """The paired bootstrap of F1(b) - F1(a) over the same test sentences."""
    a, b = names
    paired = paired_difference(
        results[a].pop("_counts"),
        results[b].pop("_counts"),
        entity_f1,
        "f1",
        n_resamples=BOOTSTRAP_RESAMPLES,
        seed=BOOTSTRAP_SEED,
        level=level,
        names=names,
    )
    return {**paired.to_dict(), "verdict": verdict(paired)}


def train_and_score(
    style: str,
    task: Any,
    family: Any,
    tokenizer: Any,
    raw: DatasetDict,
    features: DatasetDict,
    meta: Any,
    flags: PrecisionFlags,
) -> dict[str, Any]:
    """Train and score one path: `seed` (the notebooks' settings), `fast` (the train stage
    at the task's precision), or `fp32`/`bf16` (the train stage at that precision, evaluated
    at it too)."""
    from transformers import DataCollatorForTokenClassification, set_seed

    from reprotune.tasks.ner import metrics

    flags.restore()
    output_dir = Path(tempfile.mkdtemp(prefix="reprotune-quality-"))
    try:
        set_seed(task.train_full.seed)
        model = family.build_model(task, meta)
        if style in ("fp32", "bf16"):
            task = task.model_copy(
                update={
                    "train_full": task.train_full.model_copy(update={"precision": style}),
                    "evaluate": task.evaluate.model_copy(update={"precision": style}),
                }
            )
        if style != "seed":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                args = training_arguments(task.train_full, family, output_dir)
            args.disable_tqdm = True
            collate = family.collator(tokenizer, task, meta)
        else:
            args = seed_style_arguments(task.train_full, output_dir)
            collate = DataCollatorForTokenClassification(tokenizer)
        columns = family.model_columns()
        train_set = features["train"].select_columns([c for c in columns if c in features["train"].column_names])
        eval_set = features["validation"].select_columns(
            [c for c in columns if c in features["validation"].column_names]
        )
        trainer = quiet(
            ordered_eval_trainer()(
                model=model,
                args=args,
                data_collator=collate,
                train_dataset=train_set,
                eval_dataset=eval_set,
                processing_class=tokenizer,
                compute_metrics=family.train_metrics(meta, task, raw["validation"], features["validation"]),
            )
        )
        with MemoryMeter() as memory:
            started = time.perf_counter()
            result = trainer.train()
            seconds = time.perf_counter() - started
        flags.restore()  # predict in the evaluate stage's numerics (evaluate.precision, TF32 as at start)
        predictions = family.predict(trainer.model, tokenizer, raw["test"], features["test"], meta, task)
        scores = metrics.score(predictions, meta, task)
        evaluated = resolve(task.evaluate.precision, f"tasks.{TASK}.evaluate.precision")
        return {
            "_counts": sentence_counts(predictions),  # taken out by paired_f1
            "eval_precision": evaluated.dtype,  # the test predictions, through the evaluate stage's predict
            "f1": scores["f1"],
            "precision": scores["precision"],
            "recall": scores["recall"],
            "best_validation_f1": trainer.state.best_metric,
            "train_seconds": round(seconds, 2),
            "train_samples_per_second": round(result.metrics.get("train_samples_per_second", 0.0), 2),
            "steps": int(result.global_step),
            "peak_memory_mb": round(memory.peak_mb, 1),
            "memory_kind": memory.kind,
            "precision_mode": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "sampling": args.train_sampling_strategy,
            "optimizer": str(getattr(args.optim, "value", args.optim)),
        }
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
        flags.restore()


def run_quality(
    repo: Path,
    data_dir: Path,
    model_ref: str,
    sizes: dict[str, int],
    epochs: float | None,
    tolerance: float,
    compare: str = "styles",
) -> dict[str, Any]:
    from reprotune.tasks import family as get_family
    from reprotune.tasks.ner import preprocess
    from reprotune.tasks.ner.params import PRETOKENIZED_INPUT
    from reprotune.tasks.ner.sources import label_list

    family = get_family("ner")
    task = task_params(repo, model_ref, sizes, epochs)
    splits = {split: Dataset.from_list(wikiann(data_dir, name, None)) for split, name in SPLIT_FILES.items()}
    raw = limit_samples(DatasetDict(splits), sizes, task.download.sample_seed)
    labels = label_list({tag for split in raw.values() for tags in split["tags"] for tag in tags})
    meta = preprocess.prepare_meta(raw, {"labels": labels}, task)
    tokenizer = load_tokenizer(task.model, pretokenized=PRETOKENIZED_INPUT)
    features, _ = preprocess.tokenize(raw, tokenizer, task, meta)
    names = PAIRS[compare]
    if compare == "precision":
        resolve("bf16", "--quality-compare precision")  # refuse before training when bf16 is impossible here
    flags = PrecisionFlags()
    results = {style: train_and_score(style, task, family, tokenizer, raw, features, meta, flags) for style in names}
    a, b = names
    delta = results[b]["f1"] - results[a]["f1"]
    paired = paired_f1(results, names)
    return {
        "task": TASK,
        "model": model_ref,
        "sizes": {split: len(raw[split]) for split in raw},
        "compare": compare,
        "paths": list(names),
        "cpu_bf16": cpu_bf16_support()[0],
        "cpu_bf16_detail": cpu_bf16_support()[1],
        "hyperparameters": {
            key: getattr(task.train_full, key)
            for key in ("epochs", "learning_rate", "batch_size", "weight_decay", "warmup", "seed")
        },
        **results,
        "delta_f1": round(delta, 6),
        "tolerance": tolerance,
        "within_tolerance": abs(delta) <= tolerance,
        "paired_f1": paired,
        "speedup": round(results[a]["train_seconds"] / results[b]["train_seconds"], 2)
        if results[b]["train_seconds"]
        else None,
    }
