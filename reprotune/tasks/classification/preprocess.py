"""Tokenize single texts or pairs, truncated to max_length with no padding (the
collator pads each batch), and count what truncation cut."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from datasets import Dataset, DatasetDict

from reprotune.core.errors import ReprotuneError
from reprotune.tasks.classification.params import ClassificationMeta, ClassificationTaskParams


def values(dataset: Dataset, column: str) -> list[Any]:
    """A column as a list in one Arrow read (indexing a datasets Column item by item is slow)."""
    return dataset[column][:]


def iter_labels(dataset: Dataset) -> Iterator[str]:
    """Label names of a raw split (its `label` column is a ClassLabel)."""
    names = dataset.features["label"].names
    return (names[i] for i in values(dataset, "label"))


def prepare_meta(raw: DatasetDict, download_report: dict[str, Any],
                 params: ClassificationTaskParams) -> ClassificationMeta:
    """The label list is the raw ClassLabel's names (download.labels, the source's
    ClassLabel order, or the labels sorted), fixed here for every later stage."""
    labels = list(raw["train"].features["label"].names)
    in_train = set(iter_labels(raw["train"]))
    return ClassificationMeta(
        labels=labels,
        labels_missing_from_train=[label for label in labels if label not in in_train],
        text_fields=list(download_report["text_fields"]),
        pair="text_pair" in raw["train"].column_names,
    )


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


def tokenize(raw: DatasetDict, tokenizer: Any, params: ClassificationTaskParams,
             meta: ClassificationMeta) -> tuple[DatasetDict, dict[str, Any]]:
    settings = params.tokenize
    if not meta.pair and settings.truncation == "only_second":
        raise ReprotuneError("tokenize.truncation 'only_second' needs sentence pairs (two download.text_fields)")
    label_index = {label: i for i, label in enumerate(meta.labels)}
    raw_names = raw["train"].features["label"].names
    features = raw.map(
        encode_batch,
        batched=True,
        batch_size=settings.batch_size,
        num_proc=settings.num_proc,
        fn_kwargs={"tokenizer": tokenizer, "max_length": settings.max_length, "truncation": settings.truncation,
                   "label_ids": [label_index[name] for name in raw_names]},
        remove_columns=raw["train"].column_names,
        desc="tokenize",
    )
    report: dict[str, Any] = {split: split_report(raw[split], features[split]) for split in features}
    report["labels"] = meta.labels
    report["labels_missing_from_train"] = meta.labels_missing_from_train
    report["max_length"] = settings.max_length
    return features, report
