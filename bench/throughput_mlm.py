"""Masked-LM training throughput: the seed notebook's setup (HF's dense head, which
projects every position onto the vocabulary, DataCollatorForLanguageModeling, fp32,
batch 16) against the train stage's (the project's TrainingArguments and MlmCollator)
with the dense head and with the head on masked positions only (family.masked_only_trainer), side by
side in one process on the same 128-token blocks of real text. Random weights of the
real architectures; full fine-tuning, as domain adaptation usually is."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from throughput_align import MLM_CHUNK, mlm_documents, mlm_fast
from throughput_device import PrecisionFlags, cuda, release_memory
from throughput_train import SEED, ModelSpec, RunConfig, fast_arguments, repeat_to, seed_arguments, timed_training

from reprotune.tasks.mlm.family import masked_only_trainer
from reprotune.tasks.mlm.params import MaskSettings
from reprotune.tasks.mlm.preprocess import MlmCollator, Vocab
from reprotune.training.train import ordered_eval_trainer

STYLES = ("seed", "fast dense head", "fast")
"""seed: the notebook; fast dense head: the train stage without the masked-only head; fast: the train stage."""


def build_mlm_model(spec: ModelSpec) -> torch.nn.Module:
    from transformers import BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM

    torch.manual_seed(SEED)
    if spec.kind == "bert":
        return BertForMaskedLM(
            BertConfig(
                hidden_size=spec.hidden,
                num_hidden_layers=spec.layers,
                num_attention_heads=spec.heads,
                intermediate_size=spec.intermediate,
            )
        )
    return DistilBertForMaskedLM(
        DistilBertConfig(dim=spec.hidden, n_layers=spec.layers, n_heads=spec.heads, hidden_dim=spec.intermediate)
    )


def mlm_blocks(text_dir: Path | None, data_dir: Path, tokenizer: Any, documents: int | None) -> tuple[Dataset, str]:
    """128-token blocks of concatenated documents, as the tokenize stage cuts them."""
    records, source = mlm_documents(text_dir, data_dir, documents)
    return mlm_fast(Dataset.from_list(records), tokenizer, MLM_CHUNK).select_columns(["input_ids"]), source


def collator(tokenizer: Any, style: str) -> Any:
    from transformers import DataCollatorForLanguageModeling

    if style == "seed":
        return DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    settings = MaskSettings(strategy="token", probability=0.15)
    return MlmCollator(Vocab.from_tokenizer(tokenizer), settings, 8 if cuda() else None)


def mlm_row(
    spec: ModelSpec,
    style: str,
    batch_size: int,
    blocks: Dataset,
    tokenizer: Any,
    warmup: int,
    steps: int,
    flags: PrecisionFlags,
) -> dict[str, Any]:
    """Train `warmup + steps` steps in `style`; rates cover the last `steps` only."""
    flags.restore()
    max_steps = warmup + steps
    train_set = repeat_to(blocks, max_steps * batch_size)
    output_dir = Path(tempfile.mkdtemp(prefix="reprotune-throughput-mlm-"))
    model = None
    try:
        model = build_mlm_model(spec)
        args = (
            seed_arguments(output_dir, batch_size, max_steps)
            if style == "seed"
            else fast_arguments(output_dir, RunConfig("fast", "full", batch_size), max_steps)
        )
        base = masked_only_trainer(ordered_eval_trainer()) if style == "fast" else None
        run = timed_training(model, args, train_set, collator(tokenizer, style), tokenizer, warmup, max_steps, base)
        return {
            "model": spec.name,
            "style": style,
            "batch_size": batch_size,
            "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "head": "masked positions" if style == "fast" else "every position",
            "steps_measured": steps,
            "warmup_steps": warmup,
            "seconds": round(run.seconds, 4),
            "samples_per_s": round(run.samples / run.seconds, 2),
            "tokens_per_s": round(run.tokens / run.seconds, 1),
            "step_time_ms": round(1000 * run.seconds / steps, 3),
            "peak_memory_mb": round(run.peak_mb, 1),
            "memory_kind": run.memory_kind,
            "final_loss": round(run.training_loss, 4),
        }
    finally:
        model = None
        release_memory()
        shutil.rmtree(output_dir, ignore_errors=True)
        flags.restore()


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """samples/s over the seed row of the same model."""
    seeds = {row["model"]: row["samples_per_s"] for row in rows if row["style"] == "seed"}
    for row in rows:
        seed = seeds.get(row["model"])
        row["speedup"] = round(row["samples_per_s"] / seed, 2) if seed else None
