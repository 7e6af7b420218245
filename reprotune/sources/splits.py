"""Seeded splits carved from train (one text, or near-duplicate texts, never on two sides),
seeded subsets, and the check that no split is empty."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from datasets import Dataset, DatasetDict

from reprotune.core.arrow import SPLITS
from reprotune.core.errors import ReprotuneError
from reprotune.core.params import Duplicates, MakeSplits, NearDuplicates, SplitName
from reprotune.sources.near_duplicates import NearDuplicateIndex, components
from reprotune.sources.overlap import folded_texts, text_keys

T = TypeVar("T")


def make_missing_splits(
    raw: DatasetDict,
    sizes: MakeSplits,
    group_column: str | None = None,
    text_fields: Sequence[str] = (),
    duplicates: Duplicates = "group",
    near: NearDuplicates | None = None,
) -> DatasetDict:
    """`carve_missing_splits` without its report."""
    return carve_missing_splits(raw, sizes, group_column, text_fields, duplicates, near)[0]


def carve_missing_splits(
    raw: DatasetDict,
    sizes: MakeSplits,
    group_column: str | None = None,
    text_fields: Sequence[str] = (),
    duplicates: Duplicates = "group",
    near: NearDuplicates | None = None,
) -> tuple[DatasetDict, dict[str, Any]]:
    """Carve validation and/or test out of train with a fixed seed when the source lacks them.

    With `group_column`, whole groups move together (a QA article never straddles splits).
    With `text_fields`, `duplicates` says what happens to identical texts (see `overlap`):
    `group` joins rows of one text into a group (and with `group_column`, groups sharing a
    text into one), so fractions count groups and no text lands on two sides; `drop_from_eval`
    carves as `keep` does, then drops carved validation/test rows whose text stays in train;
    `keep` carves rows (or `group_column` groups) as they come. Without duplicates, `group`
    carves exactly what `keep` does. With `near` on (`download.near_duplicates`), near-duplicate
    texts count as one text throughout: `group` joins them (union-find over the pairs found in
    train), `drop_from_eval` also drops carved rows with a near-duplicate left in train. The
    report counts duplicates, near-duplicate pairs and drops.
    """
    out = dict(raw)
    carved = [split for split in ("test", "validation") if split not in out]
    report: dict[str, Any] = {"carved": carved}
    if not carved:
        return DatasetDict({split: out[split] for split in SPLITS}), report
    by_text = bool(text_fields) and duplicates == "group"
    threshold = near.threshold if near is not None and text_fields and duplicates != "keep" else None
    # per row of out[split], carried along as rows move (computed once): the text key, the
    # text's group (its near-duplicates joined) and, with `near` on, the folded text
    keys: dict[str, list[bytes]] = {}
    joins: dict[str, list[int]] = {}
    texts: dict[str, list[str]] = {}
    if text_fields:
        keys["train"] = text_keys(out["train"], text_fields)
        counts = Counter(keys["train"])
        report["duplicates"] = duplicates
        report["train_examples"] = len(out["train"])
        report["distinct_texts"] = len(counts)
        report["examples_sharing_text"] = sum(count for count in counts.values() if count > 1)
        pairs: list[tuple[int, int]] = []
        if near is not None and threshold is not None:
            texts["train"] = folded_texts(out["train"], text_fields)
            pairs = NearDuplicateIndex(texts["train"], threshold, near.ngram).pairs()
            report["near_duplicate_threshold"] = threshold
            report["near_duplicate_pairs"] = sum(keys["train"][a] != keys["train"][b] for a, b in pairs)
        joins["train"] = components([keys["train"]], pairs, len(keys["train"]))
        if threshold is not None:
            report["distinct_texts_after_near_duplicates"] = len(set(joins["train"]))
    for split in carved:
        fraction = sizes.test if split == "test" else sizes.validation
        train = out["train"]
        join = joins["train"] if by_text else None
        if group_column:
            held, kept, groups = _carve_groups(train, split, fraction, sizes.seed, group_column, join)
        else:
            if join is None and len(train) < 3:
                raise ReprotuneError(
                    f"train has {len(train)} examples; too few to carve a {split} split (download.make_splits); "
                    f"give {split} its own file (download.files.{split}; download.splits on the Hub) or read more "
                    "documents from train"
                )
            held, kept, groups = _carve_rows(train, split, fraction, sizes.seed, join)
        out[split], out["train"] = train.select(held), train.select(kept)
        _move(keys, split, held, kept)
        _move(joins, split, held, kept)
        _move(texts, split, held, kept)
        if by_text or group_column:
            report.setdefault("groups_in_train", {})[split] = groups
    if text_fields and duplicates == "drop_from_eval":
        in_train = set(keys["train"])
        index = None
        if near is not None and threshold is not None:
            index = NearDuplicateIndex(texts["train"], threshold, near.ngram)
        dropped = {}
        for split in carved:
            similar = index.has_match(texts[split]) if index is not None else [False] * len(keys[split])
            keep = [row for row, key in enumerate(keys[split]) if key not in in_train and not similar[row]]
            dropped[split] = len(keys[split]) - len(keep)
            out[split] = out[split].select(keep)
        report["dropped_from_eval"] = dropped
    return DatasetDict({split: out[split] for split in SPLITS}), report


def _move(carried: dict[str, list[T]], split: str, held: list[int], kept: list[int]) -> None:
    """Split the per-row values of train along with its rows (nothing to do when none are kept)."""
    if "train" in carried:
        carried[split] = [carried["train"][row] for row in held]
        carried["train"] = [carried["train"][row] for row in kept]


def _carve_groups(
    train: Dataset, split: str, fraction: float, seed: int, group_column: str, keys: Sequence[Hashable] | None
) -> tuple[list[int], list[int], int]:
    """Hold out a seeded share of the `group_column` groups (joined by text when `keys` is given),
    in row order: the old article carving, unchanged where no text joins two groups."""
    values = train[group_column]
    component = components([values] if keys is None else [values, keys], (), len(values))
    name: dict[int, Any] = {}
    for row, value in enumerate(values):
        root = component[row]
        name[root] = value if root not in name else min(name[root], value)
    groups = sorted(set(name.values()))
    if len(groups) < 2:
        joined = " (after joining groups that share a text; download.duplicates)" if keys is not None else ""
        raise ReprotuneError(
            f"cannot carve a {split} split from train (download.make_splits): train has only "
            f"{len(groups)} distinct '{group_column}'{joined} to hold out; give {split} its own file "
            f"(download.files.{split}; download.splits on the Hub)"
        )
    rng = random.Random(seed)
    rng.shuffle(groups)
    count = min(max(1, round(len(groups) * fraction)), len(groups) - 1)
    held_names = set(groups[:count])
    held = [row for row in range(len(values)) if name[component[row]] in held_names]
    kept = [row for row in range(len(values)) if name[component[row]] not in held_names]
    return held, kept, len(groups)


def _carve_rows(
    train: Dataset, split: str, fraction: float, seed: int, keys: Sequence[Hashable] | None
) -> tuple[list[int], list[int], int]:
    """Hold out a seeded share of rows (of groups of one text, when `keys` is given) in the
    order of `Dataset.train_test_split`'s permutation: with no two rows of one text, exactly
    the rows (and order) `train_test_split(test_size=fraction, seed=seed)` gives."""
    permutation = np.random.default_rng(seed).permutation(len(train)).tolist()
    if keys is None:
        group_of = list(range(len(train)))
    else:
        group_of = components([keys], (), len(train))
    order: dict[int, int] = {}
    for row in permutation:
        order.setdefault(group_of[row], len(order))
    if len(order) < 2:
        raise ReprotuneError(
            f"train holds {len(order)} distinct text; too few to carve a {split} split (download.make_splits) "
            f"with download.duplicates: group; give {split} its own file (download.files.{split}; "
            "download.splits on the Hub)"
        )
    count = min(math.ceil(fraction * len(order)), len(order) - 1)
    held = [row for row in permutation if order[group_of[row]] < count]
    kept = [row for row in permutation if order[group_of[row]] >= count]
    return held, kept, len(order)


def limit_samples(raw: DatasetDict, limits: Mapping[SplitName, int] | None, seed: int) -> DatasetDict:
    """Keep a seeded random subset of each split named in `download.max_samples`."""
    if not limits:
        return raw
    out = dict(raw)
    for split, count in limits.items():
        if count <= 0:
            raise ReprotuneError(f"download.max_samples.{split} must be > 0 (got {count})")
        if split in out and len(out[split]) > count:
            out[split] = out[split].shuffle(seed=seed).select(range(count)).flatten_indices()
    return DatasetDict(out)


def check_not_empty(raw: DatasetDict) -> None:
    for split, dataset in raw.items():
        if len(dataset) == 0:
            raise ReprotuneError(f"split '{split}' is empty after loading; check download.files / splits")
