"""Free text to words with character offsets, and word tags back to entity spans."""

from __future__ import annotations

import re
from typing import Any

from reprotune.tasks.ner.tags import entities

WORD = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Words and punctuation marks with their character offsets in `text`."""
    return [(match.group(), match.start(), match.end()) for match in WORD.finditer(text)]


def entity_spans(text: str, words: list[tuple[str, int, int]], tags: list[str], scores: list[float]) -> list[dict[str, Any]]:
    """Aggregate word tags (strict IOB2) into entities with character offsets and a mean score."""
    spans = []
    for kind, first, last in sorted(entities(tags), key=lambda e: e[1]):
        start, end = words[first][1], words[last - 1][2]
        spans.append({
            "text": text[start:end], "type": kind, "start": start, "end": end,
            "score": round(sum(scores[first:last]) / (last - first), 4),
        })
    return spans
