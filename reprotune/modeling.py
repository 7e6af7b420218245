"""Load tokenizers and models from a Hub id, a local directory or a package
directory, with safetensors by default and one clear line when loading fails."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .assets import is_local_ref, resolve_path
from .errors import ReprotuneError
from .params import ModelParams


def model_source(model: ModelParams) -> str:
    """The string handed to `from_pretrained`: a resolved local directory or a Hub id."""
    ref = model.name_or_path
    if is_local_ref(ref):
        path = resolve_path(ref, "model directory")
        if not path.is_dir():
            raise ReprotuneError(f"model '{ref}' is a file; model.name_or_path must be a directory or a Hub id")
        if not (path / "config.json").exists():
            raise ReprotuneError(f"model directory '{ref}' has no config.json (save it with save_pretrained)")
        return str(path)
    if ref.count("/") > 1 or ref.endswith("/"):
        raise ReprotuneError(f"model '{ref}' is neither an existing directory nor a Hub id like 'org/name'")
    return ref


def _explain(exc: Exception, ref: str, what: str) -> ReprotuneError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "trust_remote_code" in str(exc):
        return ReprotuneError(
            f"{what} '{ref}' needs custom code from its repository; set model.trust_remote_code: true "
            "only if you trust it"
        )
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or any(
        word in str(exc) for word in ("connect", "resolve", "offline", "Hub", "huggingface.co", "network")
    )
    if not is_local_ref(ref):
        reason = "the Hugging Face Hub is unreachable" if offline else text
        return ReprotuneError(
            f"could not load {what} '{ref}' ({reason}); on a machine without the Hub, download it elsewhere "
            "with save_pretrained and set model.name_or_path to that directory (or package:NAME/path)"
        )
    return ReprotuneError(f"could not load {what} from '{ref}': {text}")


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


def check_weight_format(source: str, model: ModelParams) -> None:
    """Refuse pickled `.bin` weights unless allowed: unpickling can run arbitrary code."""
    path = Path(source)
    if not path.is_dir():
        return
    has_safetensors = any(path.glob("*.safetensors"))
    has_pickle = any(path.glob("pytorch_model*.bin"))
    if not has_safetensors and has_pickle and not model.allow_pickle:
        raise ReprotuneError(
            f"model '{model.name_or_path}' has only pickled .bin weights; convert them to safetensors "
            "or set model.allow_pickle: true if you trust the files"
        )


def load_pretrained(auto_class: Any, model: ModelParams, **kwargs: Any) -> Any:
    """`auto_class.from_pretrained` with the params' safety switches and a clear error."""
    source = model_source(model)
    check_weight_format(source, model)
    if model.attn_implementation:
        kwargs["attn_implementation"] = model.attn_implementation
    try:
        return auto_class.from_pretrained(
            source,
            trust_remote_code=model.trust_remote_code,
            use_safetensors=None if model.allow_pickle else True,
            revision=model.revision,
            **kwargs,
        )
    except ReprotuneError:
        raise
    except Exception as exc:
        raise _explain(exc, model.name_or_path, "model") from exc


def load_labelled_model(auto_class: Any, model: ModelParams, labels: list[str], source: str | None = None,
                        **kwargs: Any) -> Any:
    """A model with a head of len(labels) outputs and readable label names in its config;
    `source` (a trained checkpoint) replaces the params' model."""
    params = model if source is None else model.model_copy(update={"name_or_path": source})
    return load_pretrained(
        auto_class, params, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)}, **kwargs,
    )


def count_parameters(model: Any) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total_params": int(total), "trainable_params": int(trainable)}
