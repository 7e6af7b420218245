"""Load an encoder with a masked-LM head. A checkpoint saved without one (a plain
BertModel such as the default sentence encoder) gets a new head from
AutoModelForMaskedLM, its decoder tied to the input embeddings where the
architecture ties them; the untrained part is reported once, because until it is
trained the baseline perplexity measures noise, not the encoder."""

from __future__ import annotations

import sys
from typing import Any

from reprotune.core.params import ModelParams
from reprotune.modeling.model import load_pretrained

# The head's own layers (not the tied decoder, which would copy the embedding matrix),
# trained in full under LoRA: BERT/MiniLM `cls.predictions.transform`, DistilBERT
# `vocab_transform` + `vocab_layer_norm`, ELECTRA `generator_predictions`.
HEAD_MODULES = ("transform", "vocab_transform", "vocab_layer_norm", "generator_predictions")

_warned: set[str] = set()


def new_head_keys(model: Any, missing: set[str] | list[str]) -> list[str]:
    """Missing weights outside the encoder, i.e. the part of the head that was initialised fresh."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    return sorted(key for key in missing if not key.startswith(prefix))


def is_tied(model: Any) -> bool:
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    return out is not None and inp is not None and out.weight is inp.weight


def lora_trains_head(model: Any) -> bool:
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return any(name in names for name in HEAD_MODULES)


def warn_untrained_head(model: Any, name: str, keys: list[str]) -> str:
    """Print (once per model and process) which head weights are new and what that means."""
    message = (
        f"'{name}' has no masked-LM head: {len(keys)} head weights ({', '.join(keys[:4])}"
        f"{', ...' if len(keys) > 4 else ''}) are newly initialised"
        f"{'; the decoder is tied to the input embeddings' if is_tied(model) else ''}. "
        "The baseline perplexity therefore measures an untrained head, not the encoder; "
        "full fine-tuning trains the head"
        + (" and LoRA trains it in full (modules_to_save)." if lora_trains_head(model)
           else f", but LoRA's head modules ({', '.join(HEAD_MODULES)}) do not exist in this architecture, "
                "so LoRA leaves the head untrained.")
    )
    if name not in _warned:
        _warned.add(name)
        print(f"warning: {message}", file=sys.stderr, flush=True)
    return message


def load_masked_lm(model_params: ModelParams) -> Any:
    """AutoModelForMaskedLM from `model_params`, warning when the head is new."""
    from transformers import AutoModelForMaskedLM

    model, info = load_pretrained(AutoModelForMaskedLM, model_params, output_loading_info=True)
    keys = new_head_keys(model, info.get("missing_keys", ()))
    model.reprotune_new_head = keys
    if keys:
        warn_untrained_head(model, model_params.name_or_path, keys)
    return model
