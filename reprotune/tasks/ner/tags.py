"""IOB2 tags: validation and repair, a stable label order, and strict entity spans."""

from __future__ import annotations

import re

from reprotune.core.errors import ReprotuneError

TAG_PATTERN = re.compile(r"^(O|[BI]-.+)$")

Entity = tuple[str, int, int]
"""(type, first word, last word + 1)."""


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


def entities(tags: list[str]) -> set[Entity]:
    """Strict IOB2 spans: an entity starts at B- and continues over I- of the same type;
    a stray I- starts nothing (seqeval's strict mode counts it the same way)."""
    spans: set[Entity] = set()
    kind: str | None = None
    start = 0
    for position, tag in enumerate(list(tags) + ["O"]):
        continues = kind is not None and tag == f"I-{kind}"
        if kind is not None and not continues:
            spans.add((kind, start, position))
            kind = None
        if tag.startswith("B-"):
            kind, start = tag[2:], position
    return spans
