"""Tokenize single texts or pairs, truncated to max_length with no padding (the
collator pads each batch), and count what truncation cut."""

from __future__ import annotations

from collections import Counter
from typing import Any

from datasets import Dataset

from reprotune.tasks.classification.sources import iter_labels, values


def encode_batch(batch: dict[str, list], tokenizer: Any, max_length: int, truncation: str,
                 label_ids: list[int]) -> dict[str, list]:
    """Batched `map` function: model inputs, `labels` in the model's order, and
    `n_tokens` (length before truncation) / `truncated` for the reports."""
    texts = [batch["text"]] + ([batch["text_pair"]] if "text_pair" in batch else [])
    encoded = tokenizer(*texts, truncation=truncation, max_length=max_length)
    full = tokenizer(*texts, truncation=False, verbose=False)["input_ids"]
    encoded["labels"] = [label_ids[label] for label in batch["label"]]
    encoded["n_tokens"] = [len(ids) for ids in full]
    encoded["truncated"] = [len(ids) > max_length for ids in full]
    return encoded


def split_report(raw: Dataset, features: Dataset) -> dict[str, Any]:
    lengths = values(features, "n_tokens")
    counts = Counter(iter_labels(raw))
    return {
        "examples": len(features),
        "truncated": int(sum(values(features, "truncated"))),
        "tokens_mean": round(sum(lengths) / len(lengths), 2) if lengths else 0.0,
        "tokens_max": int(max(lengths)) if lengths else 0,
        "label_counts": dict(sorted(counts.items())),
    }
