"""Arrow dataset directories that stages hand to each other: saved atomically, loaded with a hint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, load_from_disk

from reprotune.core.atomic import atomic_dir
from reprotune.core.errors import ReprotuneError

SPLITS = ("train", "validation", "test")

# Never write cache files next to loaded Arrow data: `map` on a loaded split would add them
# inside a DVC out. Here, where every stage loads its Arrow data, so no stage can miss it.
datasets.disable_caching()


def save_dataset(dataset: DatasetDict, target: Path, extra_json: dict[str, Any] | None = None) -> None:
    """save_to_disk into a temporary directory, then rename into place, with each split's
    fingerprint replaced by a digest of its Arrow files (see `_pin_fingerprints`)."""
    with atomic_dir(target) as tmp:
        dataset.save_to_disk(str(tmp))
        _pin_fingerprints(tmp)
        for name, payload in (extra_json or {}).items():
            (tmp / name).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _pin_fingerprints(saved: Path) -> None:
    """`datasets` records a fingerprint of the transforms that made each split, which hashes
    the tokenizer object and so differs between machines and virtual environments for
    byte-identical data: the same inputs would give a different DVC out, and every stage
    downstream would rerun. The digest of the Arrow files themselves is what the
    fingerprint stands for here (caching is off), and it is the same everywhere."""
    for state_file in sorted(saved.glob("*/state.json")):
        digest = hashlib.sha256()
        for arrow in sorted(state_file.parent.glob("*.arrow")):
            digest.update(arrow.name.encode())
            digest.update(arrow.read_bytes())
        state = json.loads(state_file.read_text(encoding="utf-8"))
        state["_fingerprint"] = digest.hexdigest()[:16]
        state_file.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_dataset_dir(path: Path, stage_hint: str) -> DatasetDict:
    if not path.exists():
        raise ReprotuneError(f"{path} is missing; run the {stage_hint} stage first (dvc repro)")
    return load_from_disk(str(path))


def load_splits(path: Path, stage_hint: str, splits: tuple[str, ...]) -> DatasetDict:
    """Only `splits` of a saved DatasetDict: the other splits' files are never opened (the
    train stages and the search do not read test)."""
    if not path.exists():
        raise ReprotuneError(f"{path} is missing; run the {stage_hint} stage first (dvc repro)")
    missing = [split for split in splits if not (path / split).is_dir()]
    if missing:
        raise ReprotuneError(f"{path} has no '{missing[0]}' split; run the {stage_hint} stage again (dvc repro)")
    return DatasetDict({split: Dataset.load_from_disk(str(path / split)) for split in splits})


def read_meta(tokenized: Path) -> dict[str, Any]:
    return json.loads((tokenized / "meta.json").read_text(encoding="utf-8"))


def map_batches(
    raw: Any,
    function: Callable[..., dict[str, list[Any]]],
    kwargs: dict[str, Any],
    desc: str,
    batch_size: int,
    num_proc: int | None,
    with_indices: bool = False,
    remove_columns: list[str] | None = None,
) -> Any:
    """`raw.map` in batches over one split or a DatasetDict, dropping `remove_columns` (all the
    raw columns by default: a windowed map makes more rows than it reads)."""
    if remove_columns is None:
        remove_columns = raw["train"].column_names if isinstance(raw, DatasetDict) else raw.column_names
    return raw.map(
        function,
        batched=True,
        with_indices=with_indices,
        batch_size=batch_size,
        num_proc=num_proc,
        fn_kwargs=kwargs,
        remove_columns=remove_columns,
        desc=desc,
    )
