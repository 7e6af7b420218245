"""Shared dataset plumbing: Hub loading, local files, seeded splits, sampling, saving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_from_disk

from .assets import resolve_path
from .atomic import atomic_dir
from .errors import ReprotuneError
from .params import DownloadParams, MakeSplits

SPLITS = ("train", "validation", "test")


def load_hub(params: DownloadParams) -> DatasetDict:
    """`load_dataset(dataset, config)` with one clear line when the Hub cannot be reached."""
    from datasets import load_dataset

    if not params.dataset:
        raise ReprotuneError("download.source 'hub' needs download.dataset (a Hub dataset id)")
    try:
        loaded = load_dataset(params.dataset, params.config, revision=params.revision)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReprotuneError(
            f"could not load Hub dataset '{params.dataset}'"
            f"{'/' + params.config if params.config else ''} ({first}); without the Hub, save the files "
            "locally and set download.source to a local format with download.files"
        ) from exc
    return rename_splits(DatasetDict(loaded), params.splits)


def rename_splits(raw: DatasetDict, mapping: dict[str, str] | None) -> DatasetDict:
    """Map the source's split names onto train/validation/test (e.g. wikiann's names pass through)."""
    mapping = dict(mapping or {})
    claimed = set(mapping.values())
    aliases = {"dev": "validation", "valid": "validation", "val": "validation"}
    out: dict[str, Dataset] = {}
    for ours in SPLITS:
        theirs = mapping.get(ours)
        if theirs is not None:
            if theirs not in raw:
                raise ReprotuneError(
                    f"download.splits.{ours}: source has no split '{theirs}'; it has {', '.join(raw)}"
                )
            out[ours] = raw[theirs]
        elif ours in raw and ours not in claimed:
            out[ours] = raw[ours]
        else:
            alias = next((name for name, target in aliases.items()
                          if target == ours and name in raw and name not in claimed), None)
            if alias:
                out[ours] = raw[alias]
    if "train" not in out:
        raise ReprotuneError(f"source has no 'train' split (it has {', '.join(raw)}); map one with download.splits")
    return DatasetDict(out)


def local_files(params: DownloadParams) -> dict[str, Path]:
    """The split -> file mapping from `download.files`, or `download.path` as the train file."""
    if params.files:
        return {split: resolve_path(ref, f"download.files.{split}") for split, ref in params.files.items()}
    if params.path:
        return {"train": resolve_path(params.path, "download.path")}
    raise ReprotuneError(f"download.source '{params.source}' needs download.path or download.files")


def read_text_lines(path: Path, replace_invalid: bool = False) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) and name the file and line on bytes that are not UTF-8
    (or, with `replace_invalid`, put U+FFFD in their place).
    A byte-order mark opening a line is dropped: editors write one at the start of a file,
    and files joined with `cat` carry it into the middle (WNUT-17's dev set ends in one)."""
    errors = "replace" if replace_invalid else "strict"
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode("utf-8", errors).rstrip("\r\n").lstrip("\ufeff")
            except UnicodeDecodeError as exc:
                raise ReprotuneError(f"{path}:{number}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc


def read_json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; bad JSON names file and line."""
    for number, line in read_text_lines(path):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReprotuneError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(value, dict):
            raise ReprotuneError(f"{path}:{number}: expected a JSON object per line, found {type(value).__name__}")
        yield number, value


def read_json_file(path: Path) -> Any:
    """Parse one JSON document; a leading byte-order mark is accepted, and bad bytes or bad
    JSON name the file and line."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ReprotuneError(f"{path}:{line}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            raise JsonLinesInstead from exc
        raise ReprotuneError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc


class JsonLinesInstead(Exception):
    """A `.json` file holding one object per line, as HF `Dataset.to_json` writes by default."""


def read_json_records(path: Path, unit: str = "example") -> list[tuple[str, dict[str, Any]]]:
    """(where, object) for each record of a JSON list, a {"data": [...]} wrapper, or JSON
    lines in a .json file (HF's `to_json` default); `where` is file:line or `file row N`."""
    try:
        value = read_json_file(path)
    except JsonLinesInstead:
        return [(f"{path}:{number}", record) for number, record in read_json_lines(path)]
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    elif isinstance(value, dict):
        return [(f"{path}:1", value)]  # JSON lines with a single line
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ReprotuneError(f"{path}: expected a list of objects (or {{\"data\": [...]}}), one per {unit}")
    return [(f"{path} row {number}", item) for number, item in enumerate(value, start=1)]


def parquet_feature(path: Path, column: str) -> Any:
    """The `datasets` feature (a ClassLabel with its names, say) that a Parquet file written
    by HF `to_parquet` records for one column in its schema metadata; None when the file
    has no such record. Only that column is decoded, so other exotic columns don't matter."""
    import pyarrow.parquet as pq
    from datasets import Features

    try:
        metadata = pq.read_schema(path).metadata or {}
    except OSError as exc:
        raise ReprotuneError(f"{path}: cannot read as parquet: {str(exc).splitlines()[0]}") from exc
    try:
        feature = json.loads(metadata[b"huggingface"])["info"]["features"][column]
        return Features.from_dict({column: feature})[column]
    except (KeyError, TypeError, ValueError):
        return None


def read_table(path: Path, fmt: str, tsv_quoting: str = "none", **kwargs: Any) -> Any:
    """Read CSV/TSV/Parquet into pandas, naming the file on failure (JSON goes through
    `read_json_records`, which keeps value types and names lines).

    TSV is read without quoting by default (`tsv_quoting: none`: raw GLUE files have bare
    quote marks, which CSV quoting would join across lines); a leading BOM is accepted."""
    import csv

    import pandas as pd

    try:
        if fmt in ("csv", "tsv"):
            if fmt == "tsv" and tsv_quoting == "none":
                kwargs = {"quoting": csv.QUOTE_NONE, **kwargs}
            return pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", encoding="utf-8-sig", **kwargs)
        if fmt == "parquet":
            return pd.read_parquet(path, **kwargs)
    except UnicodeDecodeError as exc:
        raise ReprotuneError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except (ValueError, OSError) as exc:
        raise ReprotuneError(f"{path}: cannot read as {fmt}: {str(exc).splitlines()[0]}") from exc
    raise ReprotuneError(f"unknown table format '{fmt}'; allowed: csv, tsv, parquet")


def visible_files(root: Path, pattern: str) -> list[Path]:
    """Files under `root` matching `pattern`, sorted, leaving out hidden files and folders
    and macOS archive debris (`._name`, `__MACOSX/`), which are never documents."""
    return sorted(
        path for path in root.glob(pattern)
        if path.is_file()
        and not any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(root).parts)
    )


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


def limit_samples(raw: DatasetDict, limits: dict[str, int] | None, seed: int) -> DatasetDict:
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


def save_dataset(dataset: DatasetDict, target: Path, extra_json: dict[str, Any] | None = None) -> None:
    """save_to_disk into a temporary directory, then rename into place."""
    with atomic_dir(target) as tmp:
        dataset.save_to_disk(str(tmp))
        for name, payload in (extra_json or {}).items():
            (tmp / name).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_dataset_dir(path: Path, stage_hint: str) -> DatasetDict:
    if not path.exists():
        raise ReprotuneError(f"{path} is missing; run the {stage_hint} stage first (dvc repro)")
    return load_from_disk(str(path))


def read_meta(tokenized: Path) -> dict[str, Any]:
    return json.loads((tokenized / "meta.json").read_text(encoding="utf-8"))
