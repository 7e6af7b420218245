"""The same text in two splits: one normalised key per example, and the overlap report.

An example's text is its family's `TEXT_FIELDS` (list columns, such as NER tokens, joined
with spaces), compared after folding case and collapsing white space, so a sentence that
differs only in capitals or spacing counts as the same text. Fields are compared one by one
(a sentence pair matches only a pair with the same two sentences). Columns a split lacks
(`text_pair` of single-sentence tasks) are left out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from datasets import Dataset, DatasetDict

EVAL_SPLITS = ("validation", "test")
FIELD_SEPARATOR = "\x00"


def normalise(value: Any) -> str:
    """One field as compared text: lists joined with spaces, white space collapsed, case folded."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(normalise(part) for part in value)
    return " ".join(str(value).split()).casefold()


def text_key(values: Iterable[Any]) -> bytes:
    """A fixed-size digest of one example's normalised fields (equal texts, equal keys)."""
    joined = FIELD_SEPARATOR.join(normalise(value) for value in values)
    return hashlib.blake2b(joined.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def present_fields(dataset: Dataset, text_fields: Sequence[str]) -> list[str]:
    return [name for name in text_fields if name in dataset.column_names]


def text_keys(dataset: Dataset, text_fields: Sequence[str]) -> list[bytes]:
    """The text key of every row of `dataset`, in row order."""
    fields = present_fields(dataset, text_fields)
    if not fields:
        raise ValueError(f"none of the text fields {list(text_fields)} is a column of {dataset.column_names}")
    columns = [dataset[name] for name in fields]
    return [text_key(values) for values in zip(*columns, strict=True)]


def overlap_report(
    raw: DatasetDict | Mapping[str, Dataset], text_fields: Sequence[str], carved: Iterable[str] = ()
) -> dict[str, Any]:
    """For validation and test: how many examples, and how many have a text that train also holds.

    `carved` names the splits cut out of train here (the rest came from the source as given);
    examples are counted, never removed.
    """
    carved = set(carved)
    train = set(text_keys(raw["train"], text_fields))
    report: dict[str, Any] = {}
    for split in EVAL_SPLITS:
        if split not in raw:
            continue
        keys = text_keys(raw[split], text_fields)
        report[split] = {
            "examples": len(keys),
            "with_text_in_train": sum(key in train for key in keys),
            "split_from": "train" if split in carved else "source",
        }
    return report
