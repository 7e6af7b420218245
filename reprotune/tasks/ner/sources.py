"""Download stage for NER: CoNLL files, JSON/JSONL/Parquet rows and Hub datasets as
splits of {'id', 'tokens', 'tags'}, IOB2 checked (or repaired), and the label order fixed.

CoNLL-style files hold one token per line, columns by separator, a blank line between
sentences, -DOCSTART- lines skipped. JSON, JSONL and Parquet rows and Hub datasets hold one
list of tokens and one list of tags per row, checked cell by cell so a mistake names the file
and line (or row)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from reprotune.core.errors import ReprotuneError
from reprotune.sources.hub import load_hub
from reprotune.sources.readers import (
    Row,
    class_label_names,
    describe_separator,
    local_files,
    parquet_feature,
    read_column_lines,
    read_objects,
)
from reprotune.tasks.ner.params import NerDownloadParams, NerTaskParams

SPLIT_GROUP_COLUMN: str | None = None
TEXT_FIELDS: tuple[str, ...] = ("tokens",)

TAG_PATTERN = re.compile(r"^(O|[BI]-.+)$")

SEPARATOR_HINT = (
    "set download.separator to the file's column separator (CoNLL-2003 is space-separated: "
    'separator: " ", or null for any white space)'
)


def check_columns(
    where: str, line: str, columns: int, token_column: int, tag_column: int, separator: str | None
) -> None:
    """Check the first data line against the column params, so a wrong index or separator is
    one error naming the key instead of an IndexError or tokens read from the tag column."""
    split_by = describe_separator(separator)
    if columns < 2:
        raise ReprotuneError(
            f"{where}: found {columns} column separated by {split_by}, need at least 2 (token and tag): "
            f"{line[:60]!r}; {SEPARATOR_HINT}"
        )
    for key, index in (("token_column", token_column), ("tag_column", tag_column)):
        if not -columns <= index < columns:
            raise ReprotuneError(
                f"{where}: download.{key} is {index} but the line has {columns} columns separated by {split_by}; "
                f"set download.{key} between {-columns} and {columns - 1} (negative counts from the end)"
            )
    if token_column % columns == tag_column % columns:
        raise ReprotuneError(
            f"{where}: download.token_column ({token_column}) and download.tag_column ({tag_column}) name the same "
            f"column of {columns}; set them to the token's and the tag's columns"
        )


def read_conll(
    path: Path,
    token_column: int = 0,
    tag_column: int = -1,
    separator: str | None = "\t",
    token_prefix: str | None = None,
) -> list[dict]:
    """Return sentences as {'id', 'tokens', 'tags', 'line'}; a line whose column count
    differs from the file's first data line is an error naming file and line."""
    sentences: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0

    def flush() -> None:
        nonlocal tokens, tags
        if tokens:
            sentences.append({"id": f"{path.name}:{first_line}", "tokens": tokens, "tags": tags, "line": first_line})
        tokens, tags = [], []

    def check_first(row: Row) -> None:
        check_columns(row.where, row.text, len(row.values), token_column, tag_column, separator)

    for row in read_column_lines(path, separator, check_first):
        if row is None:
            flush()
            continue
        parts, columns = row.values, len(row.values)
        token, tag = parts[token_column], parts[tag_column].strip()
        if not tag:
            raise ReprotuneError(
                f"{row.where}: the tag (column {tag_column % columns + 1} of {columns}, download.tag_column: "
                f"{tag_column}) is empty: {row.text[:60]!r}; set download.tag_column to the tags' column "
                "(a separator at the end of the line adds an empty last column)"
            )
        if token_prefix and token.startswith(token_prefix):
            token = token[len(token_prefix) :]
        if not tokens:
            first_line = row.line or 0
        tokens.append(token)
        tags.append(tag)
    flush()
    if not sentences:
        raise ReprotuneError(
            f"{path}: no sentences found (expected lines of token and tag separated by "
            f"{describe_separator(separator)}, a blank line between sentences)"
        )
    return sentences


LIST_FORMATS = "a list of tokens and a list of tags per row (JSON, JSONL or Parquet), or CoNLL files (source: conll)"


def read_records(path: Path, source: str, tags_field: str) -> tuple[list[Row], list[str] | None]:
    """The file's rows and, for Parquet written by `datasets`, the tags' ClassLabel names."""
    names = class_label_names(parquet_feature(path, tags_field), sequence=True) if source == "parquet" else None
    return read_objects(path, source, "sentence")[1], names


def field_list(record: dict[str, Any], field: str, key: str, where: str) -> list[Any]:
    """The record's list in `field` (named by `download.<key>`); a string is refused, since
    list() would split it into characters: silently wrong data when the lengths match."""
    if field not in record:
        raise ReprotuneError(
            f"{where}: no field '{field}' (it has {', '.join(map(str, record)) or 'none'}); set download.{key}"
        )
    value = record[field]
    if isinstance(value, (list, tuple)):
        return list(value)
    kind = "a string" if isinstance(value, str) else "null" if value is None else type(value).__name__
    raise ReprotuneError(
        f"{where}: '{field}' (download.{key}) is {kind}, not a list: {str(value)[:40]!r}; NER rows need {LIST_FORMATS}"
    )


def check_tokens(tokens: list[Any], field: str, where: str) -> list[str]:
    """Every token must be a string: a nested list or null is a wrong field, not a word."""
    for position, token in enumerate(tokens, start=1):
        if not isinstance(token, str):
            raise ReprotuneError(
                f"{where}: token {position} in '{field}' is {type(token).__name__}, not a string; "
                "set download.tokens_field to the list of words"
            )
    return tokens


def tag_names(tags: list[Any], names: list[str] | None, labels: list[str] | None, where: str) -> list[str]:
    """Tags as strings; integer class ids map by position through the ClassLabel names of the
    source, else through download.labels (what `Dataset.to_json` writes for conll2003)."""
    ids = [isinstance(tag, int) and not isinstance(tag, bool) for tag in tags]
    if not any(ids):
        return [check_tag(tag, position, where) for position, tag in enumerate(tags, start=1)]
    if not all(ids):
        raise ReprotuneError(f"{where}: the tags mix class ids and names ({tags[:6]}); use one or the other")
    table, key, fix = (
        (names, "the source's ClassLabel names", "-1 marks a missing tag; fix or drop the row")
        if names is not None
        else (labels, "download.labels", "list every tag name there, in id order")
    )
    if table is None:
        raise ReprotuneError(
            f"{where}: the tags are class ids ({tags[:6]}), not IOB2 names; set download.labels to the tag "
            "names in id order (e.g. [O, B-PER, I-PER, ...])"
        )
    for position, tag in enumerate(tags, start=1):
        if not 0 <= tag < len(table):
            raise ReprotuneError(
                f"{where}: tag {tag} (word {position}) is not a class id of {key} ({len(table)} names: 0 to "
                f"{len(table) - 1}); {fix}"
            )
    return [table[tag] for tag in tags]


def check_tag(tag: Any, position: int, where: str) -> str:
    """A tag name must be a string (IOB2 is checked later, with repair)."""
    if not isinstance(tag, str):
        raise ReprotuneError(
            f"{where}: tag {position} is {type(tag).__name__} ({tag!r}), not a tag name; "
            "set download.tags_field to the list of IOB2 tags"
        )
    return tag


def sentence_row(
    record: dict[str, Any],
    params: NerDownloadParams,
    row_id: str,
    where: str,
    location: str | None,
    names: list[str] | None,
) -> dict[str, Any]:
    """One sentence {'id', 'tokens', 'tags', 'where'}; `where` names it in later errors."""
    tokens = check_tokens(field_list(record, params.tokens_field, "tokens_field", where), params.tokens_field, where)
    tags = tag_names(field_list(record, params.tags_field, "tags_field", where), names, params.labels, where)
    return {"id": row_id, "tokens": tokens, "tags": tags, "where": location}


def check_and_repair(tags: list[str], repair: bool, where: str) -> tuple[list[str], int]:
    """Validate IOB2; an I- tag that does not continue an entity of its type becomes B-
    when `repair`, else is an error naming `where`. Returns (tags, repairs made)."""
    fixed: list[str] = []
    repairs = 0
    previous = "O"
    for position, tag in enumerate(tags):
        if not TAG_PATTERN.match(tag):
            raise ReprotuneError(f"{where}: tag '{tag}' (word {position + 1}) is not IOB2 (O, B-TYPE or I-TYPE)")
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            if not repair:
                raise ReprotuneError(
                    f"{where}: '{tag}' (word {position + 1}) follows '{previous}', not an entity of its type; "
                    "set download.invalid_iob: repair to turn it into B-"
                )
            tag = "B-" + tag[2:]
            repairs += 1
        fixed.append(tag)
        previous = tag
    return fixed, repairs


def label_list(tags_seen: set[str]) -> list[str]:
    """'O' first, then B-/I- for every type in alphabetical order, both always present."""
    types = sorted({tag[2:] for tag in tags_seen if tag != "O"})
    return ["O"] + [f"{prefix}-{kind}" for kind in types for prefix in ("B", "I")]


def rows_from_dataset(dataset: Dataset, params: NerDownloadParams, split: str) -> list[dict[str, Any]]:
    """A Hub split's sentences; ClassLabel tag ids map to their names."""
    for field in (params.tokens_field, params.tags_field):
        if field not in dataset.column_names:
            raise ReprotuneError(
                f"{split} split has no column '{field}' (it has {', '.join(dataset.column_names)}); "
                "set download.tokens_field / download.tags_field"
            )
    names = class_label_names(dataset.features[params.tags_field], sequence=True)
    rows = []
    for index, example in enumerate(dataset):
        row_id = str(example.get("id", f"{split}:{index}"))
        rows.append(sentence_row(example, params, row_id, f"{split} sentence {row_id}", None, names))
    return rows


def load_raw(params: NerDownloadParams) -> tuple[DatasetDict, dict[str, Any]]:
    """Splits of {'id', 'tokens', 'tags'} with IOB2 checked or repaired; the report counts the
    repairs and holds `labels`, the model's label order (download.labels, else every tag seen),
    so tokenize needs nothing from the download section."""
    splits: dict[str, list[dict]] = {}
    if params.source == "hub":
        for split, dataset in load_hub(params).items():
            splits[split] = rows_from_dataset(dataset, params, split)
    elif params.source == "conll":
        for split, path in local_files(params).items():
            splits[split] = read_conll(
                path, params.token_column, params.tag_column, params.separator, params.token_prefix
            )
    else:
        for split, path in local_files(params).items():
            records, names = read_records(path, params.source, params.tags_field)
            splits[split] = [
                sentence_row(
                    row.values, params, str(row.values.get("id", f"{split}:{index}")), row.where, row.where, names
                )
                for index, row in enumerate(records)
            ]
    repairs: dict[str, int] = {}
    seen: set[str] = set()
    out = {}
    for split, rows in splits.items():
        repairs[split] = 0
        for row in rows:
            where = f"{split} sentence {row['id']}"
            if row.get("where"):
                where = f"{row['where']}: {where}"
            if len(row["tokens"]) != len(row["tags"]):
                raise ReprotuneError(f"{where}: {len(row['tokens'])} tokens but {len(row['tags'])} tags")
            row["tags"], fixed = check_and_repair(row["tags"], params.invalid_iob == "repair", where)
            repairs[split] += fixed
            seen.update(row["tags"])
        out[split] = Dataset.from_dict({key: [r[key] for r in rows] for key in ("id", "tokens", "tags")})
    return DatasetDict(out), {"iob_repairs": repairs, "labels": params.labels or label_list(seen)}


def validate_raw(raw: DatasetDict, params: NerTaskParams) -> None:
    """With download.labels, every tag must be one of them; without, the label set is
    what the splits hold (a type missing from train is reported by tokenize)."""
    if not params.download.labels:
        return
    allowed = set(params.download.labels)
    for split in ("train", "validation", "test"):
        for example in raw[split]:
            unknown = [t for t in example["tags"] if t not in allowed]
            if unknown:
                raise ReprotuneError(
                    f"{split} sentence {example['id']}: tag '{unknown[0]}' is not in download.labels "
                    f"({', '.join(params.download.labels)})"
                )
