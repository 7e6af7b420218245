"""The report's account of how each method was tuned (the search stages' outcome), so a
reader can see the comparison is fair: trials, pruned and collapsed ones, the chosen
settings, the search's training time, and a warning when the budgets differ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METHODS = ("full", "lora")


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def tuning_lines(metrics_dir: Path, task: str) -> list[str]:
    """A table per method of its trials, or one line saying the recipes were used as written."""
    summaries = {m: _read(metrics_dir / task / f"search-{m}.json") for m in METHODS}
    if not any(isinstance(s, dict) for s in summaries.values()):
        return []
    if not any(isinstance(s, dict) and s.get("enabled") for s in summaries.values()):
        return [
            "**Tuning:** none; both methods train their `train_full` / `train_lora` settings as written. "
            f"A LoRA recipe that is not tuned can make LoRA look worse than it is: "
            f"`dvc exp run -S tasks.{task}.search.enabled=true` tunes both on validation with the same budget.",
            "",
        ]
    lines = ["**How each method was tuned** (on validation; the test split is never read by the search):", ""]
    lines += ["| | trials | pruned | collapsed | failed | chosen settings | best validation | search time |"]
    lines += ["| --- | --- | --- | --- | --- | --- | --- | --- |"]
    budgets, caps = {}, {}
    for method in METHODS:
        summary = summaries[method] or {}
        if not summary.get("enabled"):
            lines.append(f"| {method} | – | – | – | – | as written (search off) | – | – |")
            continue
        cost = _read(metrics_dir / task / f"search-{method}-cost.json") or {}
        budgets[method], caps[method] = summary.get("budget"), summary.get("max_epochs")
        chosen = ", ".join(f"{k} = {_value(v)}" for k, v in sorted(summary.get("chosen", {}).items())) or str(
            summary.get("chosen_from", "–")
        )
        best = summary.get("best_value")
        best_text = (
            f"{summary.get('metric')} {_value(best)} (trial {summary.get('best_trial')})" if best is not None else "–"
        )
        seconds = cost.get("search_seconds")
        minutes = f"{seconds / 60:.1f} min" if isinstance(seconds, (int, float)) else "–"
        lines.append(
            f"| {method} | {summary.get('trials')} of {summary.get('budget')} | {summary.get('pruned', 0)} | "
            f"{summary.get('collapsed', 0)} | {summary.get('failed', 0)} | {chosen} | {best_text} | {minutes} |"
        )
    lines.append("")
    if len(budgets) < len(METHODS):
        lines += ["**Warning:** only one method was searched; the comparison is not on equal effort.", ""]
    elif len(set(budgets.values())) > 1 or len(set(caps.values())) > 1:
        lines += [
            f"**Warning:** the budgets differ (trials {budgets}, epoch caps {caps}); "
            "the comparison is not on equal effort.",
            "",
        ]
    for method in METHODS:
        rows = _read(metrics_dir / task / f"search-{method}" / "trials.json") or []
        collapsed = [row for row in rows if isinstance(row, dict) and row.get("state") == "collapsed"]
        if collapsed:
            notes = "; ".join(f"trial {row.get('trial')}: {row.get('note', 'collapsed')}" for row in collapsed)
            lines += [f"{method}: collapsed trials, never chosen: {notes}.", ""]
    return lines
