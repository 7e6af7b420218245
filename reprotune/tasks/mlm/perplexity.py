"""Per-token predictions on the fixed-mask test blocks, and the scores computed
from them: perplexity = exp(mean loss over masked tokens), top-1/top-k accuracy."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset

from reprotune.modeling.inference import batches
from reprotune.tasks.mlm.masking import IGNORE, MaskSettings, MlmCollator, Vocab
from reprotune.tasks.mlm.sparse_head import PositionGather, encoder_of

COLUMNS = ["block", "position", "label_id", "label", "loss", "pred", "correct", "top_k", "in_top_k",
           "train_count", "probe_context", "probe_fills"]


def token_rows(model: Any, tokenizer: Any, features: Dataset, collate: Callable, batch_size: int,
               top_k: int, precision: str = "auto") -> list[dict[str, Any]]:
    """One row per masked test token: its loss (-log p of the gold token), the top-k
    fills and whether the gold token is first / among them. The vocabulary head runs
    on the masked positions only (sparse_head), in the same row-major order."""
    counts = features["label_train_counts"] if "label_train_counts" in features.column_names else None
    gather = PositionGather(encoder_of(model))

    def masked_logits(net: Any, batch: dict[str, torch.Tensor]) -> Any:
        with gather.only(batch["labels"] != IGNORE):
            return net(**{key: value for key, value in batch.items() if key != "labels"})

    rows: list[dict[str, Any]] = []
    try:
        for indices, batch, output in batches(model, features, collate, batch_size, ["input_ids", "labels"],
                                              precision, masked_logits):
            rows.extend(_rows_of_batch(tokenizer, indices, batch["labels"], output.logits[0], counts, top_k))
    finally:
        gather.remove()
    return sorted(rows, key=lambda row: (row["block"], row["position"]))


def _rows_of_batch(tokenizer: Any, indices: list[int], labels: torch.Tensor, masked_logits: torch.Tensor,
                   counts: list | None, top_k: int) -> list[dict[str, Any]]:
    """Rows for one batch; `masked_logits` holds the labelled positions in row-major order."""
    where = (labels != IGNORE).nonzero().cpu()
    log_probs = torch.log_softmax(masked_logits.float(), dim=-1)
    gold = labels[labels != IGNORE]
    losses = (-log_probs.gather(1, gold[:, None]).squeeze(1)).cpu().tolist()
    best = log_probs.topk(min(top_k, log_probs.shape[-1]), dim=-1).indices.cpu().tolist()
    rows = []
    for (row, position), label_id, loss, fills in zip(where.tolist(), gold.cpu().tolist(), losses, best):
        block = indices[row]
        fill_tokens = tokenizer.convert_ids_to_tokens(fills)
        rows.append({
            "block": block, "position": position, "label_id": label_id,
            "label": tokenizer.convert_ids_to_tokens(label_id), "loss": round(float(loss), 6),
            "pred": fill_tokens[0], "correct": fills[0] == label_id, "top_k": fill_tokens,
            "in_top_k": label_id in fills,
            "train_count": int(counts[block][position]) if counts is not None else -1,
            "probe_context": "", "probe_fills": [],
        })
    return rows


def original_ids(input_ids: list[int], labels: list[int]) -> list[int]:
    """The unmasked block: a label where one is stored, else the input id."""
    return [label if label != IGNORE else token for token, label in zip(input_ids, labels)]


def probe_position(tokenizer: Any, ids: list[int], labels: list[int], word_ids: list[int]) -> int | None:
    """The first masked position whose token is a whole alphabetic word of 4+ letters
    (one sub-token, so not 'the'/'and'), so a fill reads naturally; None if the block has none."""
    for position, label in enumerate(labels):
        if label == IGNORE or word_ids[position] < 0:
            continue
        same_word = sum(1 for w in word_ids if w == word_ids[position])
        token = tokenizer.convert_ids_to_tokens(ids[position])
        if same_word == 1 and token.isalpha() and len(token) >= 4:
            return position
    return None


def probes(model: Any, tokenizer: Any, features: Dataset, count: int, top_k: int,
           window: int = 12) -> dict[tuple[int, int], tuple[str, list[str]]]:
    """Classic fill-mask on the first `count` test blocks: the block as written with
    ONE word replaced by the mask token; (block, position) -> (context, top-k fills)."""
    chosen: list[tuple[int, int, list[int]]] = []
    for block in range(min(count, len(features))):
        row = features[block]
        ids = original_ids(row["input_ids"], row["labels"])
        position = probe_position(tokenizer, ids, row["labels"], row["word_ids"])
        if position is not None:
            chosen.append((block, position, ids))
    if not chosen:
        return {}
    # the probe's label marks its position, so the collator leaves the input as built
    inputs = Dataset.from_dict({
        "input_ids": [ids[:p] + [tokenizer.mask_token_id] + ids[p + 1:] for _, p, ids in chosen],
        "labels": [[IGNORE] * p + [ids[p]] + [IGNORE] * (len(ids) - p - 1) for _, p, ids in chosen],
    })
    collate = MlmCollator(Vocab.from_tokenizer(tokenizer), MaskSettings("token", 0.15))
    out: dict[tuple[int, int], tuple[str, list[str]]] = {}
    for indices, _, output in batches(model, inputs, collate, 16, ["input_ids", "labels"]):
        for offset, index in enumerate(indices):
            block, position, ids = chosen[index]
            top = output.logits[offset, position].float().topk(top_k).indices.cpu().tolist()
            start, end = max(0, position - window), min(len(ids), position + window + 1)
            left = tokenizer.decode(ids[start:position], skip_special_tokens=True)
            right = tokenizer.decode(ids[position + 1:end], skip_special_tokens=True)
            context = f"{left} {tokenizer.mask_token} {right}".strip()
            out[(block, position)] = (context, tokenizer.convert_ids_to_tokens(top))
    return out


def predictions_frame(rows: list[dict[str, Any]], probe_results: dict[tuple[int, int], tuple[str, list[str]]]
                      ) -> pd.DataFrame:
    for row in rows:
        found = probe_results.get((row["block"], row["position"]))
        if found:
            row["probe_context"], row["probe_fills"] = found[0], list(found[1])
    return pd.DataFrame(rows, columns=COLUMNS)


def perplexity(losses: np.ndarray | pd.Series) -> float:
    mean = float(np.mean(losses)) if len(losses) else float("nan")
    return math.exp(mean) if mean < 700 else float("inf")


def scores(predictions: pd.DataFrame) -> dict[str, Any]:
    """Perplexity and masked-token accuracy from the per-token table alone."""
    losses = predictions["loss"].to_numpy(dtype=float)
    if len(losses) == 0:
        return {"perplexity": float("nan"), "loss": float("nan"), "accuracy": 0.0, "top_k_accuracy": 0.0,
                "masked_tokens": 0, "blocks": 0}
    return {
        "perplexity": round(perplexity(losses), 4),
        "loss": round(float(losses.mean()), 6),
        "accuracy": round(float(predictions["correct"].mean()), 6),
        "top_k_accuracy": round(float(predictions["in_top_k"].mean()), 6),
        "masked_tokens": int(len(predictions)),
        "blocks": int(predictions["block"].nunique()),
    }
