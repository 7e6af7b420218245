"""Masking for the MLM objective, token-level or whole-word, with 80/10/10 replacement.

The same code draws the fixed validation/test masks once (seeded generator, at
tokenize time) and fresh train masks in every batch (global torch RNG, which the
Trainer seeds), so both follow exactly the same rules."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

IGNORE = -100


@dataclass(frozen=True)
class MaskSettings:
    strategy: str  # "token" or "whole_word"
    probability: float
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> MaskSettings:
        return cls(**meta)


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


def _units(input_ids: torch.Tensor, word_ids: torch.Tensor | None, eligible: torch.Tensor,
           strategy: str) -> torch.Tensor:
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


def choose(input_ids: torch.Tensor, word_ids: torch.Tensor | None, attention: torch.Tensor,
           settings: MaskSettings, vocab: Vocab, generator: torch.Generator | None = None) -> torch.Tensor:
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


def apply(input_ids: torch.Tensor, word_ids: torch.Tensor | None, picked: torch.Tensor,
          settings: MaskSettings, vocab: Vocab, generator: torch.Generator | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input ids, labels): picked positions keep their id as the label; of them
    `mask_replace_prob` become the mask token, `random_replace_prob` a random token, the
    rest stay. The choice is made once per unit, so a whole word is treated alike."""
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, IGNORE))
    units = _units(input_ids, word_ids, picked, settings.strategy)
    draw = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    starts = _starts(units)
    to_mask = _spread(starts & (draw < settings.mask_replace_prob), units)
    to_random = _spread(starts & (draw >= settings.mask_replace_prob)
                        & (draw < settings.mask_replace_prob + settings.random_replace_prob), units)
    random_ids = torch.randint(vocab.size, input_ids.shape, generator=generator, device=input_ids.device)
    masked = torch.where(to_mask, torch.full_like(input_ids, vocab.mask_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


def mask_batch(input_ids: torch.Tensor, word_ids: torch.Tensor | None, attention: torch.Tensor,
               settings: MaskSettings, vocab: Vocab, generator: torch.Generator | None = None
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
