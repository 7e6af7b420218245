"""NER rows from JSON, JSONL and Parquet files and Hub datasets: one list of tokens and one
list of tags per row, checked cell by cell so a mistake names the file and line (or row)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reprotune.core.errors import ReprotuneError
from reprotune.sources.readers import (
    parquet_feature,
    read_json_lines,
    read_json_records,
)
from reprotune.tasks.ner.params import NerDownloadParams

Record = tuple[str, dict[str, Any]]
"""(where the record is, e.g. 'd.jsonl:3' or 'd.parquet row 3'; the record's fields)."""

LIST_FORMATS = "a list of tokens and a list of tags per row (JSON, JSONL or Parquet), or CoNLL files (source: conll)"


def read_records(path: Path, source: str, tags_field: str) -> tuple[list[Record], list[str] | None]:
    """The file's records and, for Parquet written by `datasets`, the tags' ClassLabel names."""
    if source == "jsonl":
        return [(f"{path}:{number}", value) for number, value in read_json_lines(path)], None
    if source == "json":
        return read_json_records(path, "sentence"), None
    return read_parquet(path, tags_field)


def read_parquet(path: Path, tags_field: str) -> tuple[list[Record], list[str] | None]:
    """Rows through pyarrow; the schema's `datasets` metadata restores ClassLabel names."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = class_names(parquet_feature(path, tags_field))
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise ReprotuneError(f"{path}: cannot read as parquet: {str(exc).splitlines()[0]}") from exc
    return [(f"{path} row {number}", row) for number, row in enumerate(table.to_pylist(), start=1)], names


def class_names(feature: Any) -> list[str] | None:
    """The names of a sequence-of-ClassLabel feature (the Hub's `ner_tags`), else None."""
    return getattr(getattr(feature, "feature", None), "names", None)


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
    table, key, fix = ((names, "the source's ClassLabel names", "-1 marks a missing tag; fix or drop the row")
                       if names is not None else (labels, "download.labels", "list every tag name there, in id order"))
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


def sentence_row(record: dict[str, Any], params: NerDownloadParams, row_id: str, where: str,
                 location: str | None, names: list[str] | None) -> dict[str, Any]:
    """One sentence {'id', 'tokens', 'tags', 'where'}; `where` names it in later errors."""
    tokens = check_tokens(field_list(record, params.tokens_field, "tokens_field", where), params.tokens_field, where)
    tags = tag_names(field_list(record, params.tags_field, "tags_field", where), names, params.labels, where)
    return {"id": row_id, "tokens": tokens, "tags": tags, "where": location}
