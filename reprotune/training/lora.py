"""LoRA through peft: the attention projections for `target_modules: auto`, every Linear
layer of the encoder for `all-linear`; refuse names that do not exist in the model, and
train the task head in full."""

from __future__ import annotations

from typing import Any

import torch

from reprotune.core.errors import ReprotuneError
from reprotune.core.params import LoraTrainParams

# Attention query/key/value projections per architecture (model_type in config.json).
ATTENTION_PROJECTIONS: dict[str, list[str]] = {
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
    "xlm-roberta": ["query", "key", "value"],
    "camembert": ["query", "key", "value"],
    "electra": ["query", "key", "value"],
    "distilbert": ["q_lin", "k_lin", "v_lin"],
    "mpnet": ["q", "k", "v"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj"],
    "modernbert": ["Wqkv"],
}


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct last-name components of the model's Linear layers."""
    return sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)})


def encoder_linear_modules(model: torch.nn.Module, head_modules: tuple[str, ...]) -> list[str]:
    """Full names of the model's Linear layers outside the task head: every attention
    projection, attention output, intermediate and output layer of every block. A layer
    under a head module (trained in full) or tied to the input embeddings (an MLM decoder)
    is left out."""
    output_embeddings = getattr(model, "get_output_embeddings", None)
    tied = output_embeddings() if callable(output_embeddings) else None
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and module is not tied
        and not any(part in head_modules for part in name.split("."))
    ]


def attention_projections(model: torch.nn.Module, available: list[str]) -> list[str]:
    """The architecture's attention query/key/value projections (by model_type), or the Linear
    layers named like them."""
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    targets = ATTENTION_PROJECTIONS.get(model_type)
    if targets is None:
        targets = [name for name in available if any(key in name.lower() for key in ("query", "key", "value"))]
        if not targets:
            raise ReprotuneError(
                f"train_lora.target_modules: 'auto'/'attention' does not know model type '{model_type}'; "
                f"use all-linear or name them explicitly, from: {', '.join(available)}"
            )
    return targets


def resolve_target_modules(
    model: torch.nn.Module, requested: str | list[str], head_modules: tuple[str, ...]
) -> list[str]:
    """`attention` (what `auto` means): the query/key/value projections; `all-linear`: every
    Linear layer of the encoder, by full name; a list: checked against the model. Neither
    wins everywhere (README, LoRA at its best), so `auto` keeps the LoRA paper's choice."""
    available = [name for name in linear_module_names(model) if name not in head_modules]
    if requested == "all-linear":
        return encoder_linear_modules(model, head_modules)
    if requested in ("auto", "attention"):
        return attention_projections(model, available)
    missing = [name for name in requested if name not in available]
    if missing:
        raise ReprotuneError(
            f"train_lora.target_modules: '{missing[0]}' is not a Linear module of this model; "
            f"available: {', '.join(available)}"
        )
    return list(requested)


def apply_lora(
    model: torch.nn.Module, params: LoraTrainParams, task_type: str | None, head_modules: tuple[str, ...]
) -> Any:
    """Wrap the model in a peft LoRA model; the head is fully trained and saved with the adapter."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    heads = [name for name in head_modules if name in present]
    config = LoraConfig(
        task_type=task_type,
        r=params.r,
        lora_alpha=params.alpha,  # type: ignore[arg-type]  # peft annotates int, uses it as a float scale
        lora_dropout=params.dropout,
        bias=params.bias,
        target_modules=resolve_target_modules(model, params.target_modules, head_modules),
        modules_to_save=heads or None,
    )
    return get_peft_model(model, config)
