"""Read CoNLL-style files: one token per line, columns by separator, a blank line
between sentences, -DOCSTART- lines skipped."""

from __future__ import annotations

from pathlib import Path

from ...data import read_text_lines
from ...errors import ReprotuneError


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
            needed = max(token_column, tag_column) + 1 if min(token_column, tag_column) >= 0 else 2
            if columns < max(2, needed):
                raise ReprotuneError(
                    f"{path}:{number}: expected at least {max(2, needed)} columns separated by "
                    f"{separator!r}, found {columns}: {line[:60]!r}"
                )
        if len(parts) != columns:
            raise ReprotuneError(
                f"{path}:{number}: expected {columns} columns separated by {separator!r} "
                f"(as on the first line), found {len(parts)}: {line[:60]!r}"
            )
        token, tag = parts[token_column], parts[tag_column].strip()
        if token_prefix and token.startswith(token_prefix):
            token = token[len(token_prefix):]
        if not tokens:
            first_line = number
        tokens.append(token)
        tags.append(tag)
    flush()
    if not sentences:
        raise ReprotuneError(f"{path}: no sentences found (expected token{separator or ' '}tag lines)")
    return sentences
