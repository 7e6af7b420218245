"""Size on disk and CPU latency: p50/p95 of one example at a time, and batched throughput.

Every runtime gets the same collated inputs (the first test features), after a few
warm-up calls; PyTorch runs in fp32 under inference_mode, onnxruntime on its CPU provider,
both with the same number of threads."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from reprotune.core.errors import ReprotuneError

WARMUP = 3


def size_bytes(*paths: Path) -> int:
    """Bytes of these files, and of every file under these folders."""
    total = 0
    for path in paths:
        path = Path(path)
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return total


def weights_bytes(checkpoint: Path) -> int:
    """The weights of a transformers checkpoint (safetensors files), without tokenizer or card."""
    return size_bytes(*sorted(Path(checkpoint).glob("*.safetensors")))


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def inputs(
    features: Dataset,
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
    count: int,
    batch_size: int,
    names: tuple[str, ...],
    columns: list[str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(one collated input per example, the same examples collated in batches). `columns`: what
    the collator reads (the family's model columns; MLM's whole-word masking needs word_ids),
    default the model's input names; only those names reach the model."""
    if len(features) == 0:
        raise ReprotuneError("latency: the test split has no features to time")
    subset = features.select(range(min(count, len(features))))
    keep = [c for c in (columns or names) if c in subset.column_names]
    rows = [{k: subset[i][k] for k in keep} for i in range(len(subset))]

    def pick(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if k in names}

    single = [pick(collate([row])) for row in rows]
    batched = [pick(collate(rows[i : i + batch_size])) for i in range(0, len(rows), batch_size)]
    return single, batched


def measure(
    call: Callable[..., Any], single: list[dict[str, Any]], batched: list[dict[str, Any]], warmup: int = WARMUP
) -> dict[str, Any]:
    """p50/p95 milliseconds per example (batch of one) and examples per second batched."""
    for batch in (single[:warmup] or single) + batched[:1]:
        call(**batch)
    times = []
    for batch in single:
        started = time.perf_counter()
        call(**batch)
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    examples = 0
    for batch in batched:
        call(**batch)
        examples += int(batch["input_ids"].shape[0])
    seconds = time.perf_counter() - started
    return {
        "p50_ms": round(float(np.percentile(times, 50)) * 1000, 3),
        "p95_ms": round(float(np.percentile(times, 95)) * 1000, 3),
        "batched_examples_per_second": round(examples / seconds, 2) if seconds > 0 else None,
        "examples": len(single),
    }


def measure_torch(
    model: Any, single: list[dict[str, Any]], batched: list[dict[str, Any]], threads: int | None = None
) -> dict[str, Any]:
    model = model.to("cpu").eval()
    with torch_threads(threads), torch.inference_mode():
        return measure(model, single, batched)
