"""Markdown tables and number wording for the reports a person reads first (no tabulate dependency)."""

from __future__ import annotations

import pandas as pd


def markdown_table(frame: pd.DataFrame) -> str:
    """A plain Markdown table; pipes are escaped and line breaks flattened."""
    if frame.empty:
        return "_none_\n"
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = [
        "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body]) + "\n"


def signed(value: float) -> str:
    """+0.018 / −0.012 (a real minus sign), as differences are written in the reports."""
    return f"{value:+.3f}".replace("-", "\u2212")


def p_text(p_value: float) -> str:
    """A p-value worded for a sentence: more digits near the thresholds."""
    if p_value < 0.001:
        return "p < 0.001"
    return f"p = {p_value:.3f}" if p_value < 0.1 else f"p = {p_value:.2f}"


def agreement(full_ok: pd.Series, lora_ok: pd.Series) -> tuple[int, int, int, int]:
    """On the same examples (aligned), how many each method got right: (both, only full,
    only LoRA, neither). Each family names the counts in its own terms (right, exact,
    error-free)."""
    full, lora = full_ok.astype(bool), lora_ok.astype(bool)
    return (
        int((full & lora).sum()),
        int((full & ~lora).sum()),
        int((~full & lora).sum()),
        int((~full & ~lora).sum()),
    )
