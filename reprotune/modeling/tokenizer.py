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
