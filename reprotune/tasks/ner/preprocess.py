"""Tokenize stage for NER: words into sub-tokens, word tags aligned to them.

The first sub-token of a word carries the word's tag; later sub-tokens and special
tokens get -100 (ignored by the loss), or with `label_all_tokens` the word's tag
(I- for a B- word). Words the tokenizer drops or truncation cuts are counted.

With `tokenize.windows` a sentence longer than max_length becomes several feature rows,
overlapping windows of whole words (`word_windows`): `example_index` ties each row to its
sentence (its row in the raw split), `word_offset` is the window's first word, and
`word_ids` count words from the sentence's start, so every row maps to sentence words.
Every window is trained on, each of its words labelled (not only in the window where the
word has the most context): the model sees every window at prediction too, a word near a
window edge still has real context on one side, and labelling only max-context words would
leave the overlap's other copies as unlabelled input. Prediction keeps each word's tag
from its max-context window (`family.max_context_words`). Short sentences get the
same single row (same input ids) as without windows.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from datasets import DatasetDict

from reprotune.core.arrow import map_batches
from reprotune.tasks.ner.params import NerMeta, NerTaskParams, NerWindows

IGNORE = -100


def align_labels(
    word_ids: list[int | None], word_labels: list[int], label_all_tokens: bool, b_to_i: dict[int, int]
) -> list[int]:
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
    return {
        i: index["I-" + label[2:]]
        for i, label in enumerate(labels)
        if label.startswith("B-") and "I-" + label[2:] in index
    }


def tokenize_batch(
    batch: dict[str, list], tokenizer: Any, labels: list[str], max_length: int, label_all_tokens: bool
) -> dict[str, list]:
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


def word_windows(word_lengths: list[int], capacity: int, stride: int) -> list[tuple[int, int]]:
    """Windows `[start, end)` of whole words, each at most `capacity` sub-tokens (a single
    longer word is a window of its own, truncated), covering every word; consecutive windows
    share the most trailing words whose sub-tokens fit in `stride` (and leave room for the
    next new word), and each window starts at least one word after the one before."""
    windows: list[tuple[int, int]] = []
    start, n_words = 0, len(word_lengths)
    while start < n_words:
        end, used = start, 0
        while end < n_words and (end == start or used + word_lengths[end] <= capacity):
            used += word_lengths[end]
            end += 1
        windows.append((start, end))
        if end >= n_words:
            break
        # the overlap leaves room for at least the next new word
        room = min(stride, capacity - word_lengths[end])
        following, shared = end, 0
        while following - 1 > start and shared + word_lengths[following - 1] <= room:
            following -= 1
            shared += word_lengths[following]
        start = following
    return windows


def tokenize_windows(
    batch: dict[str, list],
    indices: list[int],
    tokenizer: Any,
    labels: list[str],
    max_length: int,
    label_all_tokens: bool,
    stride: int,
) -> dict[str, list]:
    """Batched `map` function with `with_indices`: one feature row per word window (one for
    a sentence that fits), with `example_index` and `word_offset`; `word_ids` and the loss
    counts as `tokenize_batch` gives them, words counted once per sentence (on its first row)."""
    label_id = {label: i for i, label in enumerate(labels)}
    b_to_i = begin_to_inside(labels)
    capacity = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    full = tokenizer(batch["tokens"], is_split_into_words=True, truncation=False, verbose=False)
    out: dict[str, list] = {key: [] for key in full.keys()}
    out |= {"labels": [], "word_ids": [], "words_dropped": [], "words_cut": [], "example_index": [], "word_offset": []}
    for i, (words, tags) in enumerate(zip(batch["tokens"], batch["tags"])):
        word_ids = full.word_ids(i)
        lengths = [0] * len(words)
        for word in word_ids:
            if word is not None:
                lengths[word] += 1
        tag_ids = [label_id[t] for t in tags]
        if len(full["input_ids"][i]) <= max_length:
            spans, encoded = [(0, len(words))], [({key: full[key][i] for key in full.keys()}, word_ids)]
        else:
            spans = word_windows(lengths, capacity, stride)
            window = tokenizer(
                [words[s:e] for s, e in spans], is_split_into_words=True, truncation=True, max_length=max_length
            )
            encoded = [({key: window[key][k] for key in window.keys()}, window.word_ids(k)) for k in range(len(spans))]
        for k, ((start, end), (row, ids)) in enumerate(zip(spans, encoded)):
            for key, value in row.items():
                out[key].append(value)
            out["labels"].append(align_labels(ids, tag_ids[start:end], label_all_tokens, b_to_i))
            out["word_ids"].append([-1 if w is None else w + start for w in ids])
            out["words_dropped"].append(sum(1 for n in lengths if n == 0) if k == 0 else 0)
            out["words_cut"].append(0)
            out["example_index"].append(indices[i])
            out["word_offset"].append(start)
    return out


def tokenize_split(
    raw: Any,
    tokenizer: Any,
    labels: list[str],
    max_length: int,
    label_all_tokens: bool,
    windows: NerWindows | None,
    batch_size: int = 1000,
    num_proc: int | None = None,
) -> Any:
    """Features of one split or a DatasetDict: truncated (`windows` None, today's rows) or windowed."""
    kwargs = {"tokenizer": tokenizer, "labels": labels, "max_length": max_length, "label_all_tokens": label_all_tokens}
    if windows is None:
        columns = ["tokens", "tags"]  # the other raw columns (id) stay
        return map_batches(
            raw, tokenize_batch, kwargs, "tokenize and align", batch_size, num_proc, remove_columns=columns
        )
    kwargs["stride"] = windows.stride
    return map_batches(
        raw, tokenize_windows, kwargs, "tokenize and align (windows)", batch_size, num_proc, with_indices=True
    )


def window_counts(features: Any) -> dict[str, int]:
    """Feature rows (windows) and the sentences that needed more than one."""
    per_example = Counter(features["example_index"])
    return {"windows": len(features), "sentences_windowed": sum(1 for n in per_example.values() if n > 1)}


def prepare_meta(raw: DatasetDict, download_report: dict[str, Any], params: NerTaskParams) -> NerMeta:
    """The label order fixed at download, and the entity types seen in some split but not in train."""

    def types(split: str) -> set[str]:
        return {tag[2:] for tags in raw[split]["tags"] for tag in tags if tag != "O"}

    seen = set().union(*(types(split) for split in raw))
    return NerMeta(labels=download_report["labels"], types_missing_from_train=sorted(seen - types("train")))


def tokenize(
    raw: DatasetDict, tokenizer: Any, params: NerTaskParams, meta: NerMeta
) -> tuple[DatasetDict, dict[str, Any]]:
    """Sub-token features for every split, and how many words each split lost to the tokenizer or truncation."""
    settings = params.tokenize
    features = tokenize_split(
        raw,
        tokenizer,
        meta.labels,
        settings.max_length,
        settings.label_all_tokens,
        settings.windows,
        settings.batch_size,
        settings.num_proc,
    )
    report: dict[str, Any] = {
        split: {
            "sentences": len(raw[split]),
            "words": sum(len(t) for t in raw[split]["tokens"]),
            "words_dropped_by_tokenizer": int(sum(features[split]["words_dropped"])),
            "words_cut_by_truncation": int(sum(features[split]["words_cut"])),
            "sentences_truncated": int(sum(1 for c in features[split]["words_cut"] if c)),
            **(window_counts(features[split]) if settings.windows is not None else {}),
        }
        for split in features
    }
    report["types_missing_from_train"] = meta.types_missing_from_train
    return features, report
