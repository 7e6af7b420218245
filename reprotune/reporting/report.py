"""The comparison report: for every task, baseline / full / LoRA side by side with
their costs, training curves and confusion matrices, readable in one screen."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from reprotune.core.paths import EVAL_METHODS as METHODS
from reprotune.reporting.svg import confusion_chart, line_chart

COST_ROWS = (
    ("train seconds", "train_seconds", "{:.0f}"),
    ("train samples/s", "train_samples_per_second", "{:.1f}"),
    ("peak memory MB", "peak_memory_mb", "{:.0f}"),
    ("trainable params", "trainable_params", "{:,}"),
    ("total params", "total_params", "{:,}"),
    ("shipped size MB", "shipped_bytes", None),
)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def metric_rows(metrics: dict[str, dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Top-level numbers, then the F1 of each type/class found in nested score tables."""
    keys: list[str] = []
    nested: list[tuple[str, str]] = []
    for values in metrics.values():
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in keys:
                keys.append(key)
            elif isinstance(value, dict):
                for name, scores in value.items():
                    if isinstance(scores, dict) and "f1" in scores and (key, name) not in nested:
                        nested.append((key, name))
    rows = [(key, [metrics[m].get(key) for m in METHODS]) for key in keys]
    rows += [(f"f1 {name}", [metrics[m].get(key, {}).get(name, {}).get("f1") for m in METHODS]) for key, name in nested]
    return rows


def _cell(value: Any, fmt: str | None = "{:.4f}") -> str:
    if value is None:
        return "–"
    if isinstance(value, int) and fmt == "{:.4f}":
        return str(value)
    if isinstance(value, float) and fmt == "{:.4f}":
        return f"{value:.4f}"
    return fmt.format(value) if fmt else str(value)


def _curves(metrics_dir: Path, task: str, name: str) -> dict[str, list[tuple[float, float]]]:
    series = {}
    for method in ("full", "lora"):
        path = metrics_dir / task / f"train-{method}" / "plots" / "metrics" / name
        if path.exists():
            with open(path, encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle, delimiter="\t"))
            value_key = next((k for k in rows[0] if k not in ("step", "timestamp")), None) if rows else None
            if value_key:
                series[method] = [(float(r["step"]), float(r[value_key])) for r in rows]
    return series


def build(task_types: dict[str, str], metrics_dir: Path, out_dir: Path) -> str:
    """Write comparison.md and its SVG pictures into out_dir; return the Markdown.
    `task_types` is pipeline.tasks: task name -> family, in report order."""
    tasks = list(task_types)
    lines = ["# Full fine-tuning against LoRA", "",
             "Test-split metrics computed from each method's predictions; `baseline` is the pretrained encoder",
             "with an untrained head. Curves are validation metrics per epoch and training loss per logging step.", ""]
    for task in tasks:
        metrics = {m: _read_json(metrics_dir / task / f"{m}.json") for m in METHODS}
        costs = {m: _read_json(metrics_dir / task / f"{m}-cost.json") for m in METHODS}
        lines += [f"## {task} ({task_types.get(task, '?')})", "", "| | baseline | full | LoRA |", "| --- | --- | --- | --- |"]
        for name, values in metric_rows(metrics):
            lines.append(f"| {name} | " + " | ".join(_cell(v) for v in values) + " |")
        for label, key, fmt in COST_ROWS:
            values = [costs[m].get(key) for m in METHODS]
            if key == "shipped_bytes":
                cells = [_cell(v / 2**20 if v else None, "{:.1f}") for v in values]
            else:
                cells = [_cell(v, fmt) if m != "baseline" or key == "total_params" else "–"
                         for m, v in zip(METHODS, values)]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        pictures = []
        eval_dir = metrics_dir / task / "train-full" / "plots" / "metrics" / "eval"
        eval_names = sorted(p.name for p in eval_dir.glob("*.tsv")) if eval_dir.exists() else []
        wanted = [n for n in eval_names if n not in ("runtime.tsv", "samples_per_second.tsv", "steps_per_second.tsv")]
        for name in ["loss.tsv"] + [f"eval/{n}" for n in wanted[:2]]:
            svg = line_chart(_curves(metrics_dir, task, name), f"{task}: {name.removesuffix('.tsv')}")
            if svg:
                file = f"{task}-{name.replace('/', '-').removesuffix('.tsv')}.svg"
                (out_dir / file).write_text(svg, encoding="utf-8")
                pictures.append(file)
        for method in ("full", "lora"):
            path = metrics_dir / task / "confusion" / f"{method}.csv"
            if path.exists():
                with open(path, encoding="utf-8") as handle:
                    pairs = [(row["actual"], row["predicted"]) for row in csv.DictReader(handle)]
                svg = confusion_chart(pairs, f"{task} {method}")
                if svg:
                    file = f"{task}-confusion-{method}.svg"
                    (out_dir / file).write_text(svg, encoding="utf-8")
                    pictures.append(file)
        lines += [" ".join(f"![{p}]({p})" for p in pictures), "",
                  f"Details: `reports/{task}/summary.md`; all plots: `dvc plots show`.", ""]
    markdown = "\n".join(lines)
    (out_dir / "comparison.md").write_text(markdown, encoding="utf-8")
    return markdown
