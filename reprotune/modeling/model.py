"""Pretrained models with a task head, safetensors by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reprotune.core.errors import ReprotuneError
from reprotune.core.params import ModelParams
from reprotune.modeling.resolve import _explain, model_source


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


def load_labelled_model(
    auto_class: Any, model: ModelParams, labels: list[str], source: str | None = None, **kwargs: Any
) -> Any:
    """A model with a head of len(labels) outputs and readable label names in its config;
    `source` (a trained checkpoint) replaces the params' model."""
    params = model if source is None else model.model_copy(update={"name_or_path": source})
    return load_pretrained(
        auto_class,
        params,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        **kwargs,
    )


def count_parameters(model: Any) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total_params": int(total), "trainable_params": int(trainable)}
