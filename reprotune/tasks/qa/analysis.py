"""QA error analysis: EM/F1 by question word, gold-answer length, context length and
the window the answer fell into; the worst examples; full against LoRA; and a
question-word x outcome table (exact/partial/wrong) for DVC's confusion plot."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from reprotune.core.atomic import write_frame, write_text
from reprotune.core.tables import agreement, markdown_table
from reprotune.tasks.qa.metrics import gold_answers, normalize_answer, score_one
from reprotune.tasks.qa.params import QaMeta, QaTaskParams

QUESTION_WORDS = ("what", "who", "when", "where", "which", "how", "why")
OUTCOMES = ("exact", "partial", "wrong")
ANSWER_LENGTH_EDGES = (1, 2, 3, 4, 6, 11)
CONTEXT_LENGTH_EDGES = (0, 100, 150, 200, 300)
_WORD = re.compile(r"[a-z]+")


def question_word(question: str) -> str:
    """The first wh-word in the question ('In what year ...' is 'what'), else 'other'."""
    for word in _WORD.findall(question.lower()):
        if word in QUESTION_WORDS:
            return word
        if word == "whom" or word == "whose":
            return "who"
    return "other"


def bucket(value: int, edges: tuple[int, ...]) -> str:
    """'a-b' for edges[i] <= value < edges[i+1]; the last bucket is open ('300+')."""
    for low, high in zip(edges, edges[1:]):
        if low <= value < high:
            return str(low) if high - low == 1 else f"{low}-{high - 1}"
    return f"{edges[-1]}+"


def window_kind(answer_window: int, answerable: bool) -> str:
    if not answerable:
        return "unanswerable"
    if answer_window < 0:
        return "no_single_window"
    return "first_window" if answer_window == 0 else "later_window"


def outcome(em: float, f1: float) -> str:
    return "exact" if em == 1.0 else "partial" if f1 > 0 else "wrong"


def example_table(predictions: pd.DataFrame, method: str) -> pd.DataFrame:
    """One row per example: scores, outcome and the facets the report groups by."""
    rows = []
    for row in predictions.itertuples(index=False):
        golds = [str(g) for g in row.gold_texts]
        em, f1 = score_one(row.pred_text, golds)
        answerable = bool(gold_answers(golds)[0])
        rows.append(
            {
                "method": method,
                "id": row.id,
                "question": row.question,
                "gold": " | ".join(golds) if golds else "(no answer)",
                "prediction": row.pred_text if row.pred_text else "(no answer)",
                "exact_match": em,
                "f1": round(f1, 6),
                "outcome": outcome(em, f1),
                "score": row.score,
                "question_word": question_word(row.question),
                "answer_length": bucket(len(golds[0].split()), ANSWER_LENGTH_EDGES) if answerable else "unanswerable",
                "context_length": bucket(len(row.context.split()), CONTEXT_LENGTH_EDGES),
                "answer_window": window_kind(int(row.answer_window), answerable),
                "windows": int(row.windows),
            }
        )
    return pd.DataFrame(rows)


def bucket_labels(edges: tuple[int, ...]) -> list[str]:
    return [bucket(low, edges) for low in edges]


FACET_ORDER = {
    "question_word": [*QUESTION_WORDS, "other"],
    "answer_length": [*bucket_labels(ANSWER_LENGTH_EDGES), "unanswerable"],
    "context_length": bucket_labels(CONTEXT_LENGTH_EDGES),
    "answer_window": ["first_window", "later_window", "no_single_window", "unanswerable"],
}


def by_facet(examples: pd.DataFrame, facet: str) -> pd.DataFrame:
    """Examples, mean EM and mean F1 per method and facet value, in the facet's natural order."""
    grouped = examples.groupby(["method", facet], sort=True)
    table = grouped.agg(examples=("id", "size"), exact_match=("exact_match", "mean"), f1=("f1", "mean"))
    table = table.round(4).reset_index()
    rank = {value: i for i, value in enumerate(FACET_ORDER[facet])}
    return table.sort_values(
        ["method", facet], key=lambda col: col.map(rank) if col.name == facet else col, kind="stable"
    ).reset_index(drop=True)


def _wide(table: pd.DataFrame, facet: str) -> pd.DataFrame:
    """Facet values as rows, `<method> EM/F1/n` as columns, for the summary."""
    wide = table.pivot(index=facet, columns="method", values=["exact_match", "f1", "examples"])
    wide = wide.reindex([value for value in FACET_ORDER[facet] if value in wide.index])
    wide["examples"] = wide["examples"].fillna(0).astype(int)
    short = {"exact_match": "EM", "f1": "F1", "examples": "n"}
    wide.columns = [f"{method} {short[value]}" for value, method in wide.columns]
    return wide.reset_index()


def worst(examples: pd.DataFrame, method: str, count: int) -> pd.DataFrame:
    """Lowest F1 first; among equals, the most confident prediction first."""
    own = examples[examples["method"] == method].copy()
    own["_confidence"] = own["score"].fillna(float("-inf"))
    own = own.sort_values(["f1", "_confidence", "id"], ascending=[True, False, True]).head(count)
    return own[["id", "question", "gold", "prediction", "f1", "score"]].round({"score": 3})


def full_against_lora(examples: pd.DataFrame, count: int) -> tuple[dict[str, Any], pd.DataFrame]:
    paired = examples.pivot_table(index="id", columns="method", values=["exact_match", "f1"], aggfunc="first")
    full_em, lora_em = paired[("exact_match", "full")], paired[("exact_match", "lora")]
    both, only_full, only_lora, neither = agreement(full_em == 1, lora_em == 1)
    counts = {
        "both_exact": both,
        "only_full_exact": only_full,
        "only_lora_exact": only_lora,
        "neither_exact": neither,
        "mean_f1_difference_full_minus_lora": round(float((paired[("f1", "full")] - paired[("f1", "lora")]).mean()), 6),
    }
    full = examples[examples["method"] == "full"].set_index("id")
    lora = examples[examples["method"] == "lora"].set_index("id")
    gap = (full["f1"] - lora["f1"]).abs().sort_values(ascending=False, kind="stable")
    ids = [i for i in gap.index if gap[i] > 0][:count]
    disagreements = pd.DataFrame(
        {
            "id": ids,
            "question": [full.at[i, "question"] for i in ids],
            "gold": [full.at[i, "gold"] for i in ids],
            "full": [full.at[i, "prediction"] for i in ids],
            "full F1": [full.at[i, "f1"] for i in ids],
            "lora": [lora.at[i, "prediction"] for i in ids],
            "lora F1": [lora.at[i, "f1"] for i in ids],
        }
    )
    return counts, disagreements


def answering_line(method: str, predictions: pd.DataFrame) -> str:
    """How often `method` answers against the share of answerable questions, in one line, so
    a SQuAD v2 model that always abstains (or always answers) is named as such."""
    total = len(predictions)
    answered = sum(bool(normalize_answer(str(p))) for p in predictions["pred_text"])
    answerable = sum(bool(gold_answers([str(g) for g in golds])[0]) for golds in predictions["gold_texts"])
    if total == 0:
        return f"- {method}: no test questions."
    verdict = (
        "it always abstains"
        if answered == 0
        else "it always answers"
        if answered == total
        else "it answers less often than questions are answerable"
        if answered < answerable
        else "it answers more often than questions are answerable"
        if answered > answerable
        else "it answers as often as questions are answerable"
    )
    return (
        f"- {method}: answers {answered} of {total} questions ({answered / total:.1%}); "
        f"{answerable} ({answerable / total:.1%}) are answerable: {verdict}."
    )


FACETS = (
    ("question_word", "question word"),
    ("answer_length", "gold-answer length (words)"),
    ("context_length", "context length (words)"),
    ("answer_window", "window holding the gold answer"),
)


def analyse(
    predictions: dict[str, pd.DataFrame], meta: QaMeta, params: QaTaskParams, report_dir: Path, confusion_dir: Path
) -> dict[str, Any]:
    """`predictions` by method; the baseline (untrained head) appears as a reference row in
    the tables, while worst examples, confusion tables and facet figures cover the trained methods."""
    worst_n = params.error_analysis.worst_n
    examples = pd.concat([example_table(frame, method) for method, frame in predictions.items()], ignore_index=True)
    write_frame(report_dir / "examples.parquet", examples)
    trained = [method for method in predictions if method != "baseline"]
    summary: dict[str, Any] = {}
    for method in predictions:
        own = examples[examples["method"] == method]
        summary[method] = {
            "exact_match": round(float(own["exact_match"].mean()), 6) if len(own) else 0.0,
            "f1": round(float(own["f1"].mean()), 6) if len(own) else 0.0,
            "outcomes": {kind: int((own["outcome"] == kind).sum()) for kind in OUTCOMES},
        }
    for method in trained:
        own = examples[examples["method"] == method]
        confusion = own[["question_word", "outcome"]].rename(
            columns={"question_word": "actual", "outcome": "predicted"}
        )
        write_frame(confusion_dir / f"{method}.csv", confusion)

    lines = [
        "# QA error analysis",
        "",
        "Test split; EM/F1 with the official SQuAD normalisation, the best over the gold answers; "
        "outcome: exact, partial (F1 > 0) or wrong. `baseline` is the pretrained encoder with an untrained head.",
        "",
        markdown_table(
            pd.DataFrame(
                [{"method": m, "EM": s["exact_match"], "F1": s["f1"], **s["outcomes"]} for m, s in summary.items()]
            )
        ),
    ]
    if meta.version_2_with_negative:
        lines += [
            "",
            "## Answered against answerable",
            "",
            "Unanswerable questions are allowed; each model answers where its best span beats the null "
            "score by the no-answer margin (`null_threshold` in metrics/<task>/<method>.json).",
            "",
            *(answering_line(method, frame) for method, frame in predictions.items()),
        ]
        for method, frame in predictions.items():
            summary[method]["answered"] = round(
                sum(bool(normalize_answer(str(p))) for p in frame["pred_text"]) / max(len(frame), 1), 6
            )
    for facet, title in FACETS:
        table = by_facet(examples, facet)
        write_frame(report_dir / f"by_{facet}.csv", table)
        for method in trained:
            own = table[table["method"] == method]
            summary[method][f"by_{facet}"] = {
                str(r[facet]): {
                    "examples": int(r["examples"]),
                    "exact_match": float(r["exact_match"]),
                    "f1": float(r["f1"]),
                }
                for _, r in own.iterrows()
            }
        lines += ["", f"## By {title}", "", markdown_table(_wide(table, facet))]

    for method in trained:
        table = worst(examples, method, worst_n)
        lines += ["", f"## {worst_n} worst examples ({method})", "", markdown_table(table)]
        write_frame(report_dir / f"worst_{method}.csv", table)
    if {"full", "lora"} <= set(predictions):
        counts, disagreements = full_against_lora(examples, worst_n)
        summary["full_vs_lora"] = counts
        write_frame(report_dir / "full_vs_lora.csv", disagreements)
        lines += [
            "",
            "## Full against LoRA on the same questions",
            "",
            markdown_table(pd.DataFrame([counts])),
            "",
            f"Largest F1 differences (up to {worst_n}):",
            "",
            markdown_table(disagreements),
        ]
    write_text(report_dir / "summary.md", "\n".join(lines))
    return summary
