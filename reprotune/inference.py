"""Batched forward passes for evaluation: no Trainer, no padding across batches,
so each family gets per-example outputs of the right length."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from datasets import Dataset
from tqdm.auto import tqdm


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def batches(
    model: Any,
    features: Dataset,
    collator: Callable[[list[dict]], dict],
    batch_size: int,
    columns: list[str],
) -> Iterator[tuple[range, dict[str, torch.Tensor], Any]]:
    """Yield (row indices, batch on device, model output) in order, in eval mode, without grad."""
    model.eval()
    target = device()
    model.to(target)
    keep = [column for column in columns if column in features.column_names]
    subset = features.select_columns(keep)
    with torch.inference_mode():
        for start in tqdm(range(0, len(subset), batch_size), desc="predict", unit="batch"):
            rows = range(start, min(start + batch_size, len(subset)))
            columns_slice = subset[rows.start:rows.stop]
            batch = collator([dict(zip(columns_slice, values)) for values in zip(*columns_slice.values())])
            batch = {key: value.to(target) for key, value in batch.items()}
            yield rows, batch, model(**batch)
