"""Tokenize stage for masked-LM: whole documents (no truncation) concatenated per split
and cut into `chunk_size` blocks; validation and test masked ONCE (seeded) so every
evaluation scores the same tokens; train blocks masked afresh in each batch by the collator.

Blocks may span documents (the [CLS]/[SEP] the tokenizer adds mark the seams); each
token keeps its word id for whole-word masking. The masking code is the same for the
fixed masks (seeded generator) and the train batches (global torch RNG, which the
Trainer seeds), so both follow exactly the same rules: token-level or whole-word, with
80/10/10 replacement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset, DatasetDict

from reprotune.core.errors import ReprotuneError
from reprotune.tasks.mlm.params import MaskSettings, MlmMeta, MlmTaskParams

SPLITS = ("train", "validation", "test")
# Above this, tokenizers store "no limit" (1e30) as model_max_length.
_NO_LIMIT = 10**6


# blocks ---------------------------------------------------------------
NO_WORD = -1


def tokenize_documents(batch: dict[str, list], tokenizer: Any) -> dict[str, list]:
    """Batched `map` function: ids with the tokenizer's special tokens, and the index of
    each token's word inside its document (-1 for special tokens)."""
    encoded = tokenizer(
        batch["text"],
        add_special_tokens=True,
        truncation=False,
        verbose=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
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


# masking --------------------------------------------------------------
IGNORE = -100


@dataclass(frozen=True)
class Vocab:
    """Token ids the masker needs from the tokenizer."""

    mask_id: int
    pad_id: int
    size: int
    special_ids: tuple[int, ...]

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> Vocab:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.mask_token_id
        return cls(int(tokenizer.mask_token_id), int(pad), len(tokenizer), tuple(sorted(tokenizer.all_special_ids)))


def _units(
    input_ids: torch.Tensor, word_ids: torch.Tensor | None, eligible: torch.Tensor, strategy: str
) -> torch.Tensor:
    """The id of the masking unit of each position (-1: never masked): the token
    itself, or its word for whole-word masking."""
    if strategy == "whole_word":
        if word_ids is None:
            raise ValueError("whole-word masking needs word_ids")
        return torch.where(eligible & (word_ids >= 0), word_ids, torch.full_like(word_ids, -1))
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    return torch.where(eligible, positions, torch.full_like(positions, -1))


def _starts(units: torch.Tensor) -> torch.Tensor:
    """The first position of every unit (a word's sub-tokens are contiguous in a block)."""
    previous = torch.cat([torch.full_like(units[:, :1], -2), units[:, :-1]], dim=1)
    return (units >= 0) & (units != previous)


def _spread(per_start: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Copy a value drawn at each unit's first position to the unit's other positions."""
    start = _starts(units)
    positions = torch.arange(units.shape[1], device=units.device).expand_as(units)
    last_start = torch.cummax(torch.where(start, positions, torch.full_like(positions, -1)), dim=1).values
    safe = last_start.clamp(min=0)
    same_unit = (units >= 0) & (last_start >= 0) & (units.gather(1, safe) == units)
    return per_start.gather(1, safe) & same_unit


def choose(
    input_ids: torch.Tensor,
    word_ids: torch.Tensor | None,
    attention: torch.Tensor,
    settings: MaskSettings,
    vocab: Vocab,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Boolean matrix of the positions to predict. Every unit (token or word) is chosen
    with `settings.probability`; a block with none chosen gets one, so no block is
    left out of the loss."""
    special = torch.isin(input_ids, torch.tensor(vocab.special_ids, device=input_ids.device))
    eligible = attention.bool() & ~special
    units = _units(input_ids, word_ids, eligible, settings.strategy)
    draw = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    picked = _spread(draw < settings.probability, units)
    starts = _starts(units)
    empty = ~picked.any(dim=1) & starts.any(dim=1)
    if empty.any():
        fallback = torch.where(starts, draw, torch.full_like(draw, -1.0)).argmax(dim=1)
        forced = torch.zeros_like(starts)
        forced[empty, fallback[empty]] = True
        picked = picked | _spread(forced, units)
    return picked


def apply(
    input_ids: torch.Tensor,
    word_ids: torch.Tensor | None,
    picked: torch.Tensor,
    settings: MaskSettings,
    vocab: Vocab,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input ids, labels): picked positions keep their id as the label; of them
    `mask_replace_prob` become the mask token, `random_replace_prob` a random token, the
    rest stay. The choice is made once per unit, so a whole word is treated alike."""
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, IGNORE))
    units = _units(input_ids, word_ids, picked, settings.strategy)
    draw = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    starts = _starts(units)
    to_mask = _spread(starts & (draw < settings.mask_replace_prob), units)
    to_random = _spread(
        starts
        & (draw >= settings.mask_replace_prob)
        & (draw < settings.mask_replace_prob + settings.random_replace_prob),
        units,
    )
    random_ids = torch.randint(vocab.size, input_ids.shape, generator=generator, device=input_ids.device)
    masked = torch.where(to_mask, torch.full_like(input_ids, vocab.mask_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


def mask_batch(
    input_ids: torch.Tensor,
    word_ids: torch.Tensor | None,
    attention: torch.Tensor,
    settings: MaskSettings,
    vocab: Vocab,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    picked = choose(input_ids, word_ids, attention, settings, vocab, generator)
    return apply(input_ids, word_ids, picked, settings, vocab, generator)


def pad(rows: list[list[int]], value: int, multiple: int | None = None) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    if multiple:
        width = -(-width // multiple) * multiple
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


class MlmCollator:
    """Pads a batch; masks it only when it carries no labels. Train blocks arrive
    unmasked and get fresh masks every time; validation/test blocks arrive with their
    fixed masks and labels and pass through unchanged."""

    def __init__(self, vocab: Vocab, settings: MaskSettings, pad_to_multiple_of: int | None = None) -> None:
        self.vocab = vocab
        self.settings = settings
        self.multiple = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = pad([f["input_ids"] for f in features], self.vocab.pad_id, self.multiple)
        attention = pad([[1] * len(f["input_ids"]) for f in features], 0, self.multiple)
        if all(f.get("labels") is not None for f in features):
            labels = pad([f["labels"] for f in features], IGNORE, self.multiple)
            return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        word_ids = None
        if self.settings.strategy == "whole_word":
            if any(f.get("word_ids") is None for f in features):
                raise ValueError("whole-word masking needs a word_ids column in the training data")
            word_ids = pad([f["word_ids"] for f in features], -1, self.multiple)
        masked, labels = mask_batch(input_ids, word_ids, attention, self.settings, self.vocab)
        return {"input_ids": masked, "attention_mask": attention, "labels": labels}


# tokenize stage -------------------------------------------------------
def prepare_meta(raw: DatasetDict, download_report: dict[str, Any], params: MlmTaskParams) -> MlmMeta:
    """The masking rules and block size, from the tokenize section (train may not read it)."""
    settings = params.tokenize
    probability = settings.mlm_probability if settings.masking == "token" else settings.wwm_probability
    masking = MaskSettings(
        strategy=settings.masking,
        probability=probability,
        mask_replace_prob=settings.mask_replace_prob,
        random_replace_prob=settings.random_replace_prob,
    )
    return MlmMeta(masking=masking, chunk_size=settings.chunk_size)


def check_tokenizer(tokenizer: Any, chunk_size: int) -> None:
    if tokenizer.mask_token_id is None:
        raise ReprotuneError(
            f"tokenizer of '{tokenizer.name_or_path}' has no mask token; masked-LM needs an encoder "
            "tokenizer with one (e.g. [MASK] or <mask>)"
        )
    limit = tokenizer.model_max_length
    if limit < _NO_LIMIT and chunk_size > limit:
        raise ReprotuneError(
            f"tokenize.chunk_size {chunk_size} exceeds the model's maximum length {limit}; use at most {limit}"
        )


def fixed_masks(
    ids: list[list[int]], words: list[list[int]], masking: MaskSettings, vocab: Vocab, generator: torch.Generator
) -> tuple[list[list[int]], list[list[int]]]:
    """Mask the evaluation blocks once; stored with the data, they never change."""
    lengths = [len(block) for block in ids]
    attention = pad([[1] * n for n in lengths], 0)
    masked, labels = mask_batch(pad(ids, vocab.pad_id), pad(words, -1), attention, masking, vocab, generator)
    return (
        [row[:n] for row, n in zip(masked.tolist(), lengths)],
        [row[:n] for row, n in zip(labels.tolist(), lengths)],
    )


def tokenize(
    raw: DatasetDict, tokenizer: Any, params: MlmTaskParams, meta: MlmMeta
) -> tuple[DatasetDict, dict[str, Any]]:
    """Blocks of every split: train unmasked (word ids kept for whole-word masking),
    validation/test with their fixed masks; test also stores each label's train count
    for the frequency analysis."""
    settings = params.tokenize
    check_tokenizer(tokenizer, settings.chunk_size)
    tokenized = raw.map(
        tokenize_documents,
        batched=True,
        batch_size=settings.batch_size,
        num_proc=settings.num_proc,
        fn_kwargs={"tokenizer": tokenizer},
        remove_columns=raw["train"].column_names,
        desc="tokenize documents",
    )
    masking = meta.masking
    vocab = Vocab.from_tokenizer(tokenizer)
    features: dict[str, Dataset] = {}
    report: dict[str, Any] = {
        "chunk_size": settings.chunk_size,
        "last_chunk": settings.last_chunk,
        "masking": masking.model_dump(),
    }
    train_counts: np.ndarray | None = None
    for index, split in enumerate(SPLITS):
        stream = concatenate(tokenized[split])
        total = len(stream.input_ids)
        bounds = chunk_bounds(total, settings.chunk_size, settings.last_chunk)
        if not bounds:
            raise ReprotuneError(
                f"{split} has {total} tokens, fewer than tokenize.chunk_size {settings.chunk_size}; "
                "lower chunk_size or set tokenize.last_chunk: keep"
            )
        limit = settings.max_train_samples if split == "train" else settings.max_eval_samples
        keep = sample_indices(len(bounds), limit, settings.sample_seed)
        ids, words = blocks(stream, bounds, keep)
        report[split] = {
            "documents": stream.documents,
            "tokens": total,
            "blocks": len(bounds),
            "tail_tokens_dropped": total - sum(end - start for start, end in bounds),
            "blocks_kept": len(ids),
            "tokens_kept": sum(len(block) for block in ids),
        }
        if split == "train":
            train_counts = np.bincount(np.concatenate([np.asarray(b) for b in ids]), minlength=len(tokenizer))
            columns: dict[str, list] = {"input_ids": ids}
            if masking.strategy == "whole_word":
                columns["word_ids"] = words
            features[split] = Dataset.from_dict(columns)
            continue
        generator = torch.Generator().manual_seed(settings.mask_seed + index)
        masked, labels = fixed_masks(ids, words, masking, vocab, generator)
        columns = {"input_ids": masked, "labels": labels, "word_ids": words}
        if split == "test":
            assert train_counts is not None
            columns["label_train_counts"] = [
                [int(train_counts[label]) if label != IGNORE else -1 for label in row] for row in labels
            ]
        report[split]["masked_tokens"] = sum(sum(1 for label in row if label != IGNORE) for row in labels)
        features[split] = Dataset.from_dict(columns)
    return DatasetDict(features), report
