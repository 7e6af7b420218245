"""Local files read once for every family: text lines, JSON, JSON lines, CSV/TSV, Parquet and folders,
naming the file and line on every error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reprotune.core.assets import resolve_path
from reprotune.core.errors import ReprotuneError
from reprotune.core.params import DownloadParams


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
