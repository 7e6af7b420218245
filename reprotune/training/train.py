"""One training path for full fine-tuning and LoRA: the HF Trainer with params
from `train_full` / `train_lora`, dvclive curves, and atomic checkpoint outs."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from reprotune import tasks
from reprotune.core import paths
from reprotune.core.arrow import load_splits
from reprotune.core.atomic import atomic_dir
from reprotune.core.errors import ReprotuneError
from reprotune.core.params import LoraTrainParams, TaskParams, TrainParams, explain_validation_error
from reprotune.core.paths import RUN_INFO, TRAIN_INFO
from reprotune.modeling.model import count_parameters
from reprotune.modeling.precision import Resolved, resolve, store_frozen_in_autocast_dtype
from reprotune.tasks.base import TaskFamily
from reprotune.training.controls import (
    CLASS_WEIGHT_TASK_TYPES,
    check_class_weights,
    class_weight_map,
    early_stopping_callback,
    label_counts,
    stopping_info,
    weighted_loss_trainer,
)
from reprotune.training.lora import apply_lora, lora_optimizer

TRAINING_SPLITS = ("train", "validation")
"""The splits training and the search read; the test split stays unread until evaluation."""


def method_params(task: TaskParams, method: str) -> TrainParams:
    if method == "full":
        return task.train_full
    if method == "lora":
        return task.train_lora
    raise ReprotuneError(f"unknown training method '{method}'; allowed: full, lora")


def resolve_precision(params: TrainParams, where: str = "train.precision") -> Resolved:
    """`auto` means bf16 where the GPU has it, fp16 on older GPUs, bf16 autocast on CPUs
    with native bf16 (AVX512-BF16/AMX), fp32 elsewhere; see reprotune.modeling.precision."""
    return resolve(params.precision, where)


def selection_metric(params: TrainParams, family: TaskFamily[Any, Any]) -> tuple[str, bool]:
    """The validation metric the best checkpoint (and early stopping) goes by, and its direction."""
    metric = params.metric_for_best_model or family.default_metric
    greater = family.greater_is_better if params.metric_for_best_model is None else "loss" not in metric
    return metric, greater


def training_arguments(
    params: TrainParams, family: TaskFamily[Any, Any], output_dir: Path, where: str = "train.precision"
) -> Any:
    """HF TrainingArguments from our params; `bf16` on CPU (with use_cpu) makes accelerate
    wrap the forward pass in torch.autocast("cpu", bfloat16). `where` names the precision
    key in error messages. `eval_every` evaluates and saves every N steps (the two stay
    aligned, as load_best_model_at_end needs), else both run once per epoch."""
    from transformers import TrainingArguments

    metric, greater = selection_metric(params, family)
    interval = "epoch" if params.eval_every is None else "steps"
    cuda = torch.cuda.is_available()
    precision = resolve_precision(params, where)
    return TrainingArguments(
        output_dir=str(output_dir),
        seed=params.seed,
        data_seed=params.seed,
        full_determinism=params.full_determinism,
        num_train_epochs=params.epochs,
        max_steps=params.max_steps,
        learning_rate=params.learning_rate,
        per_device_train_batch_size=params.batch_size,
        per_device_eval_batch_size=params.eval_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        weight_decay=params.weight_decay,
        warmup_steps=params.warmup if params.warmup < 1 else int(params.warmup),
        lr_scheduler_type=params.lr_scheduler,
        optim=params.optim,
        max_grad_norm=params.max_grad_norm,
        eval_strategy=interval,
        save_strategy=interval,
        eval_steps=params.eval_every,
        save_steps=params.eval_every or 500,  # 500: the HF default, unused when saving per epoch
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=greater,
        logging_strategy="steps",
        logging_steps=params.logging_steps,
        train_sampling_strategy="group_by_length" if params.group_by_length else "random",
        dataloader_num_workers=params.dataloader_workers,
        dataloader_pin_memory=cuda,
        dataloader_persistent_workers=params.dataloader_workers > 0,  # no worker restart every epoch
        torch_compile=params.torch_compile,
        tf32=params.tf32 if cuda and torch.cuda.get_device_capability()[0] >= 8 else None,
        report_to="none",
        use_cpu=not cuda,  # also lets torchrun start gloo DDP across CPU processes
        disable_tqdm=False,
        remove_unused_columns=False,
        bf16=precision.dtype == "bf16",  # on CPU (use_cpu) accelerate autocasts the forward pass to bfloat16
        fp16=precision.dtype == "fp16",
    )


def enable_activation_checkpointing(model: Any) -> None:
    """Recompute activations in the backward pass (`gradient_checkpointing: true`), on the
    model itself before LoRA wraps it, as peft expects; transformers 5 names it
    activation checkpointing (the gradient_ spelling is a deprecated alias)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable()
    else:
        model.gradient_checkpointing_enable()


def is_main_process() -> bool:
    """Rank 0 under torchrun/accelerate launch, or a plain single process."""
    return int(os.environ.get("RANK", "0")) == 0


def peak_memory_mb() -> tuple[float, str]:
    """Peak GPU memory allocated, or the process's peak resident memory on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20, "cuda_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_peak_rss"


def dir_size_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


TRAINER_STATE = "trainer_state.json"


def checkpoint_is_complete(checkpoint: Path) -> bool:
    """The Trainer writes `trainer_state.json` last, so a run killed while saving leaves a
    checkpoint without a readable one; resuming from it would crash."""
    try:
        json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_checkpoint(directory: Path) -> str | None:
    """The newest complete `checkpoint-N` under `directory`; newer half-written ones are
    removed (and said so), since the Trainer would otherwise pick them."""
    if not directory.is_dir():
        return None
    numbered = sorted(
        (int(match[1]), path)
        for path in directory.glob("checkpoint-*")
        if path.is_dir() and (match := re.fullmatch(r"checkpoint-([0-9]+)", path.name))
    )
    for _, checkpoint in reversed(numbered):
        if checkpoint_is_complete(checkpoint):
            return str(checkpoint)
        print(f"resume: skipping incomplete checkpoint {checkpoint} (no readable {TRAINER_STATE})", file=sys.stderr)
        if is_main_process():
            shutil.rmtree(checkpoint, ignore_errors=True)
    return None


def ordered_eval_trainer() -> type:
    """A Trainer whose validation keeps dataset order: transformers 5 length-groups eval
    batches too when training is length-grouped, which misaligns per-example metrics."""
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class OrderedEvalTrainer(Trainer):
        def _get_eval_sampler(self, eval_dataset: Any) -> Any:
            if eval_dataset is not None and self.args.world_size <= 1:
                return SequentialSampler(eval_dataset)
            return super()._get_eval_sampler(eval_dataset)

    return OrderedEvalTrainer


def loss_weights(
    params: TrainParams, family: TaskFamily[Any, Any], meta: Any, train_features: Any, where: str
) -> dict[str, float] | None:
    """label -> loss weight for `class_weights` (in the model's label order), or None."""
    if params.class_weights == "none":
        return None
    labels = list(meta.labels)
    counts = label_counts(train_features, len(labels)) if params.class_weights == "balanced" else None
    weights = class_weight_map(params.class_weights, labels, counts, where)
    if counts is not None:
        unit = CLASS_WEIGHT_TASK_TYPES[str(family.peft_task_type)]
        print(f"class_weights: balanced over {sum(counts)} train {unit}: {weights}", file=sys.stderr)
    return weights


@dataclass
class Prepared:
    """What every run of one task reads, loaded once: a search runs many trials on it.
    Only the train and validation splits are loaded; training never sees test."""

    family: TaskFamily[Any, Any]
    features: Any
    raw_validation: Any
    meta: Any
    tokenizer: Any


def prepare(task_name: str, task: TaskParams) -> Prepared:
    family = tasks.family(task.type)
    tokenized_path = paths.tokenized_dir(task_name)
    features = load_splits(tokenized_path, "tokenize", TRAINING_SPLITS)
    raw = load_splits(paths.raw_dir(task_name), "download", ("validation",))
    meta = tasks.task_meta(task_name, task.type)
    tokenizer = tasks.task_tokenizer(task)
    return Prepared(family, features, raw["validation"], meta, tokenizer)


@dataclass
class Fitted:
    """A finished Trainer run and what it measured."""

    trainer: Any
    result: Any
    seconds: float
    counts: dict[str, int]
    weights: dict[str, float] | None
    stopper: Any | None
    resumed_from: str | None


def fit(
    task_name: str,
    method: str,
    task: TaskParams,
    params: TrainParams,
    prepared: Prepared,
    checkpoints: Path,
    callbacks: list[Any],
    section: str,
    watch: Any | None = None,
) -> Fitted:
    """Build the model, train it with `params` and keep the best validation checkpoint in
    memory. The train stage and every search trial run exactly this."""
    from transformers import set_seed

    family, features, meta = prepared.family, prepared.features, prepared.meta
    where = f"{section}.precision"
    resolve_precision(params, where)  # refuse an impossible precision before loading anything
    check_class_weights(params, family.peft_task_type, task.type, f"{section}.class_weights")
    set_seed(params.seed)
    weights = loss_weights(params, family, meta, features["train"], f"{section}.class_weights")

    resume_from = last_checkpoint(checkpoints) if params.resume else None
    if is_main_process() and not params.resume and checkpoints.exists():
        shutil.rmtree(checkpoints)
    model = family.build_model(task, meta)
    if params.gradient_checkpointing:
        enable_activation_checkpointing(model)
    optimizer = None
    if method == "lora":
        assert isinstance(params, LoraTrainParams)
        model = apply_lora(model, params, family.peft_task_type, family.head_modules, section)
        # the frozen base in the autocast dtype: the same values, without a cast every step
        store_frozen_in_autocast_dtype(model, resolve_precision(params, where))
    counts = count_parameters(model)
    args = training_arguments(params, family, checkpoints, where)
    if isinstance(params, LoraTrainParams):
        optimizer = lora_optimizer(model, params, args)

    columns = family.model_columns()
    train_set = features["train"].select_columns([c for c in columns if c in features["train"].column_names])
    eval_set = features["validation"].select_columns([c for c in columns if c in features["validation"].column_names])
    base = ordered_eval_trainer()
    if weights is not None:
        base = weighted_loss_trainer(base, list(weights.values()))
    stopper = early_stopping_callback(params)
    compute = family.train_metrics(meta, task, prepared.raw_validation, features["validation"])
    if watch is not None:  # the search's collapse check sees each validation pass's predictions
        compute = watch.wrap(compute)
    trainer = family.trainer_class(base)(
        model=model,
        args=args,
        data_collator=family.collator(prepared.tokenizer, task, meta),
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=prepared.tokenizer,
        compute_metrics=compute,
        callbacks=[*callbacks, *([stopper] if stopper is not None else [])],
        optimizers=(optimizer, None),
    )
    if watch is not None:
        watch.trainer = trainer
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    return Fitted(trainer, result, time.perf_counter() - started, counts, weights, stopper, resume_from)


def train(task_name: str, method: str, task: TaskParams, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one method for one task (with the search's chosen `overrides`, if any); write
    the model out, its train info and dvclive curves."""
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    section = f"tasks.{task_name}.train_{method}"
    params = with_overrides(method_params(task, method), overrides or {}, section)
    precision = resolve_precision(params, f"{section}.precision")  # refuse impossible settings before loading
    check_class_weights(params, tasks.family(task.type).peft_task_type, task.type, f"{section}.class_weights")
    prepared = prepare(task_name, task)
    checkpoints = paths.checkpoint_dir(task_name, method)
    main_process = is_main_process()

    # Under `accelerate launch` every rank trains; only rank 0 logs and writes outs.
    live_target = paths.live_dir(task_name, method)
    with atomic_dir(live_target) if main_process else tempfile.TemporaryDirectory() as live_tmp:
        live_tmp = Path(live_tmp)
        callbacks = []
        if main_process:
            live = Live(dir=str(live_tmp), save_dvc_exp=False, dvcyaml=None, report=None, resume=False)
            callbacks.append(DVCLiveCallback(live=live))
        fitted = fit(task_name, method, task, params, prepared, checkpoints, callbacks, section)
        if main_process:
            live.end()
            (live_tmp / "params.yaml").unlink(missing_ok=True)  # holds temp paths; params live in params.yaml

    trainer, family = fitted.trainer, prepared.family
    peak, peak_kind = peak_memory_mb()
    info = {
        **fitted.counts,
        "train_seconds": round(fitted.seconds, 2),
        "train_samples_per_second": round(fitted.result.metrics.get("train_samples_per_second", 0.0), 3),
        "train_steps": int(fitted.result.global_step),
        "peak_memory_mb": round(peak, 1),
        "peak_memory_kind": peak_kind,
        "best_checkpoint_metric": trainer.state.best_metric,
        **stopping_info(trainer.state, fitted.stopper, *selection_metric(params, family)),
        "class_weights": fitted.weights,
        "resumed_from_checkpoint": bool(fitted.resumed_from),
        "processes": int(os.environ.get("WORLD_SIZE", "1")),
        "search_overrides": overrides or {},
        **precision.info("train_"),  # train_precision, train_device, train_cpu_bf16
    }
    if not main_process:
        return info
    target = paths.model_dir(task_name, method)
    with atomic_dir(target) as out:
        trainer.model.save_pretrained(str(out))
        if method == "full":
            prepared.tokenizer.save_pretrained(str(out))
        else:
            make_adapter_portable(out, task.model.name_or_path)
        (out / RUN_INFO).write_text(
            json.dumps(
                {
                    "task": task_name,
                    "method": method,
                    "base_model": task.model.name_or_path,
                    "meta": prepared.meta.model_dump(mode="json"),
                },
                indent=2,
                sort_keys=True,
            )
            + "\n",
            encoding="utf-8",
        )
        info["shipped_bytes"] = dir_size_bytes(out)
        (out / TRAIN_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(checkpoints, ignore_errors=True)
    return info


def with_overrides(params: TrainParams, overrides: dict[str, Any], section: str) -> TrainParams:
    """`params` with the search's chosen values, validated like params.yaml itself."""
    if not overrides:
        return params
    model = type(params)
    try:
        return model.model_validate({**params.model_dump(), **overrides})
    except ValidationError as exc:
        raise explain_validation_error(exc, model, section) from exc


def make_adapter_portable(out: Path, base_model: str) -> None:
    """peft records the base model's resolved path (inside this machine's virtual
    environment for `package:` models); record it as params name it, so the adapter
    and its hash are the same on every machine."""
    for name in ("adapter_config.json",):
        config_file = out / name
        if config_file.exists():
            config = json.loads(config_file.read_text(encoding="utf-8"))
            config["base_model_name_or_path"] = base_model
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    readme = out / "README.md"
    if readme.exists():
        text = readme.read_text(encoding="utf-8")
        text = re.sub(r"(?m)^base_model:.*$", f"base_model: {base_model}", text)
        readme.write_text(text, encoding="utf-8")
