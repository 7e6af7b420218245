"""LoRA merged into the base weights: a plain transformers checkpoint (safetensors),
loadable without peft, beside the adapter-only artifact that stays the small thing to ship."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reprotune.core.errors import ReprotuneError


def merge_lora(model: Any) -> Any:
    """`merge_and_unload` a peft model (the LoRA deltas added into the base weights, the
    fully trained head modules put in place); a model without adapters comes back as is."""
    merge = getattr(model, "merge_and_unload", None)
    if merge is None:
        return model
    merged = merge(safe_merge=True)
    leftovers = [name for name, _ in merged.named_parameters() if "lora_" in name or "modules_to_save" in name]
    if leftovers:
        raise ReprotuneError(f"merging the LoRA adapter left peft weights behind (e.g. '{leftovers[0]}'); report this")
    return merged


def save_checkpoint(model: Any, tokenizer: Any, target: Path, run_info: dict[str, Any] | None = None) -> Path:
    """Save a plain checkpoint (config, model.safetensors, tokenizer) into `target`; with
    `run_info`, also reprotune.json, so `reprotune-predict` and the server can load it."""
    from reprotune.core.paths import RUN_INFO

    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(target))
    if not any(target.glob("*.safetensors")):
        raise ReprotuneError(f"{target}: the checkpoint was not written as safetensors; report this")
    if run_info is not None:
        (target / RUN_INFO).write_text(json.dumps(run_info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target
