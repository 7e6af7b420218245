"""Fast tokenizers for the tokenize stage (and the stages that decode with them)."""

from __future__ import annotations

from typing import Any

from reprotune.core.errors import ReprotuneError
from reprotune.core.params import ModelParams
from reprotune.modeling.resolve import _explain, model_source

# Byte-level BPE tokenizers need add_prefix_space=True to take lists of words.
BYTE_LEVEL_TYPES = {"roberta", "longformer", "bart", "gpt2", "deberta", "mvp", "led"}


def load_tokenizer(model: ModelParams, pretokenized: bool = False) -> Any:
    """Load a fast tokenizer; slow ones lack the word/offset mappings alignment needs."""
    from transformers import AutoConfig, AutoTokenizer

    source = model_source(model)
    try:
        kwargs: dict[str, Any] = {}
        if pretokenized:
            config = AutoConfig.from_pretrained(
                source, trust_remote_code=model.trust_remote_code, revision=model.revision
            )
            if config.model_type in BYTE_LEVEL_TYPES:
                kwargs["add_prefix_space"] = True
        tokenizer = AutoTokenizer.from_pretrained(
            source, trust_remote_code=model.trust_remote_code, revision=model.revision, **kwargs
        )
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...
        raise _explain(exc, model.name_or_path, "tokenizer") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ReprotuneError(
            f"tokenizer of '{model.name_or_path}' is not a fast tokenizer; word alignment and answer offsets "
            "need one (a tokenizer.json file)"
        )
    return tokenizer


def position_limit(model: ModelParams, tokenizer: Any) -> int | None:
    """The longest input the model can take: its position embeddings, and the tokenizer's
    `model_max_length` where that is a real number (transformers uses a huge sentinel)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            model_source(model), trust_remote_code=model.trust_remote_code, revision=model.revision
        )
    except Exception as exc:
        raise _explain(exc, model.name_or_path, "model config") from exc
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    usable = [int(limit) for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000]
    return min(usable) if usable else None


def check_length(model: ModelParams, tokenizer: Any, length: int | None, where: str) -> None:
    """Refuse a `max_length` (or MLM `chunk_size`) the model cannot take, before tokenizing:
    it would fail in training, or be cut silently by the tokenizer."""
    limit = position_limit(model, tokenizer) if length is not None else None
    if length is not None and limit is not None and length > limit:
        raise ReprotuneError(
            f"params.yaml: '{where}' is {length} but model '{model.name_or_path}' takes at most {limit} tokens; "
            f"allowed: 2 to {limit}"
        )
