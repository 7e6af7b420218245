"""Local files read once for every family: text lines, CoNLL-style column files, CSV/TSV,
JSON, JSON lines, Parquet and folders, as `Row`s that name their file and line (or row) on
every error. Families only map the rows' columns to their own fields.

Also here, since every family's download starts with it: which files (or which source
split) serve each of our splits."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple, cast

from datasets import ClassLabel, DatasetDict

from reprotune.core.assets import resolve_path
from reprotune.core.assets import visible_files as visible_files  # folders: shared with fingerprint
from reprotune.core.errors import ReprotuneError
from reprotune.core.params import DownloadParams

csv.field_size_limit(2**31 - 1)  # news articles in one CSV cell exceed the 128 KiB default


class Row(NamedTuple):
    """One data row of a local file and where it came from."""

    where: str
    """How errors name it: `file:line` (text formats, JSON lines) or `file row N` (a JSON list, Parquet)."""
    line: int | None
    """Its (first) line in the file; None where the format has no lines (a JSON list, Parquet)."""
    number: int
    """Its place among the file's data rows, from 1."""
    values: Any
    """A list of cells (CSV/TSV, CoNLL) or a dict of fields (JSON, JSON lines, Parquet)."""
    text: str = ""
    """The raw line, for messages (CoNLL)."""


# Which files serve each split -----------------------------------------------------

PathKind = Literal["file", "any"]


def split_paths(params: DownloadParams, kind: PathKind = "file") -> dict[str, list[Path]]:
    """download.files (a path or a list of them per split) or download.path as train.
    `kind: file` refuses a folder (or anything but a regular file) with the key that named it."""
    files = cast("Mapping[str, str | list[str]] | None", params.files)  # a list per split: classification
    if files:
        out: dict[str, list[Path]] = {}
        for split, refs in files.items():
            listed = [refs] if isinstance(refs, str) else refs
            if not listed:
                raise ReprotuneError(f"download.files.{split} is an empty list; name at least one file")
            out[split] = [checked_path(ref, f"download.files.{split}", params.source, kind) for ref in listed]
        return out
    if params.path:
        return {"train": [checked_path(params.path, "download.path", params.source, kind)]}
    raise ReprotuneError(f"download.source '{params.source}' needs download.path or download.files")


def local_files(params: DownloadParams, kind: PathKind = "file") -> dict[str, Path]:
    """The split -> file mapping from `download.files`, or `download.path` as the train file."""
    return {split: paths[0] for split, paths in split_paths(params, kind).items()}


def checked_path(ref: str, key: str, source: str, kind: PathKind) -> Path:
    path = resolve_path(ref, key)
    if kind == "file" and not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file"
        raise ReprotuneError(f"{key} '{ref}' is {what}; source '{source}' reads one file per split")
    return path


def one_source_split_each(raw: DatasetDict, splits: Mapping[Any, str] | None) -> DatasetDict:
    """`splits: {test: validation}` also leaves the source's validation under its own
    name; drop that copy so validation is carved from train instead of equalling test
    (checkpoint choice on test). Two of our splits mapped to one source split is an error."""
    mapping: dict[str, str] = {str(ours): theirs for ours, theirs in (splits or {}).items()}
    out = dict(raw)
    for ours, dataset in raw.items():
        twins = [other for other, candidate in raw.items() if other != ours and candidate is dataset]
        for other in twins:
            if ours in mapping and other in mapping:
                raise ReprotuneError(
                    f"download.splits maps both '{ours}' and '{other}' to the source split '{mapping[ours]}'; "
                    "leave one out and it is carved from train (download.make_splits)"
                )
            if other in mapping and ours not in mapping:
                out.pop(ours, None)
    return DatasetDict(out)


def first_repeat(values: Iterable[str]) -> tuple[int, str] | None:
    """(place from 1, value) of the first value seen twice, or None."""
    seen: set[str] = set()
    for number, value in enumerate(values, start=1):
        if value in seen:
            return number, value
        seen.add(value)
    return None


# Text ---------------------------------------------------------------------------------


def open_binary(path: Path) -> BinaryIO:
    """The file opened for reading; a folder, a missing file or no permission is one line."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise ReprotuneError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from exc


def read_text_lines(path: Path, replace_invalid: bool = False) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) and name the file and line on bytes that are not UTF-8
    (or, with `replace_invalid`, put U+FFFD in their place).
    A byte-order mark opening a line is dropped: editors write one at the start of a file,
    and files joined with `cat` carry it into the middle (WNUT-17's dev set ends in one)."""
    errors = "replace" if replace_invalid else "strict"
    with open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode("utf-8", errors).rstrip("\r\n").lstrip("\ufeff")
            except UnicodeDecodeError as exc:
                raise ReprotuneError(f"{path}:{number}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc


def read_lines_or_repair(path: Path, invalid_utf8: str) -> tuple[list[tuple[int, str]] | None, bool]:
    """The file's (line number, line) pairs and whether it was not UTF-8, as
    `download.invalid_utf8` says: `fail` stops naming file and line, `replace` puts U+FFFD
    in place of the bad bytes, `skip` gives None for the lines."""
    try:
        return list(read_text_lines(path)), False
    except ReprotuneError as exc:
        if "not valid UTF-8" not in str(exc):
            raise
        if invalid_utf8 == "fail":
            raise ReprotuneError(f"{exc}; set download.invalid_utf8: replace (or skip) to accept such files") from exc
    if invalid_utf8 == "skip":
        return None, True
    return list(read_text_lines(path, replace_invalid=True)), True


def describe_separator(separator: str | None) -> str:
    """How a column separator reads in a message: `None` means any run of white space."""
    return "white space" if separator is None else repr(separator)


def read_column_lines(
    path: Path, separator: str | None, check_first: Callable[[Row], None] | None = None
) -> Iterator[Row | None]:
    """CoNLL-style files: one item a line, its columns split by `separator` (None: any white
    space), a blank line between blocks and -DOCSTART- lines, both yielded as None. Every line
    must have as many columns as the file's first data line, which `check_first` may vet."""
    columns: int | None = None
    index = 0
    for number, line in read_text_lines(path):
        if not line.strip() or line.startswith("-DOCSTART-"):
            yield None
            continue
        parts = line.split(separator) if separator is not None else line.split()
        index += 1
        row = Row(f"{path}:{number}", number, index, parts, line)
        if columns is None:
            columns = len(parts)
            if check_first is not None:
                check_first(row)
        if len(parts) != columns:
            raise ReprotuneError(
                f"{path}:{number}: expected {columns} columns separated by {describe_separator(separator)} "
                f"(as on the first line), found {len(parts)}: {line[:60]!r}"
            )
        yield row


# CSV / TSV ------------------------------------------------------------------------------


def read_delimited(
    path: Path, fmt: str, header: bool = True, columns: list[str] | None = None, tsv_quoting: str = "none"
) -> tuple[list[str] | None, list[Row]]:
    """The column names (the header, or `columns`; None without either) and the CSV/TSV data
    rows with their first line. TSV is read without quoting unless `tsv_quoting: csv` (raw
    GLUE files have bare quote marks, which CSV quoting would join across lines). Every row
    must have as many columns as the first; blank lines are skipped."""
    dialect: dict[str, Any] = {}
    if fmt == "tsv":
        dialect = {"delimiter": "\t"} | ({"quoting": csv.QUOTE_NONE} if tsv_quoting == "none" else {})
    lines = (line + "\n" for _, line in read_text_lines(path))
    reader = csv.reader(lines, **dialect)
    names: list[str] | None = list(columns) if columns else None
    width: int | None = len(names) if names else None
    width_from = "download.columns" if names else ""
    rows: list[Row] = []
    previous_end = 0
    try:
        for values in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if not values or (values == [""] and width != 1):  # one column: `""` is an empty cell
                continue
            if header and names is None:
                names = [v.strip() for v in values]
                broken = next((name for name in names if "\n" in name or "\r" in name), None)
                if broken is not None:
                    raise ReprotuneError(
                        f"{path}:{start}: the header's column name {broken[:40]!r} spans lines: a quote mark "
                        f"left open?{' (set download.tsv_quoting: none)' if fmt == 'tsv' else ''}"
                    )
                width, width_from = len(names), f"the header on line {start}"
                continue
            if width is None:
                width, width_from = len(values), f"line {start}"
            if len(values) != width:
                raise ReprotuneError(
                    f"{path}:{start}: expected {width} columns separated by {dialect.get('delimiter', ',')!r} "
                    f"(as {width_from}), found {len(values)}"
                )
            rows.append(Row(f"{path}:{start}", start, len(rows) + 1, values))
    except csv.Error as exc:
        raise ReprotuneError(f"{path}:{reader.line_num}: cannot read as {fmt}: {exc}") from exc
    return names, rows


# JSON, JSON lines ---------------------------------------------------------------------------


def read_json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; bad JSON names file and line."""
    for number, line in read_text_lines(path):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReprotuneError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        except RecursionError as exc:
            raise ReprotuneError(f"{path}:{number}: not valid JSON (nested too deeply)") from exc
        if not isinstance(value, dict):
            raise ReprotuneError(f"{path}:{number}: expected a JSON object per line, found {type(value).__name__}")
        yield number, value


def json_line_rows(path: Path) -> list[Row]:
    return [
        Row(f"{path}:{number}", number, index, value)
        for index, (number, value) in enumerate(read_json_lines(path), start=1)
    ]


def read_json_file(path: Path) -> Any:
    """Parse one JSON document; a leading byte-order mark is accepted, and bad bytes or bad
    JSON name the file and line."""
    with open_binary(path) as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ReprotuneError(f"{path}:{line}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            raise JsonLinesInstead from exc
        raise ReprotuneError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    except RecursionError as exc:
        raise ReprotuneError(f"{path}: not valid JSON (nested too deeply)") from exc


class JsonLinesInstead(Exception):
    """A `.json` file holding one object per line, as HF `Dataset.to_json` writes by default."""


def read_json_records(path: Path, unit: str = "example") -> list[Row]:
    """The records of a JSON list, a {"data": [...]} wrapper, or JSON lines in a .json file
    (HF's `to_json` default); `where` is file:line or `file row N`."""
    try:
        value = read_json_file(path)
    except JsonLinesInstead:
        return json_line_rows(path)
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    elif isinstance(value, dict):
        return [Row(f"{path}:1", 1, 1, value)]  # JSON lines with a single line
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ReprotuneError(f'{path}: expected a list of objects (or {{"data": [...]}}), one per {unit}')
    return [Row(f"{path} row {number}", None, number, item) for number, item in enumerate(value, start=1)]


# Parquet ------------------------------------------------------------------------------------


def parquet_feature(path: Path, column: str) -> Any:
    """The `datasets` feature (a ClassLabel with its names, say) that a Parquet file written
    by HF `to_parquet` records for one column in its schema metadata; None when the file
    has no such record. Only that column is decoded, so other exotic columns don't matter."""
    import pyarrow.parquet as pq
    from datasets import Features

    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as exc:
        raise ReprotuneError(f"{path}: cannot read as parquet: {first_line(exc)}") from exc
    try:
        feature = json.loads(metadata[b"huggingface"])["info"]["features"][column]
        return Features.from_dict({column: feature})[column]
    except (KeyError, TypeError, ValueError):
        return None


def class_label_names(feature: Any, sequence: bool = False) -> list[str] | None:
    """The names of a ClassLabel feature (with `sequence`: of a sequence of ClassLabels, the
    Hub's `ner_tags`), else None."""
    if sequence:
        return getattr(getattr(feature, "feature", None), "names", None)
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def class_id_to_name(label: Any, names: list[str], where: str, column: str) -> str | None:
    """A ClassLabel id as its name; -1 (HF's "no gold label") as None, so the row is dropped."""
    if label is None or (isinstance(label, float) and label != label) or int(label) < 0:
        return None
    if int(label) >= len(names):
        raise ReprotuneError(
            f"{where}: label id {label} in column '{column}' is beyond the file's {len(names)} ClassLabel names"
        )
    return names[int(label)]


def read_parquet_rows(path: Path) -> tuple[list[str], list[Row]]:
    """The column names and rows (as Python values: lists stay lists) of a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ReprotuneError(f"{path}: cannot read as parquet: {first_line(exc)}") from exc
    rows = [Row(f"{path} row {number}", None, number, row) for number, row in enumerate(table.to_pylist(), start=1)]
    return list(table.column_names), rows


def first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


# Any table of named fields ---------------------------------------------------------------


def read_objects(path: Path, fmt: str, unit: str = "example") -> tuple[list[str], list[Row]]:
    """The field names (every key seen, in order) and rows of a JSON lines, JSON (a list of
    objects, {"data": [...]}, or JSON lines as HF `to_json` writes) or Parquet file."""
    if fmt == "parquet":
        return read_parquet_rows(path)
    rows = json_line_rows(path) if fmt == "jsonl" else read_json_records(path, unit)
    return list(dict.fromkeys(key for row in rows for key in row.values)), rows
