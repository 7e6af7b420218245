"""Input records for predict and serve, checked one by one so that a bad record names
itself (file and line, or record number) instead of failing the whole input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 32
"""Deepest JSON nesting accepted: a record is a flat object, so anything deeper is a mistake
(and Python's own parser fails on about 1,000 levels with a RecursionError)."""


class RecordError(ValueError):
    """One record is unusable; the message says why, without where (the caller adds that)."""


def check_strings(value: Any, depth: int = 0) -> None:
    """Refuse values JSON allows but nothing downstream can use: strings with lone UTF-16
    surrogates (`"\\ud800"`, not encodable as UTF-8) and nesting beyond MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise RecordError(f"JSON nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RecordError(f"a string holds a lone surrogate (\\u{ord(value[exc.start]):04x})") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_strings(key, depth + 1)
            check_strings(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_strings(item, depth + 1)


def parse_json(text: str | bytes) -> Any:
    """json.loads with every failure as a RecordError: syntax, nesting (RecursionError),
    integers over Python's digit limit (ValueError), lone surrogates."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise RecordError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise RecordError(f"not usable JSON: {str(exc).splitlines()[0]}") from None
    check_strings(data)
    return data


def to_record(item: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """A record from a parsed item: a string fills the first field; an object needs every
    field, each a string."""
    if isinstance(item, str):
        return {fields[0]: item}
    if not isinstance(item, dict):
        raise RecordError(f"a record must be a JSON object or a string, not {type(item).__name__}")
    missing = [field for field in fields if field not in item]
    if missing:
        raise RecordError(f"lacks field '{missing[0]}' (needs: {', '.join(fields)})")
    wrong = [field for field in fields if not isinstance(item[field], str)]
    if wrong:
        raise RecordError(f"field '{wrong[0]}' must be a string, not {type(item[wrong[0]]).__name__}")
    return item


def line_record(raw: bytes, fields: tuple[str, ...]) -> dict[str, Any]:
    """One input line: a JSON object when it starts with '{', else plain text for the first field."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(
            f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); save the file as UTF-8"
        ) from None
    line = line.rstrip("\r\n")
    if line.lstrip().startswith("{"):
        return to_record(parse_json(line), fields)
    check_strings(line)
    return {fields[0]: line}


@dataclass(frozen=True)
class Line:
    """A non-blank input line: its 1-based number and its record, or why it has none."""

    number: int
    record: dict[str, Any] | None
    error: str | None


def read_lines(chunks: Iterator[bytes], fields: tuple[str, ...]) -> Iterator[Line]:
    """Every non-blank line of a byte stream, each checked on its own, so one bad line
    neither hides the lines after it nor loses the good ones."""
    for number, raw in enumerate(chunks, start=1):
        if not raw.strip():
            continue
        try:
            yield Line(number, line_record(raw, fields), None)
        except RecordError as exc:
            yield Line(number, None, str(exc))
