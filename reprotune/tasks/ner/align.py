"""Tokenize words into sub-tokens and align word tags to them.

The first sub-token of a word carries the word's tag; later sub-tokens and special
tokens get -100 (ignored by the loss), or with `label_all_tokens` the word's tag
(I- for a B- word). Words the tokenizer drops or truncation cuts are counted.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100


def align_labels(word_ids: list[int | None], word_labels: list[int], label_all_tokens: bool,
                 b_to_i: dict[int, int]) -> list[int]:
    labels: list[int] = []
    previous: int | None = None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE)
        elif word != previous:
            labels.append(word_labels[word])
        else:
            labels.append(b_to_i.get(word_labels[word], word_labels[word]) if label_all_tokens else IGNORE)
        previous = word
    return labels


def begin_to_inside(labels: list[str]) -> dict[int, int]:
    """Map each B-X label id to its I-X id, for continuation sub-tokens."""
    index = {label: i for i, label in enumerate(labels)}
    return {i: index["I-" + label[2:]] for i, label in enumerate(labels)
            if label.startswith("B-") and "I-" + label[2:] in index}


def tokenize_batch(batch: dict[str, list], tokenizer: Any, labels: list[str], max_length: int,
                   label_all_tokens: bool) -> dict[str, list]:
    """Batched `map` function: input ids, aligned labels, word ids and loss counts."""
    label_id = {label: i for i, label in enumerate(labels)}
    b_to_i = begin_to_inside(labels)
    encoded = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
    all_labels, all_word_ids, dropped, cut = [], [], [], []
    for i, tags in enumerate(batch["tags"]):
        word_ids = encoded.word_ids(i)
        all_labels.append(align_labels(word_ids, [label_id[t] for t in tags], label_all_tokens, b_to_i))
        all_word_ids.append([-1 if w is None else w for w in word_ids])
        seen = {w for w in word_ids if w is not None}
        last = max(seen) if seen else -1
        truncated = len(encoded["input_ids"][i]) >= max_length
        missing = [w for w in range(len(tags)) if w not in seen]
        cut.append(sum(1 for w in missing if truncated and w > last))
        dropped.append(len(missing) - cut[-1])
    encoded["labels"] = all_labels
    encoded["word_ids"] = all_word_ids
    encoded["words_dropped"] = dropped
    encoded["words_cut"] = cut
    return encoded


def word_predictions(word_ids: list[int], token_predictions: list[int], n_words: int) -> list[int | None]:
    """The prediction of each word's first sub-token; None for words with no sub-token."""
    out: list[int | None] = [None] * n_words
    previous = -1
    for word, prediction in zip(word_ids, token_predictions):
        if word >= 0 and word != previous and word < n_words:
            out[word] = prediction
        previous = word
    return out
