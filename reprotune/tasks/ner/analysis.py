"""NER error analysis: classify every entity error, per-type counts, a type confusion
table for `dvc plots`, the worst sentences, and full against LoRA on the same sentences."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from reprotune.core.atomic import write_frame, write_text
from reprotune.core.tables import agreement, markdown_table
from reprotune.tasks.ner.metrics import Entity, entities
from reprotune.tasks.ner.params import NerMeta, NerTaskParams

ERROR_KINDS = ("missed", "spurious", "wrong_type", "wrong_boundary", "wrong_type_and_boundary")
NONE = "(none)"


def _overlaps(a: Entity, b: Entity) -> bool:
    return a[1] < b[2] and b[1] < a[2]


def classify_errors(gold: set[Entity], predicted: set[Entity]) -> list[dict[str, Any]]:
    """One record per error; a predicted entity explains at most one gold error."""
    errors: list[dict[str, Any]] = []
    used: set[Entity] = set()
    unmatched_pred = sorted(predicted - gold, key=lambda e: (e[1], e[2], e[0]))
    for g in sorted(gold - predicted, key=lambda e: (e[1], e[2], e[0])):
        candidates = [p for p in unmatched_pred if p not in used and _overlaps(g, p)]
        same_span = [p for p in candidates if p[1:] == g[1:]]
        same_type = [p for p in candidates if p[0] == g[0]]
        if same_span:
            kind, match = "wrong_type", same_span[0]
        elif same_type:
            kind, match = "wrong_boundary", same_type[0]
        elif candidates:
            kind, match = "wrong_type_and_boundary", candidates[0]
        else:
            kind, match = "missed", None
        if match is not None:
            used.add(match)
        errors.append({"kind": kind, "gold": g, "pred": match})
    for p in unmatched_pred:
        if p not in used:
            errors.append({"kind": "spurious", "gold": None, "pred": p})
    return errors


def _text(tokens: list[str], entity: Entity | None) -> str:
    return "" if entity is None else " ".join(tokens[entity[1] : entity[2]])


def _label(entity: Entity | None) -> str:
    return NONE if entity is None else entity[0]


def error_table(predictions: pd.DataFrame, method: str) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, str]]]:
    """Per-sentence table, per-error table and (gold type, predicted type) pairs for one method."""
    sentence_rows, error_rows, pairs = [], [], []
    for row in predictions.itertuples(index=False):
        tokens, gold_tags, pred_tags = list(row.tokens), list(row.gold), list(row.pred)
        gold, pred = entities(gold_tags), entities(pred_tags)
        errors = classify_errors(gold, pred)
        for entity in sorted(gold & pred, key=lambda e: (e[1], e[2], e[0])):  # not set order: it follows the hash seed
            pairs.append({"actual": entity[0], "predicted": entity[0]})
        for error in errors:
            pairs.append({"actual": _label(error["gold"]), "predicted": _label(error["pred"])})
            error_rows.append(
                {
                    "method": method,
                    "id": row.id,
                    "kind": error["kind"],
                    "gold_type": _label(error["gold"]),
                    "gold_text": _text(tokens, error["gold"]),
                    "pred_type": _label(error["pred"]),
                    "pred_text": _text(tokens, error["pred"]),
                }
            )
        sentence_rows.append(
            {
                "method": method,
                "id": row.id,
                "text": " ".join(tokens),
                "gold_entities": "; ".join(f"{_text(tokens, e)} [{e[0]}]" for e in sorted(gold, key=lambda e: e[1])),
                "pred_entities": "; ".join(f"{_text(tokens, e)} [{e[0]}]" for e in sorted(pred, key=lambda e: e[1])),
                "errors": len(errors),
                "correct": len(gold & pred),
                "gold_count": len(gold),
            }
        )
    return (
        pd.DataFrame(sentence_rows),
        pd.DataFrame(error_rows, columns=["method", "id", "kind", "gold_type", "gold_text", "pred_type", "pred_text"]),
        pairs,
    )


def analyse(
    predictions: dict[str, pd.DataFrame], meta: NerMeta, params: NerTaskParams, report_dir: Path, confusion_dir: Path
) -> dict[str, Any]:
    """Error tables, confusion CSVs and summary.md for the trained methods (the baseline's
    untrained head predicts noise, so its errors would tell nothing about the data)."""
    predictions = {method: frame for method, frame in predictions.items() if method in ("full", "lora")}
    worst_n = params.error_analysis.worst_n
    sentences, errors, counts = [], [], {}
    for method, frame in predictions.items():
        per_sentence, per_error, pairs = error_table(frame, method)
        sentences.append(per_sentence)
        errors.append(per_error)
        kind_counts = Counter(per_error["kind"])
        counts[method] = {
            "by_kind": {kind: int(kind_counts.get(kind, 0)) for kind in ERROR_KINDS},
            "by_gold_type": {str(k): int(v) for k, v in Counter(per_error["gold_type"]).items() if k != NONE},
            "total": int(len(per_error)),
        }
        write_frame(confusion_dir / f"{method}.csv", pd.DataFrame(pairs, columns=["actual", "predicted"]))
    all_sentences = pd.concat(sentences, ignore_index=True)
    all_errors = pd.concat(errors, ignore_index=True)
    write_frame(report_dir / "sentences.parquet", all_sentences)
    write_frame(report_dir / "errors.csv", all_errors)

    lines = ["# NER error analysis", "", "Errors per kind (test split; strict IOB2 entities):", ""]
    by_kind = pd.DataFrame({m: c["by_kind"] for m, c in counts.items()})
    lines.append(markdown_table(by_kind.rename_axis("kind").reset_index()))
    lines += ["", "Errors per gold entity type:", ""]
    lines.append(
        markdown_table(
            pd.DataFrame({m: c["by_gold_type"] for m, c in counts.items()})
            .fillna(0)
            .astype(int)
            .rename_axis("type")
            .reset_index()
        )
    )
    for method in predictions:
        worst = (
            all_sentences[all_sentences["method"] == method]
            .sort_values(["errors", "id"], ascending=[False, True])
            .head(worst_n)
        )
        lines += ["", f"## {worst_n} worst sentences ({method})", ""]
        lines.append(markdown_table(worst[["id", "errors", "text", "gold_entities", "pred_entities"]]))
    if {"full", "lora"} <= set(predictions):
        paired = all_sentences.pivot_table(index="id", columns="method", values="errors", aggfunc="first")
        both_right, only_full, only_lora, both_wrong = agreement(paired["full"] == 0, paired["lora"] == 0)
        lines += [
            "",
            "## Full against LoRA on the same sentences",
            "",
            markdown_table(
                pd.DataFrame(
                    [
                        {
                            "both error-free": both_right,
                            "only full error-free": only_full,
                            "only LoRA error-free": only_lora,
                            "both with errors": both_wrong,
                        }
                    ]
                )
            ),
        ]
    write_text(report_dir / "summary.md", "\n".join(lines))
    return counts
