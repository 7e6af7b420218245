"""PyTorch against its ONNX (and int8) export on the test features.

Both models get the very same collated batches on the CPU, in fp32. Per output
(`logits`, or `start_logits`/`end_logits`) the check records the largest absolute
difference and compares predictions: the argmax per token (NER, masked LM), per
example (classification), or over positions (QA start and end).

- fp32 ONNX: every prediction must be identical. A position whose two best PyTorch
  logits lie within `tie_margin` is a tie (either answer is the model's), counted
  apart and not as a mismatch.
- int8: predictions may move; the family's headline metric (or, for families without
  one here, the accuracy against the features' labels) may drop by at most
  `int8_tolerance` (absolute).

A failed check raises ReprotuneError, which fails the export stage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from reprotune.core.errors import ReprotuneError

POSITION_OUTPUTS = ("start_logits", "end_logits")
"""Outputs whose prediction is a position in the sequence (argmax over the sequence axis)."""
LABEL_COLUMNS = ("labels", "start_positions", "end_positions")


def _margin(values: np.ndarray) -> np.ndarray:
    """Best minus second-best value along the last axis (inf where only one is finite)."""
    if values.shape[-1] < 2:
        return np.full(values.shape[:-1], np.inf)
    top2 = np.partition(values, -2, axis=-1)[..., -2:]
    with np.errstate(invalid="ignore"):
        margin = top2.max(-1) - top2.min(-1)
    return np.nan_to_num(margin, nan=np.inf)


def _predictions(name: str, values: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, margin between the two best logits), over the positions that count."""
    if name in POSITION_OUTPUTS:
        masked = np.where(keep, values, -np.inf)
        return masked.argmax(-1), _margin(masked)
    predicted, margin = values.argmax(-1), _margin(values)
    if values.ndim == 3:  # per token: only real tokens count
        return predicted[keep], margin[keep]
    return predicted, margin


class _Tally:
    def __init__(self) -> None:
        self.max_abs_diff = 0.0
        self.predictions = 0
        self.mismatches = 0
        self.ties = 0
        self.correct = 0
        self.labelled = 0

    def add(
        self,
        reference: dict[str, np.ndarray],
        candidate: dict[str, np.ndarray],
        keep: np.ndarray,
        labels: dict[str, np.ndarray],
        tie_margin: float,
    ) -> None:
        for name, ref in reference.items():
            cand = candidate[name]
            if cand.shape != ref.shape:
                raise ReprotuneError(f"parity: output '{name}' has shape {cand.shape}, PyTorch {ref.shape}")
            if ref.ndim == 3:
                mask = keep[..., None]
            elif name in POSITION_OUTPUTS:
                mask = keep
            else:
                mask = np.ones(ref.shape, bool)
            diff = np.abs(cand - ref)
            diff = np.where(np.broadcast_to(mask, diff.shape), diff, 0.0)
            self.max_abs_diff = max(self.max_abs_diff, float(np.nan_to_num(diff, nan=np.inf).max(initial=0.0)))
            ref_pred, margin = _predictions(name, ref, keep)
            cand_pred, _ = _predictions(name, cand, keep)
            differ = ref_pred != cand_pred
            tie = margin < tie_margin
            self.predictions += int(ref_pred.size)
            self.mismatches += int((differ & ~tie).sum())
            self.ties += int((differ & tie).sum())
        self._score_labels(candidate, keep, labels)

    def _score_labels(self, outputs: dict[str, np.ndarray], keep: np.ndarray, labels: dict[str, np.ndarray]) -> None:
        """Accuracy of the candidate against the features' labels: tokens or examples
        (`labels`, -100 ignored), or start and end both right (QA)."""
        if "labels" in labels and "logits" in outputs:
            predicted, gold = outputs["logits"].argmax(-1), labels["labels"]
            if gold.shape != predicted.shape:
                return
            counted = gold != -100
            self.correct += int(((predicted == gold) & counted).sum())
            self.labelled += int(counted.sum())
        elif "start_positions" in labels and "start_logits" in outputs:
            start = np.where(keep, outputs["start_logits"], -np.inf).argmax(-1)
            end = np.where(keep, outputs["end_logits"], -np.inf).argmax(-1)
            self.correct += int(((start == labels["start_positions"]) & (end == labels["end_positions"])).sum())
            self.labelled += int(start.size)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "max_abs_logit_diff": round(self.max_abs_diff, 8),
            "predictions": self.predictions,
            "mismatches": self.mismatches,
            "ties": self.ties,
            "agreement": round(1 - (self.mismatches + self.ties) / self.predictions, 6) if self.predictions else None,
        }
        if self.labelled:
            out["label_accuracy"] = round(self.correct / self.labelled, 6)
        return out


def _numpy(output: Any, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {name: output[name].detach().float().cpu().numpy() for name in names}


def compare(
    reference: Any,
    candidates: dict[str, Any],
    features: Dataset,
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
    batch_size: int = 16,
    input_names: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids"),
    output_names: tuple[str, ...] = ("logits",),
    tie_margin: float = 1e-4,
    limit: int | None = None,
    columns: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run `reference` (PyTorch) and each candidate on the same batches, on the CPU;
    one report per candidate, plus `pytorch` with its own label accuracy. `columns`: the
    feature columns the collator needs (default: the inputs and the label columns); the
    models get only `input_names`."""
    if limit is not None:
        features = features.select(range(min(limit, len(features))))
    if len(features) == 0:
        raise ReprotuneError("parity: the test split has no features to compare on")
    wanted = columns or [*input_names, *LABEL_COLUMNS]
    columns = [c for c in dict.fromkeys([*wanted, *input_names]) if c in features.column_names]
    subset = features.select_columns(columns)
    reference = reference.to("cpu").eval()
    for model in candidates.values():
        if isinstance(model, torch.nn.Module):
            model.eval()  # the ONNX exporter restores the mode it found; dropout must be off here
    tallies = {name: _Tally() for name in candidates}
    own = _Tally()
    with torch.inference_mode():
        for start in range(0, len(subset), batch_size):
            rows = subset[start : start + batch_size]
            batch = collate([dict(zip(rows, values)) for values in zip(*rows.values())])
            labels = {k: np.asarray(batch[k]) for k in LABEL_COLUMNS if k in batch}
            inputs = {k: batch[k] for k in input_names if k in batch}
            keep = inputs["attention_mask"].numpy().astype(bool)
            ref = _numpy(reference(**inputs), output_names)
            own.add(ref, ref, keep, labels, tie_margin)
            for name, model in candidates.items():
                tallies[name].add(ref, _numpy(model(**inputs), output_names), keep, labels, tie_margin)
    return {"pytorch": own.report(), **{name: tally.report() for name, tally in tallies.items()}}


def check_identical(report: dict[str, Any], what: str = "onnx") -> None:
    """fp32: no prediction may differ (ties aside)."""
    if report["mismatches"]:
        raise ReprotuneError(
            f"parity: the {what} export predicts differently from PyTorch at {report['mismatches']} of "
            f"{report['predictions']} places (max logit difference {report['max_abs_logit_diff']:.3g}); "
            "the export is broken, do not ship it"
        )
    if not np.isfinite(report["max_abs_logit_diff"]):
        raise ReprotuneError(f"parity: the {what} export gives non-finite logits")


def check_metric(metric: str, reference: float, candidate: float, tolerance: float, what: str = "int8") -> dict:
    """The candidate's metric may fall short of PyTorch's by at most `tolerance`."""
    drop = reference - candidate
    result = {
        "metric": metric,
        "pytorch": round(reference, 6),
        what: round(candidate, 6),
        "drop": round(drop, 6),
        "tolerance": tolerance,
    }
    if drop > tolerance + 1e-12:
        raise ReprotuneError(
            f"parity: {what} {metric} is {candidate:.4f}, PyTorch {reference:.4f}: a drop of {drop:.4f} exceeds "
            f"export.int8_tolerance {tolerance}; keep the fp32 ONNX model or raise the tolerance"
        )
    return result
