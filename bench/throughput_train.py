"""Training and inference throughput of randomly initialised encoders (BertConfig /
DistilBertConfig, nothing downloaded) on NER-length sequences, full fine-tuning and
LoRA, each under the seed notebooks' Trainer setup and under the project's defaults,
in one process so every speed-up is a ratio measured side by side.

The fast rows build their TrainingArguments with reprotune.training.training_arguments
(what `dvc repro` trains with), with evaluation and saving switched off and max_steps
set; the seed rows rebuild the notebooks' arguments: fp32, batch 16, no length
grouping, default workers, no compile, the non-fused AdamW of that era, no TF32."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from throughput_device import MemoryMeter, PrecisionFlags, cpu_bf16, cuda, matmul_tf32, release_memory, synchronize

from reprotune.core.params import EvaluateParams, LoraTrainParams, TrainParams
from reprotune.modeling.inference import batches
from reprotune.modeling.precision import resolve, store_frozen_in_autocast_dtype
from reprotune.training.lora import apply_lora
from reprotune.training.train import ordered_eval_trainer, training_arguments

NUM_LABELS = 7  # WikiANN: O + B/I of PER, ORG, LOC
SEED = 42


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "bert" or "distilbert"
    layers: int
    hidden: int
    heads: int
    intermediate: int


REAL_MODELS = (
    ModelSpec("bert-base", "bert", 12, 768, 12, 3072),
    ModelSpec("distilbert-base", "distilbert", 6, 768, 12, 3072),
)
SMOKE_MODELS = (ModelSpec("bert-tiny", "bert", 2, 32, 2, 64), ModelSpec("distilbert-tiny", "distilbert", 2, 32, 2, 64))
CPU_MODELS = (ModelSpec("minilm-l6", "bert", 6, 384, 12, 1536),)
"""The default encoder's shape, for runs on CPU (pick it with --models minilm-l6)."""


@dataclass(frozen=True)
class RunConfig:
    style: str  # "seed" or "fast"
    method: str  # "full" or "lora"
    batch_size: int
    compile: bool = False
    workers: int = 0
    precision: str = "auto"  # the fast rows' train_full.precision; the seed rows are always fp32

    @property
    def label(self) -> str:
        extra = (" compile" if self.compile else "") + (f" w{self.workers}" if self.workers else "")
        shown = f" {self.precision}" if self.style == "fast" and self.precision != "auto" else ""
        return f"{self.style} bs{self.batch_size}{extra}{shown}"


def fast_precisions() -> list[str]:
    """The fast rows' precisions: `auto` on a GPU; on a CPU the train stage in fp32 and, where
    the CPU has native bf16 (what `auto` picks there), in bf16, so both ratios come from one run."""
    from throughput_device import cpu_bf16

    if cuda():
        return ["auto"]
    return ["fp32", "bf16"] if cpu_bf16() else ["fp32"]


def build_model(spec: ModelSpec, attention_dropout: float = 0.1) -> torch.nn.Module:
    """A token-classification model with random weights (seeded), vocabulary of the default
    tokenizer; `attention_dropout` on the attention probabilities (0.1, both configs' default)."""
    from transformers import BertConfig, BertForTokenClassification, DistilBertConfig, DistilBertForTokenClassification

    torch.manual_seed(SEED)
    names = {
        "bert": ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"),
        "distilbert": ("dim", "n_layers", "n_heads", "hidden_dim"),
    }[spec.kind]
    shape = dict(zip(names, (spec.hidden, spec.layers, spec.heads, spec.intermediate), strict=True))
    if spec.kind == "bert":
        config = BertConfig(num_labels=NUM_LABELS, attention_probs_dropout_prob=attention_dropout, **shape)
        return BertForTokenClassification(config)
    config = DistilBertConfig(num_labels=NUM_LABELS, attention_dropout=attention_dropout, **shape)
    return DistilBertForTokenClassification(config)


def columns_for(spec: ModelSpec) -> list[str]:
    """DistilBERT takes no token_type_ids."""
    base = ["input_ids", "attention_mask", "labels"]
    return base if spec.kind == "distilbert" else base + ["token_type_ids"]


def synthetic_features(count: int, seed: int = SEED) -> Dataset:
    """Sentences of 20-40 tokens (seeded) when no real data is at hand: random ids in the
    WordPiece range, [CLS]/[SEP] at the ends, random tags with -100 on the specials."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"input_ids": [], "attention_mask": [], "token_type_ids": [], "labels": []}
    for length in rng.integers(20, 41, size=count):
        ids = [101] + rng.integers(1000, 30000, size=length - 2).tolist() + [102]
        rows["input_ids"].append(ids)
        rows["attention_mask"].append([1] * length)
        rows["token_type_ids"].append([0] * length)
        rows["labels"].append([-100] + rng.integers(0, NUM_LABELS, size=length - 2).tolist() + [-100])
    return Dataset.from_dict(rows)


def repeat_to(features: Dataset, count: int) -> Dataset:
    """The first `count` rows, cycling when the data is shorter."""
    from datasets import concatenate_datasets

    if len(features) >= count:
        return features.select(range(count))
    copies = -(-count // len(features))
    return concatenate_datasets([features] * copies).select(range(count))


def flops_per_token(model: torch.nn.Module) -> tuple[int, int, int]:
    """(matmul params, trainable matmul params, training FLOPs per token): 2N forward, 2N for
    activation gradients, 2N_trainable for weight gradients (6N for full fine-tuning).
    Embedding tables do no matmul work and are left out; attention scores (~4·L·d·seq
    per token, small at NER lengths) are not counted."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    matmul = [p for p in model.parameters() if id(p) not in embedding_ids]
    total = sum(p.numel() for p in matmul)
    trainable = sum(p.numel() for p in matmul if p.requires_grad)
    return total, trainable, 4 * total + 2 * trainable


def seed_arguments(output_dir: Path, batch_size: int, max_steps: int) -> Any:
    """The seed notebooks' Trainer: fp32, batch 16, random sampling, default workers, no compile."""
    from transformers import TrainingArguments

    # tf32 is left unset: the notebooks never touched it, and train_row restores torch's defaults
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=2e-5,
        weight_decay=0.01,
        max_steps=max_steps,
        seed=SEED,
        optim="adamw_torch",
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not cuda(),
        remove_unused_columns=False,
    )


def fast_arguments(output_dir: Path, config: RunConfig, max_steps: int) -> Any:
    """The project's TrainingArguments for these params, minus per-epoch evaluation and saving."""
    model = LoraTrainParams if config.method == "lora" else TrainParams
    params = model(
        batch_size=config.batch_size,
        max_steps=max_steps,
        torch_compile=config.compile,
        dataloader_workers=config.workers,
        metric_for_best_model="loss",
        precision=config.precision,
    )
    # metric_for_best_model is set, so training_arguments never reads the family argument
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        args = training_arguments(params, None, output_dir)  # type: ignore[arg-type]
        return dataclasses.replace(
            args, eval_strategy="no", save_strategy="no", load_best_model_at_end=False, disable_tqdm=True
        )


def collator(tokenizer: Any, style: str) -> Any:
    """NerFamily.collator for the fast rows (pads to a multiple of 8 on GPU); plain dynamic
    padding, as in the notebooks, for the seed rows."""
    from transformers import DataCollatorForTokenClassification

    multiple = 8 if style == "fast" and cuda() else None
    return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=multiple)


def quiet(trainer: Any) -> Any:
    """No per-log prints (disable_tqdm swaps the progress bar for a printer)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def timed_trainer(warmup: int, max_steps: int, base: type | None = None) -> tuple[type, dict[str, Any]]:
    """A subclass of `base` (default: the train stage's Trainer) that counts samples and
    (non-pad) tokens per step without a device sync, and a clock read after the warm-up
    steps and after the last step."""
    from transformers import TrainerCallback

    record: dict[str, Any] = {"samples": [], "tokens": [], "padded": [], "start": None, "end": None}
    base = base or ordered_eval_trainer()

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step in (warmup, max_steps):
                synchronize()
                record["start" if state.global_step == warmup else "end"] = time.perf_counter()

    class TimedTrainer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, callbacks=[Clock()], **kwargs)
            quiet(self)

        def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
            mask = inputs["attention_mask"]
            record["samples"].append(mask.shape[0])
            record["padded"].append(mask.numel())
            record["tokens"].append(mask.sum())  # a tensor: summed after the run, no sync now
            return super().training_step(model, inputs, num_items_in_batch)

    return TimedTrainer, record


@dataclass(frozen=True)
class TimedRun:
    """What one measured training run saw over the steps after warm-up."""

    seconds: float
    samples: int
    tokens: int
    padded: int
    peak_mb: float
    memory_kind: str
    training_loss: float


def timed_training(
    model: Any,
    args: Any,
    train_set: Dataset,
    collate: Any,
    tokenizer: Any,
    warmup: int,
    max_steps: int,
    base: type | None = None,
) -> TimedRun:
    """Train `max_steps` steps under the step clock and the memory meter."""
    trainer_class, record = timed_trainer(warmup, max_steps, base)
    with MemoryMeter() as memory:
        trainer = trainer_class(
            model=model, args=args, train_dataset=train_set, data_collator=collate, processing_class=tokenizer
        )
        result = trainer.train()
    return TimedRun(
        seconds=record["end"] - record["start"],
        samples=sum(record["samples"][warmup:]),
        tokens=int(torch.stack(record["tokens"][warmup:]).sum()),
        padded=sum(record["padded"][warmup:]),
        peak_mb=memory.peak_mb,
        memory_kind=memory.kind,
        training_loss=float(result.training_loss),
    )


def train_row(
    spec: ModelSpec,
    config: RunConfig,
    features: Dataset,
    tokenizer: Any,
    warmup: int,
    steps: int,
    peak_tflops: float | None,
    flags: PrecisionFlags,
) -> dict[str, Any]:
    """Train `warmup + steps` optimizer steps; rates cover the last `steps` only."""
    flags.restore()
    max_steps = warmup + steps
    train_set = repeat_to(features, max_steps * config.batch_size).select_columns(columns_for(spec))
    output_dir = Path(tempfile.mkdtemp(prefix="reprotune-throughput-"))
    model = None
    try:
        model = build_model(spec)
        if config.method == "lora":
            model = apply_lora(model, LoraTrainParams(), "TOKEN_CLS", ("classifier",))
            if config.style == "fast":  # as fit() does: the frozen base in the autocast dtype
                store_frozen_in_autocast_dtype(model, resolve(config.precision, "bench precision"))
            else:  # the notebooks' peft: its own dropout modules
                from throughput_lora import unfold_lora_dropout

                unfold_lora_dropout(model)
        total, trainable, per_token = flops_per_token(model)
        args = (
            seed_arguments(output_dir, config.batch_size, max_steps)
            if config.style == "seed"
            else fast_arguments(output_dir, config, max_steps)
        )
        run = timed_training(model, args, train_set, collator(tokenizer, config.style), tokenizer, warmup, max_steps)
        seconds, samples, tokens, padded = run.seconds, run.samples, run.tokens, run.padded
        precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
        if precision == "fp32" and cuda() and matmul_tf32():
            precision = "fp32+tf32"
        row = {
            "model": spec.name,
            "method": config.method,
            "style": config.style,
            "config": config.label,
            "batch_size": config.batch_size,
            "compile": config.compile,
            "workers": config.workers,
            "precision_param": config.precision if config.style == "fast" else "n/a (seed: fp32)",
            "precision": precision,
            "optimizer": str(args.optim.value if hasattr(args.optim, "value") else args.optim),
            "sampling": getattr(args, "train_sampling_strategy", "random"),
            "steps_measured": steps,
            "warmup_steps": warmup,
            "seconds": round(seconds, 4),
            "samples_per_s": round(samples / seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1),
            "padding_fraction": round(1 - tokens / padded, 4) if padded else None,
            "step_time_ms": round(1000 * seconds / steps, 3),
            "peak_memory_mb": round(run.peak_mb, 1),
            "memory_kind": run.memory_kind,
            "params": sum(p.numel() for p in model.parameters()),
            "matmul_params": total,
            "trainable_matmul_params": trainable,
            "flops_per_token": per_token,
            "achieved_tflops": round(per_token * tokens / seconds / 1e12, 3),
        }
        row["mfu"] = round(row["achieved_tflops"] / peak_tflops, 4) if peak_tflops else "n/a"
        return row
    finally:
        model = None  # drop the reference so the next row starts from empty memory
        release_memory()
        shutil.rmtree(output_dir, ignore_errors=True)
        flags.restore()


def infer_rows(spec: ModelSpec, features: Dataset, tokenizer: Any, warm: int) -> list[dict[str, Any]]:
    """Forward passes over `features` with the full-size model: the seed notebooks' Trainer.predict
    (fp32, batch 16, dataset order) against the evaluate stage's reprotune.inference.batches
    (longest first, evaluate.batch_size) in fp32 and at its default precision where that is
    not fp32 (`auto`: bf16/fp16 autocast on a GPU, bf16 autocast on a CPU with native bf16)."""
    columns = [c for c in columns_for(spec) if c != "labels"]
    data = features.select_columns(columns)
    model = build_model(spec)
    tokens = int(sum(sum(mask) for mask in data["attention_mask"]))
    rows = []

    def pipeline_pass(subset: Dataset, precision: str) -> None:
        collate = collator(tokenizer, "fast")
        for _, _, output in batches(model, subset, collate, EvaluateParams().batch_size, columns, precision):
            output.logits.argmax(-1).cpu()

    from transformers import Trainer

    output_dir = Path(tempfile.mkdtemp(prefix="reprotune-throughput-"))
    seed_trainer = quiet(
        Trainer(
            model=model,
            args=seed_arguments(output_dir, 16, 1),
            data_collator=collator(tokenizer, "seed"),
            processing_class=tokenizer,
        )
    )

    def seed_pass(subset: Dataset) -> None:
        seed_trainer.predict(subset)

    runs = [
        ("seed: Trainer.predict fp32", 16, seed_pass),
        ("pipeline: inference.batches fp32", EvaluateParams().batch_size, lambda s: pipeline_pass(s, "fp32")),
    ]
    if cuda():
        runs.append(
            (
                "pipeline: inference.batches precision auto (bf16/fp16 autocast)",
                EvaluateParams().batch_size,
                lambda s: pipeline_pass(s, "auto"),
            )
        )
    elif cpu_bf16():
        runs.append(
            (
                "pipeline: inference.batches bf16 (CPU autocast; what auto picks here)",
                EvaluateParams().batch_size,
                lambda s: pipeline_pass(s, "bf16"),
            )
        )
    flags = PrecisionFlags()
    for label, batch_size, run in runs:
        flags.restore()
        run(data.select(range(min(warm, len(data)))))
        with MemoryMeter() as memory:
            synchronize()
            started = time.perf_counter()
            run(data)
            synchronize()
            seconds = time.perf_counter() - started
        rows.append(
            {
                "model": spec.name,
                "path": label,
                "batch_size": batch_size,
                "examples": len(data),
                "precision": "fp32" if "fp32" in label else "bf16" if "bf16" in label and not cuda() else "auto",
                "seconds": round(seconds, 4),
                "examples_per_s": round(len(data) / seconds, 1),
                "tokens_per_s": round(tokens / seconds, 1),
                "peak_memory_mb": round(memory.peak_mb, 1),
                "memory_kind": memory.kind,
            }
        )
    flags.restore()
    base = rows[0]["examples_per_s"]
    fp32 = next(
        row["examples_per_s"] for row in rows if row["path"].startswith("pipeline") and row["precision"] == "fp32"
    )
    for row in rows:
        row["speedup"] = round(row["examples_per_s"] / base, 2)
        row["vs_pipeline_fp32"] = round(row["examples_per_s"] / fp32, 2) if row["path"].startswith("pipeline") else None
    shutil.rmtree(output_dir, ignore_errors=True)
    model = seed_trainer = None  # drop the references so the next rows start from empty memory
    release_memory()
    return rows


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """samples/s relative to the seed row of the same model and method (`speedup`), and for
    reduced-precision fast rows relative to the fast fp32 row of the same batch size
    (`vs_fast_fp32`)."""
    for row in rows:
        seed = next(
            (r for r in rows if r["model"] == row["model"] and r["method"] == row["method"] and r["style"] == "seed"),
            None,
        )
        row["speedup"] = round(row["samples_per_s"] / seed["samples_per_s"], 2) if seed else None
        fp32 = next(
            (
                r
                for r in rows
                if r["model"] == row["model"]
                and r["method"] == row["method"]
                and r["style"] == "fast"
                and r.get("precision_param") == "fp32"
                and r["batch_size"] == row["batch_size"]
                and r["compile"] == row["compile"]
                and r["workers"] == row["workers"]
            ),
            None,
        )
        row["vs_fast_fp32"] = (
            round(row["samples_per_s"] / fp32["samples_per_s"], 2) if fp32 and row["style"] == "fast" else None
        )


def lora_memory(rows: list[dict[str, Any]], target: float) -> list[dict[str, Any]]:
    """LoRA peak memory over full fine-tuning peak memory, per model and configuration."""
    out = []
    for lora in (r for r in rows if r["method"] == "lora"):
        full = next(
            (
                r
                for r in rows
                if r["method"] == "full" and r["model"] == lora["model"] and r["config"] == lora["config"]
            ),
            None,
        )
        if full is None or not full["peak_memory_mb"]:
            continue
        ratio = lora["peak_memory_mb"] / full["peak_memory_mb"]
        out.append(
            {
                "model": lora["model"],
                "config": lora["config"],
                "full_mb": full["peak_memory_mb"],
                "lora_mb": lora["peak_memory_mb"],
                "ratio": round(ratio, 3),
                "memory_kind": lora["memory_kind"],
                "target": target,
                "meets_target": (ratio <= target) if cuda() else "n/a (CPU RSS)",
            }
        )
    return out
