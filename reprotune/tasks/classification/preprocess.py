"""Tokenize single texts or pairs, truncated to max_length with no padding (the
collator pads each batch), and count what truncation cut.

With `tokenize.windows` a document longer than max_length becomes several feature rows
(the tokenizer's `return_overflowing_tokens` with `stride`), each with the document's
label and its row in the raw split as `example_index`: training sees every window, and
predictions aggregate a document's window logits (`windows.aggregate`, kept in meta.json).
A pair splits the text `truncation` names (longest_first: the longer of the two); a pair
whose other text leaves no room for windows is truncated as without windows (counted).
A document that fits is one row, the same as without windows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from datasets import Dataset, DatasetDict

from reprotune.core.arrow import map_batches
from reprotune.core.errors import ReprotuneError
from reprotune.tasks.classification.params import (
    ClassificationMeta,
    ClassificationTaskParams,
    ClassificationWindows,
)


def values(dataset: Dataset, column: str) -> list[Any]:
    """A column as a list in one Arrow read (indexing a datasets Column item by item is slow)."""
    return dataset[column][:]


def iter_labels(dataset: Dataset) -> Iterator[str]:
    """Label names of a raw split (its `label` column is a ClassLabel)."""
    names = dataset.features["label"].names
    return (names[i] for i in values(dataset, "label"))


def prepare_meta(
    raw: DatasetDict, download_report: dict[str, Any], params: ClassificationTaskParams
) -> ClassificationMeta:
    """The label list is the raw ClassLabel's names (download.labels, the source's
    ClassLabel order, or the labels sorted), fixed here for every later stage; with it
    `tokenize.windows`, which evaluate and predict need to aggregate windows."""
    labels = list(raw["train"].features["label"].names)
    in_train = set(iter_labels(raw["train"]))
    return ClassificationMeta(
        labels=labels,
        labels_missing_from_train=[label for label in labels if label not in in_train],
        text_fields=list(download_report["text_fields"]),
        pair="text_pair" in raw["train"].column_names,
        windows=params.tokenize.windows,
    )


def encode_batch(
    batch: dict[str, list], tokenizer: Any, max_length: int, truncation: str, label_ids: list[int]
) -> dict[str, list]:
    """Batched `map` function: model inputs, `labels` in the model's order, and
    `n_tokens` (length before truncation) / `truncated` for the reports."""
    texts = [batch["text"]] + ([batch["text_pair"]] if "text_pair" in batch else [])
    encoded = tokenizer(*texts, truncation=truncation, max_length=max_length)
    full = tokenizer(*texts, truncation=False, verbose=False)["input_ids"]
    encoded["labels"] = [label_ids[label] for label in batch["label"]]
    encoded["n_tokens"] = [len(ids) for ids in full]
    encoded["truncated"] = [len(ids) > max_length for ids in full]
    return encoded


def encode_windows(
    batch: dict[str, list],
    indices: list[int],
    tokenizer: Any,
    max_length: int,
    truncation: str,
    label_ids: list[int],
    stride: int,
) -> dict[str, list]:
    """Batched `map` function (`with_indices`): one row per window of each document, in
    document order, with `example_index`; `n_tokens` and `truncated` per document, on each row."""
    pair = "text_pair" in batch
    texts = [batch["text"]] + ([batch["text_pair"]] if pair else [])
    full = tokenizer(*texts, truncation=False, verbose=False)["input_ids"]
    strategies = [truncation] * len(batch["text"])
    if pair:
        # Which text gets split: the one `truncation` names, the longer one for longest_first;
        # no window room left by the other text (or either fits anyway): plain truncation.
        first = [len(ids) for ids in tokenizer(batch["text"], add_special_tokens=False)["input_ids"]]
        second = [len(ids) for ids in tokenizer(batch["text_pair"], add_special_tokens=False)["input_ids"]]
        room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
        for i, (a, b) in enumerate(zip(first, second)):
            split = truncation if truncation != "longest_first" else ("only_first" if a >= b else "only_second")
            kept = b if split == "only_first" else a
            strategies[i] = split if room - kept > stride else "longest_first"
    out: dict[str, list] = {}
    for strategy in dict.fromkeys(strategies):
        chosen = [i for i, s in enumerate(strategies) if s == strategy]
        windowed = strategy != "longest_first" or not pair
        encoded = tokenizer(
            *[[column[i] for i in chosen] for column in texts],
            truncation=strategy,
            max_length=max_length,
            stride=stride if windowed else 0,
            return_overflowing_tokens=windowed,
        )
        sample = encoded.pop("overflow_to_sample_mapping", list(range(len(chosen))))
        for key in encoded.keys():
            out.setdefault(key, []).extend(encoded[key])
        out.setdefault("example", []).extend(chosen[k] for k in sample)
        out.setdefault("windowed", []).extend([windowed] * len(sample))
    order = sorted(range(len(out["example"])), key=lambda row: out["example"][row])  # stable: windows keep order
    rows = {key: [column[row] for row in order] for key, column in out.items()}
    examples = rows.pop("example")
    in_windows = rows.pop("windowed")
    rows["labels"] = [label_ids[batch["label"][i]] for i in examples]
    rows["example_index"] = [indices[i] for i in examples]
    rows["n_tokens"] = [len(full[i]) for i in examples]
    rows["truncated"] = [len(full[i]) > max_length and not w for i, w in zip(examples, in_windows)]
    return rows


def per_example(features: Dataset, column: str) -> list[Any]:
    """A column's value for each document: its first row's (one row per document without windows)."""
    if "example_index" not in features.column_names:
        return values(features, column)
    firsts: dict[int, Any] = {}
    for example, value in zip(values(features, "example_index"), values(features, column)):
        firsts.setdefault(example, value)
    return [firsts[example] for example in sorted(firsts)]


def split_report(raw: Dataset, features: Dataset) -> dict[str, Any]:
    lengths = per_example(features, "n_tokens")
    counts = Counter(iter_labels(raw))
    report = {
        "examples": len(raw),
        "truncated": int(sum(per_example(features, "truncated"))),
        "tokens_mean": round(sum(lengths) / len(lengths), 2) if lengths else 0.0,
        "tokens_max": int(max(lengths)) if lengths else 0,
        "label_counts": dict(sorted(counts.items())),
    }
    if "example_index" in features.column_names:
        windows = Counter(values(features, "example_index"))
        report |= {"windows": len(features), "examples_windowed": sum(1 for n in windows.values() if n > 1)}
    return report


def encode_split(
    raw: Any,
    tokenizer: Any,
    max_length: int,
    truncation: str,
    label_ids: list[int],
    windows: ClassificationWindows | None,
    batch_size: int = 1000,
    num_proc: int | None = None,
) -> Any:
    """Features of one split or a DatasetDict: truncated (`windows` None, today's rows) or windowed."""
    kwargs = {"tokenizer": tokenizer, "max_length": max_length, "truncation": truncation, "label_ids": label_ids}
    if windows is None:
        return map_batches(raw, encode_batch, kwargs, "tokenize", batch_size, num_proc)
    kwargs["stride"] = windows.stride
    return map_batches(raw, encode_windows, kwargs, "tokenize (windows)", batch_size, num_proc, with_indices=True)


def tokenize(
    raw: DatasetDict, tokenizer: Any, params: ClassificationTaskParams, meta: ClassificationMeta
) -> tuple[DatasetDict, dict[str, Any]]:
    settings = params.tokenize
    if not meta.pair and settings.truncation == "only_second":
        raise ReprotuneError("tokenize.truncation 'only_second' needs sentence pairs (two download.text_fields)")
    label_index = {label: i for i, label in enumerate(meta.labels)}
    raw_names = raw["train"].features["label"].names
    features = encode_split(
        raw,
        tokenizer,
        settings.max_length,
        settings.truncation,
        [label_index[name] for name in raw_names],
        settings.windows,
        settings.batch_size,
        settings.num_proc,
    )
    report: dict[str, Any] = {split: split_report(raw[split], features[split]) for split in features}
    report["labels"] = meta.labels
    report["labels_missing_from_train"] = meta.labels_missing_from_train
    report["max_length"] = settings.max_length
    return features, report
