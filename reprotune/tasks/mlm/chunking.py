"""Tokenize whole documents (no truncation), concatenate a split's tokens in order
and cut them into `chunk_size` blocks, keeping each token's word id for whole-word
masking. Blocks may span documents (the [CLS]/[SEP] the tokenizer adds mark the seams)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset

NO_WORD = -1


def tokenize_documents(batch: dict[str, list], tokenizer: Any) -> dict[str, list]:
    """Batched `map` function: ids with the tokenizer's special tokens, and the index of
    each token's word inside its document (-1 for special tokens)."""
    encoded = tokenizer(batch["text"], add_special_tokens=True, truncation=False, verbose=False,
                        return_attention_mask=False, return_token_type_ids=False)
    word_ids = [[NO_WORD if w is None else w for w in encoded.word_ids(i)] for i in range(len(batch["text"]))]
    return {"input_ids": encoded["input_ids"], "word_ids": word_ids}


@dataclass(frozen=True)
class Stream:
    """Every token of a split in document order; word ids unique across the split."""

    input_ids: np.ndarray
    word_ids: np.ndarray
    documents: int


def concatenate(tokenized: Dataset) -> Stream:
    """Flatten per-document lists into one stream; word ids are offset per document so
    two documents never share a word id."""
    table = tokenized.with_format("arrow")[:]
    ids = pc.list_flatten(table.column("input_ids")).to_numpy().astype(np.int64)
    local = pc.list_flatten(table.column("word_ids")).to_numpy().astype(np.int64)
    lengths = pc.list_value_length(table.column("word_ids")).to_numpy().astype(np.int64)
    words_per_doc = np.zeros(len(lengths), dtype=np.int64)
    if len(local):
        doc_of_token = np.repeat(np.arange(len(lengths)), lengths)
        np.maximum.at(words_per_doc, doc_of_token, local + 1)
        offsets = np.concatenate([[0], np.cumsum(words_per_doc)[:-1]])
        words = np.where(local >= 0, local + offsets[doc_of_token], NO_WORD)
    else:
        words = local
    return Stream(ids, words, len(lengths))


def chunk_bounds(total: int, chunk_size: int, last_chunk: str) -> list[tuple[int, int]]:
    """[start, end) of each block; the short tail is its own block or dropped."""
    full = total // chunk_size
    bounds = [(i * chunk_size, (i + 1) * chunk_size) for i in range(full)]
    if total % chunk_size and last_chunk == "keep":
        bounds.append((full * chunk_size, total))
    return bounds


def local_word_ids(words: np.ndarray) -> np.ndarray:
    """Renumber a block's word ids from 0 so stored values stay small."""
    present = words[words >= 0]
    if present.size == 0:
        return words
    return np.where(words >= 0, words - present.min(), NO_WORD)


def sample_indices(count: int, limit: int | None, seed: int) -> np.ndarray:
    """A seeded subset of block indices, in their original order."""
    if limit is None or count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def blocks(stream: Stream, bounds: list[tuple[int, int]], keep: np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
    """Input ids and block-local word ids of the kept blocks."""
    ids, words = [], []
    for index in keep:
        start, end = bounds[index]
        ids.append(stream.input_ids[start:end].tolist())
        words.append(local_word_ids(stream.word_ids[start:end]).tolist())
    return ids, words
