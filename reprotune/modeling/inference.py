"""Batched forward passes for evaluation: no Trainer, no padding across batches,
so each family gets per-example outputs of the right length.

Rows are batched longest first, so each batch pads to nearly its own length (dynamic
padding pays off only when neighbours have similar lengths) and a batch too large for
memory fails on the first step. Consumers place outputs by the row indices yielded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import torch
from datasets import Dataset
from tqdm.auto import tqdm

from reprotune.modeling.precision import resolve

Forward = Callable[[Any, dict[str, torch.Tensor]], Any]


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(precision: str, where: str = "evaluate.precision") -> AbstractContextManager:
    """The autocast context for an evaluate/predict `precision` (`where` names the key in
    errors): bf16/fp16 on a GPU (`auto`: bf16 where supported), bf16 on CPUs with native
    bf16 (`auto` or `bf16`), fp32 elsewhere; see reprotune.modeling.precision."""
    return resolve(precision, where).autocast()


def length_order(features: Dataset, column: str = "input_ids") -> list[int]:
    """Row indices, longest first; ties keep dataset order so batches are reproducible."""
    lengths = [len(ids) for ids in features[column]]
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def call_model(model: Any, batch: dict[str, torch.Tensor]) -> Any:
    return model(**batch)


def batches(
    model: Any,
    features: Dataset,
    collator: Callable[[list[dict]], dict],
    batch_size: int,
    columns: list[str],
    precision: str = "auto",
    forward: Forward = call_model,
) -> Iterator[tuple[list[int], dict[str, torch.Tensor], Any]]:
    """Yield (row indices, batch on device, model output), longest rows first, in eval
    mode, without grad; `forward` runs the model on a batch (default `model(**batch)`)."""
    model.eval()
    target = device()
    model.to(target)
    keep = [column for column in columns if column in features.column_names]
    subset = features.select_columns(keep)
    order = length_order(subset) if "input_ids" in keep else list(range(len(subset)))
    with torch.inference_mode(), autocast(precision):
        for start in tqdm(range(0, len(order), batch_size), desc="predict", unit="batch"):
            rows = order[start : start + batch_size]
            picked = subset[rows]
            batch = collator([dict(zip(picked, values)) for values in zip(*picked.values())])
            batch = {key: value.to(target) for key, value in batch.items()}
            yield rows, batch, forward(model, batch)
