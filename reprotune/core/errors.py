"""One exception type for every mistake a user can fix, so stages print one clear line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ReprotuneError(Exception):
    """A problem in params, data or models that the user can fix; printed as one line."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' when a close match exists, else ''."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""
