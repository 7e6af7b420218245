"""Seeded splits carved from train, seeded subsets, and the check that no split is empty."""

from __future__ import annotations

from collections.abc import Mapping

from datasets import DatasetDict

from reprotune.core.arrow import SPLITS
from reprotune.core.errors import ReprotuneError
from reprotune.core.params import MakeSplits


def make_missing_splits(raw: DatasetDict, sizes: MakeSplits, group_column: str | None = None) -> DatasetDict:
    """Carve validation and/or test out of train with a fixed seed when the source lacks them.

    With `group_column`, whole groups move together (a QA article never straddles splits).
    """
    out = dict(raw)
    for split, fraction in (("test", sizes.test), ("validation", sizes.validation)):
        if split in out:
            continue
        train = out["train"]
        if group_column:
            groups = sorted(set(train[group_column]))
            if len(groups) < 2:
                raise ReprotuneError(
                    f"cannot carve a {split} split from train (download.make_splits): train has only "
                    f"{len(groups)} distinct '{group_column}' to hold out; give {split} its own file "
                    f"(download.files.{split}; download.splits on the Hub)"
                )
            import random

            rng = random.Random(sizes.seed)
            rng.shuffle(groups)
            count = max(1, round(len(groups) * fraction))
            held = set(groups[:count])
            keys = train[group_column]
            out[split] = train.select([i for i, key in enumerate(keys) if key in held])
            out["train"] = train.select([i for i, key in enumerate(keys) if key not in held])
        else:
            if len(train) < 3:
                raise ReprotuneError(
                    f"train has {len(train)} examples; too few to carve a {split} split (download.make_splits); "
                    f"give {split} its own file (download.files.{split}; download.splits on the Hub) or read more "
                    "documents from train"
                )
            parts = train.train_test_split(test_size=fraction, seed=sizes.seed)
            out["train"], out[split] = parts["train"], parts["test"]
    return DatasetDict({split: out[split] for split in SPLITS})


def limit_samples(raw: DatasetDict, limits: Mapping[str, int] | None, seed: int) -> DatasetDict:
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
