"""Which validation feature each row of the Trainer's predictions belongs to.

EM/F1 needs each window's logits next to its offsets and example id, but with
`train_sampling_strategy: group_by_length` transformers 5 also reorders evaluation
batches by length (a seeded LengthGroupedSampler). The order is therefore rebuilt:
dataset order, or the sampler's order for the seed and eval batch size of either
training method, whichever reproduces the labels and padded lengths the Trainer
returned. Nothing matching is an error, never a silently misaligned score."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from reprotune.core.errors import ReprotuneError

PAD = -100


def padded_lengths(logits: np.ndarray) -> np.ndarray:
    """Per row, the batch's padded length: Trainer pads shorter batches with -100."""
    is_pad = logits == PAD
    trailing = np.cumprod(is_pad[:, ::-1], axis=1).sum(axis=1)
    return logits.shape[1] - trailing


def expected_lengths(order: np.ndarray, lengths: np.ndarray, batch_size: int, multiple: int | None) -> np.ndarray:
    out = np.empty(len(order), dtype=np.int64)
    for start in range(0, len(order), batch_size):
        longest = int(lengths[order[start:start + batch_size]].max())
        if multiple:
            longest = -(-longest // multiple) * multiple
        out[start:start + batch_size] = longest
    return out


def candidate_orders(lengths: Sequence[int], settings: Sequence[tuple[int, int, bool]]) -> list[tuple[np.ndarray, int]]:
    """(order, eval batch size) for dataset order and each (batch size, seed, group_by_length)."""
    from transformers.trainer_pt_utils import get_length_grouped_indices

    out: list[tuple[np.ndarray, int]] = []
    for batch_size, seed, grouped in settings:
        if grouped:
            order = get_length_grouped_indices(list(lengths), batch_size,
                                               generator=torch.Generator().manual_seed(seed))
            out.append((np.asarray(order), batch_size))
        out.append((np.arange(len(lengths)), batch_size))
    return out


def feature_order(
    start_logits: np.ndarray,
    label_ids: tuple[np.ndarray, np.ndarray],
    features_starts: np.ndarray,
    features_ends: np.ndarray,
    lengths: np.ndarray,
    settings: Sequence[tuple[int, int, bool]],
    pad_multiple: int | None,
) -> np.ndarray:
    """Feature index of each prediction row.

    A candidate must reproduce the labels and leave every row at least its own length;
    among several, the one whose batches reproduce the padded lengths exactly wins (under
    DDP the gather pads batches of all processes to one length, so that test is a preference)."""
    observed_len = padded_lengths(start_logits)
    starts, ends = (np.asarray(labels).reshape(-1) for labels in label_ids)
    fitting: list[tuple[bool, np.ndarray]] = []
    for order, batch_size in candidate_orders(lengths.tolist(), settings):
        if len(order) != len(starts) or not (observed_len >= lengths[order]).all():
            continue
        if np.array_equal(features_starts[order], starts) and np.array_equal(features_ends[order], ends):
            exact = np.array_equal(expected_lengths(order, lengths, batch_size, pad_multiple), observed_len)
            fitting.append((exact, order))
    chosen = [order for exact, order in fitting if exact] or [order for _, order in fitting]
    if not chosen:
        raise ReprotuneError(
            "could not line the Trainer's validation predictions up with the validation features "
            f"({len(starts)} predictions, {len(features_starts)} features); rerun tokenize, and report this if it persists"
        )
    if any(not np.array_equal(chosen[0], other) for other in chosen[1:]):
        raise ReprotuneError(
            "the Trainer's validation order is ambiguous (two batch orders fit its output); set the same "
            "eval_batch_size and seed in train_full and train_lora, or group_by_length: false"
        )
    return chosen[0]
