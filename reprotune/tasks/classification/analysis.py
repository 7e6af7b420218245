"""Classification error analysis: confusion matrices (and DVC confusion plots), the
most confident mistakes, accuracy by input length, and full against LoRA on the
same examples; summary.md is the page a person reads first."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reprotune.core.atomic import write_frame, write_text
from reprotune.core.tables import agreement, markdown_table
from reprotune.tasks.classification.metrics import headline_scores, per_class_scores
from reprotune.tasks.classification.params import ClassificationMeta, ClassificationTaskParams

TEXT_PREVIEW = 160


def shown_text(row: Any) -> str:
    """The input as one line (a pair joined by ' ||| '), shortened for Markdown tables."""
    text = str(row["text"])
    pair = row.get("text_pair") if hasattr(row, "get") else None
    if pair is not None and pair == pair:
        text = f"{text} ||| {pair}"
    text = " ".join(text.split())
    return text if len(text) <= TEXT_PREVIEW else text[: TEXT_PREVIEW - 1] + "…"


def confusion_matrix(frame: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Counts with actual labels as rows and predicted labels as columns, in label order."""
    table = pd.crosstab(
        pd.Categorical(frame["gold"], categories=labels), pd.Categorical(frame["pred"], categories=labels), dropna=False
    )
    table.index.name, table.columns.name = "actual", None
    return table.reindex(index=labels, columns=labels, fill_value=0).astype(int)


def top_confusions(matrix: pd.DataFrame, count: int = 5) -> list[dict[str, Any]]:
    pairs = [
        {"actual": a, "predicted": p, "count": int(matrix.loc[a, p])}
        for a in matrix.index
        for p in matrix.columns
        if a != p and matrix.loc[a, p] > 0
    ]
    return sorted(pairs, key=lambda item: (-item["count"], item["actual"], item["predicted"]))[:count]


def word_counts(frame: pd.DataFrame) -> pd.Series:
    words = frame["text"].astype(str).str.split().str.len()
    if "text_pair" in frame:
        words = words + frame["text_pair"].fillna("").astype(str).str.split().str.len()
    return words.astype(int)


def length_buckets(words: pd.Series, buckets: int | Sequence[int]) -> pd.Series:
    """Bucket names by word count: N (about) equal-count buckets, or explicit edges
    [a, b] -> '0-(a-1)', 'a-(b-1)', 'b+'."""
    if isinstance(buckets, int):
        edges = sorted({int(q) for q in words.quantile([i / buckets for i in range(1, buckets)]).round()})
        edges = [e for e in edges if e > int(words.min())]
    else:
        edges = list(buckets)
    bounds = [0, *edges, None]
    names = [f"{low}+" if high is None else f"{low}-{high - 1}" for low, high in zip(bounds, bounds[1:])]
    return words.map(lambda count: names[sum(count >= edge for edge in edges)])


def accuracy_by_length(predictions: dict[str, pd.DataFrame], buckets: int | Sequence[int]) -> pd.DataFrame:
    """Accuracy per word-count bucket, each method scored on the same examples."""
    first = next(iter(predictions.values()))
    words = word_counts(first)
    bucket = length_buckets(words, buckets)
    table = pd.DataFrame({"id": first["id"], "bucket": bucket, "words": words})
    for method, frame in predictions.items():
        correct = frame.set_index("id")["gold"] == frame.set_index("id")["pred"]
        table[method] = table["id"].map(correct).astype(float)
    grouped = table.groupby("bucket", sort=False)
    out = grouped.agg(examples=("id", "size"), min_words=("words", "min"))
    for method in predictions:
        out[f"{method}_accuracy"] = grouped[method].mean().round(4)
    return out.sort_values("min_words").drop(columns="min_words").reset_index()


def confident_mistakes(frame: pd.DataFrame, count: int) -> pd.DataFrame:
    wrong = frame[frame["gold"] != frame["pred"]].sort_values(["confidence", "id"], ascending=[False, True])
    return wrong.head(count)


def full_against_lora(full: pd.DataFrame, lora: pd.DataFrame) -> tuple[dict[str, int], pd.DataFrame]:
    """Counts of who was right on the same examples, and the examples where they disagree."""
    paired = full.merge(lora[["id", "pred", "confidence"]], on="id", suffixes=("_full", "_lora"))
    full_right = paired["pred_full"] == paired["gold"]
    lora_right = paired["pred_lora"] == paired["gold"]
    disagree = paired["pred_full"] != paired["pred_lora"]
    both, only_full, only_lora, neither = agreement(full_right, lora_right)
    counts = {
        "examples": int(len(paired)),
        "both_right": both,
        "only_full_right": only_full,
        "only_lora_right": only_lora,
        "both_wrong": neither,
        "disagree": int(disagree.sum()),
        "both_wrong_same_label": int((~full_right & ~lora_right & ~disagree).sum()),
    }
    who = pd.Series("neither", index=paired.index).mask(full_right, "full").mask(lora_right, "lora")
    columns = [
        "id",
        "text",
        *(["text_pair"] if "text_pair" in paired else []),
        "gold",
        "pred_full",
        "confidence_full",
        "pred_lora",
        "confidence_lora",
    ]
    table = paired.loc[disagree, columns].assign(right=who[disagree]).sort_values("id")
    return counts, table


def _scores_table(predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for method, frame in predictions.items():
        scores = headline_scores(list(frame["gold"]), list(frame["pred"]))
        rows.append(
            {"method": method, "examples": len(frame), **scores, "errors": int((frame["gold"] != frame["pred"]).sum())}
        )
    return pd.DataFrame(rows)


def _per_class_table(predictions: dict[str, pd.DataFrame], labels: list[str]) -> pd.DataFrame:
    rows: dict[str, dict[str, Any]] = {label: {"label": label} for label in labels}
    for method, frame in predictions.items():
        for label, scores in per_class_scores(list(frame["gold"]), list(frame["pred"]), labels).items():
            rows[label]["support"] = scores["support"]
            for key in ("precision", "recall", "f1"):
                rows[label][f"{method}_{key}"] = round(scores[key], 4)
    return pd.DataFrame(list(rows.values()))


def _preview(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    shown = frame.copy()
    shown["text"] = [shown_text(row) for row in frame.to_dict("records")]
    return shown[columns]


def analyse(
    predictions: dict[str, pd.DataFrame],
    meta: ClassificationMeta,
    params: ClassificationTaskParams,
    report_dir: Path,
    confusion_dir: Path,
) -> dict[str, Any]:
    settings = params.error_analysis
    return write_analysis(
        predictions, meta.labels, settings.worst_n, settings.length_buckets, report_dir, confusion_dir
    )


def write_analysis(
    predictions: dict[str, pd.DataFrame],
    labels: list[str],
    worst_n: int,
    buckets: int | Sequence[int],
    report_dir: Path,
    confusion_dir: Path,
) -> dict[str, Any]:
    """Scores and confusion matrices for every method (baseline included); per-class,
    length and mistake tables for the trained methods, whose errors are worth reading."""
    trained = {m: f for m, f in predictions.items() if m != "baseline"} or predictions
    scores = _scores_table(predictions)
    per_class = _per_class_table(trained, labels)
    by_length = accuracy_by_length(trained, buckets)
    summary: dict[str, Any] = {"labels": labels, "methods": {}, "accuracy_by_length": by_length.to_dict("records")}
    lines = [
        f"# Classification error analysis ({len(labels)} classes, "
        f"{len(next(iter(predictions.values())))} test examples)",
        "",
        "Test-split scores; `baseline` is the pretrained encoder with an untrained head.",
        "",
        markdown_table(scores),
    ]

    for method, frame in predictions.items():
        matrix = confusion_matrix(frame, labels)
        write_frame(
            confusion_dir / f"{method}.csv",
            frame[["gold", "pred"]].rename(columns={"gold": "actual", "pred": "predicted"}),
        )
        write_frame(report_dir / f"confusion_matrix_{method}.csv", matrix.reset_index())
        row = scores[scores["method"] == method].iloc[0]
        summary["methods"][method] = {
            **{key: float(row[key]) for key in ("accuracy", "macro_f1", "mcc")},
            "errors": int(row["errors"]),
            "top_confusions": top_confusions(matrix),
        }

    if {"full", "lora"} <= set(predictions):
        counts, disagreements = full_against_lora(predictions["full"], predictions["lora"])
        summary["full_vs_lora"] = counts
        write_frame(report_dir / "disagreements.csv", disagreements)
        right = disagreements["right"].value_counts()
        lines += [
            "## Full against LoRA on the same examples",
            "",
            markdown_table(pd.DataFrame([{k: v for k, v in counts.items() if k != "examples"}])),
            f"They predict different labels on {counts['disagree']} examples: full is right on "
            f"{int(right.get('full', 0))}, LoRA on {int(right.get('lora', 0))}, neither on "
            f"{int(right.get('neither', 0))} (all of them in disagreements.csv).",
            "",
        ]
        if not disagreements.empty:
            lines += [
                f"First {min(worst_n, len(disagreements))} disagreements:",
                "",
                markdown_table(
                    _preview(disagreements.head(worst_n), ["id", "gold", "pred_full", "pred_lora", "right", "text"])
                ),
            ]

    lines += ["## Per class", "", markdown_table(per_class)]
    lines += ["## Accuracy by input length (words)", "", markdown_table(by_length)]
    for method, frame in trained.items():
        lines += [
            f"## Confusion matrix ({method}; rows actual, columns predicted)",
            "",
            markdown_table(confusion_matrix(frame, labels).reset_index()),
        ]
        worst = confident_mistakes(frame, worst_n)
        lines += [
            f"## {len(worst)} most confident mistakes ({method})",
            "",
            markdown_table(_preview(worst, ["id", "gold", "pred", "confidence", "text"])),
        ]

    mistakes = pd.concat([f[f["gold"] != f["pred"]].assign(method=m) for m, f in trained.items()], ignore_index=True)
    keep = ["method", "id", "gold", "pred", "confidence", "text", *(["text_pair"] if "text_pair" in mistakes else [])]
    write_frame(
        report_dir / "mistakes.csv", mistakes[keep].sort_values(["method", "confidence"], ascending=[True, False])
    )
    write_frame(report_dir / "per_class.csv", per_class)
    write_frame(report_dir / "accuracy_by_length.csv", by_length)
    write_text(report_dir / "summary.md", "\n".join(lines))
    return summary
