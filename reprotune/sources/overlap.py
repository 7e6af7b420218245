"""The same text in two splits: one normalised key per example, and the overlap report.

An example's text is its family's `TEXT_FIELDS` (list columns, such as NER tokens, joined
with spaces), compared after folding case and collapsing white space, so a sentence that
differs only in capitals or spacing counts as the same text. Fields are compared one by one
(a sentence pair matches only a pair with the same two sentences). Columns a split lacks
(`text_pair` of single-sentence tasks) are left out.

With `download.near_duplicates` (see `near_duplicates`), texts that are the same after
Unicode, punctuation and tokenisation folding, or nearly so, are counted too: between each
evaluation split and train, and within each evaluation split as clusters (`cluster_ids`), so
that resampling can treat the copies of one text as one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from datasets import Dataset, DatasetDict

from reprotune.core.params import NearDuplicates
from reprotune.sources.near_duplicates import NearDuplicateIndex, components, folded

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


def folded_texts(dataset: Dataset, text_fields: Sequence[str]) -> list[str]:
    """The folded text (`near_duplicates.folded`) of every row of `dataset`, in row order."""
    columns = [dataset[name] for name in present_fields(dataset, text_fields)]
    return [folded(values) for values in zip(*columns, strict=True)]


def cluster_ids(dataset: Dataset, text_fields: Sequence[str], near: NearDuplicates | None) -> list[int]:
    """Each row's cluster: rows of one text (exact, or near-duplicate with `near` on) share the
    id, which is the cluster's first row. A bootstrap that resamples clusters, not rows, does
    not count a repeated text as independent evidence."""
    keys = text_keys(dataset, text_fields)
    pairs: list[tuple[int, int]] = []
    if near is not None and near.threshold is not None:
        pairs = NearDuplicateIndex(folded_texts(dataset, text_fields), near.threshold, near.ngram).pairs()
    return components([keys], pairs, len(keys))


def split_clusters(
    raw: DatasetDict | Mapping[str, Dataset], text_fields: Sequence[str], near: NearDuplicates | None
) -> dict[str, list[int]]:
    """`cluster_ids` of validation and test (saved as clusters.json next to the raw splits)."""
    return {split: cluster_ids(raw[split], text_fields, near) for split in EVAL_SPLITS if split in raw}


def overlap_report(
    raw: DatasetDict | Mapping[str, Dataset],
    text_fields: Sequence[str],
    carved: Iterable[str] = (),
    near: NearDuplicates | None = None,
) -> dict[str, Any]:
    """For validation and test: how many examples and distinct texts, and how many have a text
    that train also holds; with `near` on, also how many have a near-duplicate in train (exact
    copies included) and how many clusters of near-duplicates the split holds.

    `carved` names the splits cut out of train here (the rest came from the source as given);
    examples are counted, never removed.
    """
    carved = set(carved)
    train = set(text_keys(raw["train"], text_fields))
    index = None
    if near is not None and near.threshold is not None:
        index = NearDuplicateIndex(folded_texts(raw["train"], text_fields), near.threshold, near.ngram)
    report: dict[str, Any] = {}
    for split in EVAL_SPLITS:
        if split not in raw:
            continue
        keys = text_keys(raw[split], text_fields)
        exact = [key in train for key in keys]
        entry = {
            "examples": len(keys),
            "distinct_texts": len(set(keys)),
            "with_text_in_train": sum(exact),
            "split_from": "train" if split in carved else "source",
        }
        if index is not None:
            similar = index.has_match(folded_texts(raw[split], text_fields))
            entry["with_near_duplicate_in_train"] = sum(a or b for a, b in zip(exact, similar, strict=True))
            entry["near_duplicate_clusters"] = len(set(cluster_ids(raw[split], text_fields, near)))
        report[split] = entry
    return report
