"""MLM error analysis: loss by how often a token occurs in train, the tokens whose
loss fell or rose most between two methods on the same fixed masks, and fill-mask
examples side by side.

The error-analysis stage hands over the full and LoRA predictions; a "baseline"
table is used too when one is passed (the pretrained model before adaptation), so
"before/after" comparisons appear only when it is available, and the report says
which pair every comparison is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reprotune.core.atomic import write_frame, write_text
from reprotune.core.errors import ReprotuneError
from reprotune.core.tables import markdown_table
from reprotune.tasks.mlm.metrics import perplexity
from reprotune.tasks.mlm.params import MlmMeta, MlmTaskParams

ORDER = ("baseline", "full", "lora")


def bucket_labels(edges: list[int]) -> list[str]:
    """[1, 10, 100] -> ['0', '1-9', '10-99', '100+']."""
    labels = ["0" if edges[0] == 1 else f"0-{edges[0] - 1}"]
    labels += [f"{a}-{b - 1}" if b - 1 > a else str(a) for a, b in zip(edges, edges[1:])]
    return labels + [f"{edges[-1]}+"]


def bucket_of(counts: pd.Series, edges: list[int]) -> pd.Series:
    """The train-frequency bucket of each token; 'unknown' where no count was stored."""
    labels = bucket_labels(edges)
    index = np.searchsorted(np.asarray(edges), counts.to_numpy(), side="right")
    named = pd.Series([labels[i] for i in index], index=counts.index, dtype=object)
    return named.where(counts >= 0, "unknown")


def by_bucket(frame: pd.DataFrame, method: str, edges: list[int]) -> pd.DataFrame:
    grouped = frame.assign(bucket=bucket_of(frame["train_count"], edges)).groupby("bucket", sort=False)
    table = pd.DataFrame(
        {
            "masked_tokens": grouped.size(),
            "mean_loss": grouped["loss"].mean().round(4),
            "perplexity": grouped["loss"].apply(lambda s: round(perplexity(s), 2)),
            "accuracy": grouped["correct"].mean().round(4),
        }
    ).reset_index()
    rank = {label: i for i, label in enumerate([*bucket_labels(edges), "unknown"])}
    table = table.sort_values("bucket", key=lambda s: s.map(rank)).reset_index(drop=True)
    return table.assign(method=method)[["method", "bucket", "masked_tokens", "mean_loss", "perplexity", "accuracy"]]


def paired(before: pd.DataFrame, after: pd.DataFrame, names: tuple[str, str]) -> pd.DataFrame:
    """Join two methods' rows on the same masked tokens (the masks are fixed at tokenize time)."""
    keys = ["block", "position"]
    left = before[[*keys, "label_id", "label", "train_count", "loss", "correct"]]
    right = after[[*keys, "label_id", "loss", "correct"]]
    joined = left.merge(right, on=keys, how="outer", suffixes=("_before", "_after"), indicator=True)
    if (joined["_merge"] != "both").any() or (joined["label_id_before"] != joined["label_id_after"]).any():
        raise ReprotuneError(
            f"predictions of '{names[0]}' and '{names[1]}' cover different masked tokens; "
            "re-run the evaluate stages so both score the same tokenized test data"
        )
    return joined.drop(columns=["_merge", "label_id_after"]).rename(columns={"label_id_before": "label_id"})


def token_changes(pairs: pd.DataFrame, min_count: int) -> pd.DataFrame:
    """Mean loss per gold token before and after, for tokens masked at least `min_count` times."""
    grouped = pairs.groupby("label", sort=True)
    table = pd.DataFrame(
        {
            "occurrences": grouped.size(),
            "train_count": grouped["train_count"].first(),
            "loss_before": grouped["loss_before"].mean(),
            "loss_after": grouped["loss_after"].mean(),
        }
    ).reset_index()
    table["loss_change"] = table["loss_after"] - table["loss_before"]
    table = table[table["occurrences"] >= min_count]
    return table.round({"loss_before": 4, "loss_after": 4, "loss_change": 4}).reset_index(drop=True)


def fill_mask_table(predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The one-word probes of every method side by side, keyed by block and position."""
    merged: pd.DataFrame | None = None
    for method, frame in predictions.items():
        probes = frame[frame["probe_context"] != ""][["block", "position", "probe_context", "label", "probe_fills"]]
        probes = probes.assign(**{method: [", ".join(map(str, fills)) for fills in probes["probe_fills"]]})
        probes = probes.drop(columns="probe_fills").rename(columns={"probe_context": "context", "label": "gold"})
        merged = (
            probes
            if merged is None
            else merged.merge(probes[["block", "position", method]], on=["block", "position"], how="outer")
        )
    if merged is None:
        return pd.DataFrame(columns=["block", "position", "context", "gold"])
    return merged.sort_values(["block", "position"]).reset_index(drop=True)


def comparisons(methods: list[str]) -> list[tuple[str, str]]:
    """(before, after) pairs: baseline -> each trained method when the baseline is
    available, and always LoRA -> full (loss change = full minus LoRA)."""
    pairs: list[tuple[str, str]] = [("baseline", m) for m in ("full", "lora") if "baseline" in methods and m in methods]
    if {"full", "lora"} <= set(methods):
        pairs.append(("lora", "full"))
    return pairs


def analyse(
    predictions: dict[str, pd.DataFrame], meta: MlmMeta, params: MlmTaskParams, report_dir: Path, confusion_dir: Path
) -> dict[str, Any]:
    """Write the frequency buckets, per-token changes and fill-mask probes; return the summary figures."""
    settings = params.error_analysis
    edges, worst_n, min_count = settings.frequency_edges, settings.worst_n, settings.min_token_count
    methods = [m for m in ORDER if m in predictions] + sorted(set(predictions) - set(ORDER))
    summary: dict[str, Any] = {"methods": {}, "comparisons": {}}
    buckets = []
    for method in methods:
        frame = predictions[method]
        table = by_bucket(frame, method, edges)
        buckets.append(table)
        summary["methods"][method] = {
            "perplexity": round(perplexity(frame["loss"]), 4) if len(frame) else None,
            "accuracy": round(float(frame["correct"].mean()), 6) if len(frame) else None,
            "masked_tokens": int(len(frame)),
            "by_frequency": {
                row.bucket: {
                    "perplexity": row.perplexity,
                    "accuracy": row.accuracy,
                    "masked_tokens": int(row.masked_tokens),
                }
                for row in table.itertuples(index=False)
            },
        }
        outcome = np.where(frame["correct"].to_numpy(dtype=bool), "top1 correct", "top1 wrong")
        write_frame(
            confusion_dir / f"{method}.csv",
            pd.DataFrame({"actual": bucket_of(frame["train_count"], edges).to_numpy(), "predicted": outcome}),
        )
    bucket_table = pd.concat(buckets, ignore_index=True)
    write_frame(report_dir / "frequency_buckets.csv", bucket_table)

    lines = [
        "# Masked-LM error analysis",
        "",
        "All methods are scored on the same test blocks with the same fixed masks, so every "
        "comparison below is token for token.",
        "",
    ]
    if "baseline" not in predictions:
        lines += [
            "This stage receives the full and LoRA predictions only: token-level changes compare LoRA "
            "against full fine-tuning. The baseline (pretrained model before adaptation) perplexity is in "
            "metrics/<task>/baseline.json.",
            "",
        ]
    lines += [
        "## Loss by train frequency of the gold token",
        "",
        f"Buckets count how often the token occurs in the train blocks (edges {edges}).",
        "",
        markdown_table(bucket_table),
    ]

    changes = []
    for before, after in comparisons(methods):
        pairs = paired(predictions[before], predictions[after], (before, after))
        delta = pairs["loss_after"] - pairs["loss_before"]
        name = f"{after}_vs_{before}"
        table = token_changes(pairs, min_count).assign(comparison=name)
        changes.append(table)
        summary["comparisons"][name] = {
            "mean_loss_change": round(float(delta.mean()), 6) if len(delta) else None,
            "tokens_lower_loss": int((delta < 0).sum()),
            "tokens_higher_loss": int((delta > 0).sum()),
            "newly_correct": int((~pairs["correct_before"] & pairs["correct_after"]).sum()),
            "newly_wrong": int((pairs["correct_before"] & ~pairs["correct_after"]).sum()),
        }
        shown = ["label", "occurrences", "train_count", "loss_before", "loss_after", "loss_change"]
        rose = table.sort_values(["loss_change", "label"], ascending=[False, True])
        lines += [
            f"## {after} against {before}: loss change per gold token",
            "",
            f"loss_change = mean loss with {after} minus with {before}, over tokens masked at least "
            f"{min_count} times. Per masked token: {summary['comparisons'][name]['tokens_lower_loss']} lower, "
            f"{summary['comparisons'][name]['tokens_higher_loss']} higher.",
            "",
            f"### {worst_n} tokens whose loss dropped most",
            "",
            markdown_table(table.sort_values(["loss_change", "label"]).head(worst_n)[shown]),
            "",
            f"### {worst_n} tokens whose loss rose most",
            "",
            markdown_table(rose.head(worst_n)[shown]),
            "",
        ]
    if changes:
        write_frame(report_dir / "token_loss_changes.csv", pd.concat(changes, ignore_index=True))

    fills = fill_mask_table(predictions)
    write_frame(report_dir / "fill_mask.csv", fills)
    lines += [
        "## Fill-mask on held-out text",
        "",
        "One word of a test block replaced by the mask token; the top fills of each method.",
        "",
        markdown_table(fills.drop(columns=["block", "position"])),
    ]
    write_text(report_dir / "summary.md", "\n".join(lines))
    return summary
