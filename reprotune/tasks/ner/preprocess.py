"""Tokenize stage for NER: words into sub-tokens, word tags aligned to them.

The first sub-token of a word carries the word's tag; later sub-tokens and special
tokens get -100 (ignored by the loss), or with `label_all_tokens` the word's tag
(I- for a B- word). Words the tokenizer drops or truncation cuts are counted.
"""

from __future__ import annotations

from typing import Any

from datasets import DatasetDict

from reprotune.tasks.ner.params import NerMeta, NerTaskParams

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


def prepare_meta(raw: DatasetDict, download_report: dict[str, Any], params: NerTaskParams) -> NerMeta:
    """The label order fixed at download, and the entity types seen in some split but not in train."""
    def types(split: str) -> set[str]:
        return {tag[2:] for tags in raw[split]["tags"] for tag in tags if tag != "O"}

    seen = set().union(*(types(split) for split in raw))
    return NerMeta(labels=download_report["labels"], types_missing_from_train=sorted(seen - types("train")))


def tokenize(raw: DatasetDict, tokenizer: Any, params: NerTaskParams,
             meta: NerMeta) -> tuple[DatasetDict, dict[str, Any]]:
    """Sub-token features for every split, and how many words each split lost to the tokenizer or truncation."""
    settings = params.tokenize
    features = raw.map(
        tokenize_batch,
        batched=True,
        batch_size=settings.batch_size,
        num_proc=settings.num_proc,
        fn_kwargs={"tokenizer": tokenizer, "labels": meta.labels, "max_length": settings.max_length,
                   "label_all_tokens": settings.label_all_tokens},
        remove_columns=["tokens", "tags"],
        desc="tokenize and align",
    )
    report: dict[str, Any] = {
        split: {
            "sentences": len(features[split]),
            "words": sum(len(t) for t in raw[split]["tokens"]),
            "words_dropped_by_tokenizer": int(sum(features[split]["words_dropped"])),
            "words_cut_by_truncation": int(sum(features[split]["words_cut"])),
            "sentences_truncated": int(sum(1 for c in features[split]["words_cut"] if c)),
        }
        for split in features
    }
    report["types_missing_from_train"] = meta.types_missing_from_train
    return features, report
