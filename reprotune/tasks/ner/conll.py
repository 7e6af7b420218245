"""Read CoNLL-style files: one token per line, columns by separator, a blank line
between sentences, -DOCSTART- lines skipped."""

from __future__ import annotations

from pathlib import Path

from reprotune.core.errors import ReprotuneError
from reprotune.sources.readers import read_text_lines

SEPARATOR_HINT = "set download.separator to the file's column separator (CoNLL-2003 is space-separated: " \
                 "separator: \" \", or null for any white space)"


def describe_separator(separator: str | None) -> str:
    """How the separator reads in a message: `None` means any run of white space."""
    return "white space" if separator is None else repr(separator)


def check_columns(where: str, line: str, columns: int, token_column: int, tag_column: int,
                  separator: str | None) -> None:
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
    columns: int | None = None

    def flush() -> None:
        nonlocal tokens, tags
        if tokens:
            sentences.append({"id": f"{path.name}:{first_line}", "tokens": tokens, "tags": tags, "line": first_line})
        tokens, tags = [], []

    for number, line in read_text_lines(path):
        if not line.strip():
            flush()
            continue
        if line.startswith("-DOCSTART-"):
            flush()
            continue
        parts = line.split(separator) if separator is not None else line.split()
        if columns is None:
            columns = len(parts)
            check_columns(f"{path}:{number}", line, columns, token_column, tag_column, separator)
        if len(parts) != columns:
            raise ReprotuneError(
                f"{path}:{number}: expected {columns} columns separated by {describe_separator(separator)} "
                f"(as on the first line), found {len(parts)}: {line[:60]!r}"
            )
        token, tag = parts[token_column], parts[tag_column].strip()
        if not tag:
            raise ReprotuneError(
                f"{path}:{number}: the tag (column {tag_column % columns + 1} of {columns}, download.tag_column: "
                f"{tag_column}) is empty: {line[:60]!r}; set download.tag_column to the tags' column "
                "(a separator at the end of the line adds an empty last column)"
            )
        if token_prefix and token.startswith(token_prefix):
            token = token[len(token_prefix):]
        if not tokens:
            first_line = number
        tokens.append(token)
        tags.append(tag)
    flush()
    if not sentences:
        raise ReprotuneError(
            f"{path}: no sentences found (expected lines of token and tag separated by "
            f"{describe_separator(separator)}, a blank line between sentences)"
        )
    return sentences
