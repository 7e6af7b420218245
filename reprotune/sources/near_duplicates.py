"""Near-duplicate texts: folded text, character shingles, and MinHash/LSH with an exact check.

Exact matching (`overlap.normalise`) misses copies that differ in tokenisation ("i'm" against
"i 'm"), punctuation, Unicode forms or a word or two. Here a text is folded first: Unicode
NFKC, case folded, and only its letters and digits kept (white space and punctuation
dropped, so every tokenisation of a sentence folds alike). Two texts are near-duplicates when
the Jaccard similarity of their sets of character n-grams (`ngram`, 5 by default) is at least
`threshold`. `datasketch` MinHash/LSH proposes candidate pairs (at a lower LSH threshold, so
that few true pairs are missed) and every candidate is checked with the exact Jaccard, so a
reported pair always meets the threshold. Shingles are compared by a 64-bit hash of their
characters, and MinHash is seeded (fixed permutations), so the same texts always give the
same pairs.

Measured on the offline data (train before carving, 5-grams): MinHash/LSH found every pair an
exhaustive sparse-matrix Jaccard found at thresholds 0.7, 0.8 and 0.9 (at 0.9, WNUT-2016: 140
pairs in 2,394 sentences, under 1 s of CPU; BBC News: 155 pairs in 2,225 articles, about 3 s),
where rapidfuzz's `cdist` with `fuzz.ratio >= 90` took 27 s on BBC News alone. An index costs
about 12 kB of memory per text, mostly LSH tables (60,000 made-up sentence pairs: 18 s of CPU,
0.7 GB), so a split of 500,000 texts needs several GB: `threshold: null` skips the check.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

NUM_PERM = 128
SEED = 1
SCHEME = "affine64"
# LSH bands are tuned for 0.75 of the verified threshold, weighing a missed pair nine times a
# false candidate: more candidates, each checked exactly. On made-up copies edited by 0 to 50%
# of their words (3 cases, thresholds 0.3 to 0.9) this lost no pair to the banding; equal
# weights at 0.85 of the threshold lost 13.
LSH_SLACK = 0.75
LSH_WEIGHTS = (0.1, 0.9)
FIELD_SEPARATOR = "\x00"
_LETTERS_AND_DIGITS = re.compile(r"[^\W_]+")
_ROLL = np.uint64(0x100000001B3)  # odd multiplier of the rolling shingle hash (FNV-1 64-bit prime)
_NO_SHINGLES = np.zeros(0, dtype=np.uint64)


def fold(value: Any) -> str:
    """One field as folded text: lists joined, NFKC, case folded, only letters and digits kept."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "".join(fold(part) for part in value)
    text = unicodedata.normalize("NFKC", str(value)).casefold()
    return "".join(_LETTERS_AND_DIGITS.findall(text))


def folded(values: Iterable[Any]) -> str:
    """One example's fields folded and kept apart by a separator (what gets shingled)."""
    return FIELD_SEPARATOR.join(fold(value) for value in values)


def shingles(text: str, ngram: int) -> np.ndarray:
    """The distinct character n-grams of a folded text as sorted 64-bit hashes (a polynomial
    over the code points, computed for all n-grams at once: per-shingle Python work was most
    of the time on long texts). A text shorter than `ngram` is one shingle; a text with no
    letters or digits has none (it is nobody's near-duplicate)."""
    if not text.strip(FIELD_SEPARATOR):
        return _NO_SHINGLES
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)
    width = min(ngram, len(codes))
    count = len(codes) - width + 1
    hashes = np.zeros(count, dtype=np.uint64)
    for offset in range(width):
        hashes = hashes * _ROLL + codes[offset : offset + count] + np.uint64(1)
    return np.unique(hashes)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two `shingles` results (0 when either is empty)."""
    if not len(a) or not len(b):
        return 0.0
    shared = len(np.intersect1d(a, b, assume_unique=True))
    return shared / (len(a) + len(b) - shared)


def _identity(value: int) -> int:
    return value


@functools.lru_cache(maxsize=1 << 14)
def _minhash(text: str, ngram: int) -> LeanMinHash | None:
    """Seeded MinHash of a folded text's shingle hashes (datasketch mixes them and applies its
    permutations), remembered: the download stage asks for the same texts before and after
    carving. Lean: the permutations are not kept with every text."""
    grams = shingles(text, ngram)
    if not len(grams):
        return None
    minhash = MinHash(num_perm=NUM_PERM, seed=SEED, scheme=SCHEME, hashfunc=_identity)
    minhash.update_batch(grams.tolist())
    return LeanMinHash(minhash)


class NearDuplicateIndex:
    """Folded texts (`folded`), searchable for near-duplicates of others: candidates from
    MinHash/LSH, each checked with the exact Jaccard of its `ngram` shingles."""

    def __init__(self, texts: Sequence[str], threshold: float, ngram: int) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.ngram = ngram
        self._sets = [shingles(text, ngram) for text in texts]
        self._hashes = [_minhash(text, ngram) for text in texts]
        self._lsh = MinHashLSH(threshold=threshold * LSH_SLACK, num_perm=NUM_PERM, weights=LSH_WEIGHTS)
        for row, minhash in enumerate(self._hashes):
            if minhash is not None:
                self._lsh.insert(row, minhash, check_duplication=False)

    def _matches(self, grams: np.ndarray, minhash: MinHash | None) -> list[int]:
        if minhash is None:
            return []
        candidates = sorted(self._lsh.query(minhash))
        return [row for row in candidates if jaccard(grams, self._sets[row]) >= self.threshold]

    def matches(self, text: str) -> list[int]:
        """Rows of the index whose Jaccard with `text` is at least the threshold, in order."""
        return self._matches(shingles(text, self.ngram), _minhash(text, self.ngram))

    def pairs(self) -> list[tuple[int, int]]:
        """Every near-duplicate pair (i, j), i < j, within the index, sorted."""
        found = []
        for row, (grams, minhash) in enumerate(zip(self._sets, self._hashes, strict=True)):
            found += [(row, other) for other in self._matches(grams, minhash) if other > row]
        return found

    def has_match(self, texts: Sequence[str]) -> list[bool]:
        """For each text: does the index hold a near-duplicate of it?"""
        return [bool(self.matches(text)) for text in texts]


def components(links: Sequence[Sequence[Hashable]], pairs: Iterable[tuple[int, int]], rows: int) -> list[int]:
    """Connected components of rows joined by equal values in any list of `links` (one value a
    row) or by a pair in `pairs`: the component of each row, named by its first row."""
    parent = list(range(rows))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        a, b = find(a), find(b)
        if a != b:
            parent[max(a, b)] = min(a, b)

    for values in links:
        first: dict[Hashable, int] = {}
        for row, value in enumerate(values):
            union(first.setdefault(value, row), row)
    for a, b in pairs:
        union(a, b)
    return [find(i) for i in range(rows)]
