"""The comparison report's charts, drawn by matplotlib: validation curves over epochs, confusion
matrices, LoRA − full per metric with its interval and margin, and the search's trials.

Every chart is an SVG string that is byte-identical for the same data (the report is committed):
a fixed hash salt for element ids, no date in the metadata, text kept as text in one bundled
font (DejaVu Sans, shipped with matplotlib) so layout never depends on the fonts installed."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede any pyplot import elsewhere

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

COLOURS = {"full": "#1f77b4", "lora": "#d62728", "baseline": "#7f7f7f"}
LABELS = {"full": "full fine-tuning", "lora": "LoRA", "baseline": "baseline"}
STYLE: dict[str, Any] = {
    "svg.hashsalt": "reprotune",
    "svg.fonttype": "none",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.color": "#e5e5e5",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "path.simplify": False,
}
"""rcParams every chart is drawn under: deterministic ids, text as text, one font."""

Curve = list[tuple[float, float]]


@contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
        yield


def to_svg(figure: Figure) -> str:
    """The figure as deterministic SVG text (no date, salted ids, no trailing clock)."""
    buffer = io.StringIO()
    with _style():
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": "reprotune (matplotlib)"})
    return buffer.getvalue()


def curve_figure(series: Mapping[str, Curve], title: str, x_label: str, y_label: str) -> Figure | None:
    """One line per method (full, LoRA) with a marker at each logged point and a legend."""
    if not any(series.values()):
        return None
    with _style():
        figure = Figure(figsize=(5.2, 3.0), layout="constrained")
        axes = figure.add_subplot()
        for method, points in series.items():
            if not points:
                continue
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            axes.plot(
                xs,
                ys,
                marker="o",
                markersize=3.5,
                linewidth=1.6,
                color=COLOURS.get(method),
                label=LABELS.get(method, method),
            )
        axes.set_title(title, loc="left")
        axes.set_xlabel(x_label)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs / indexes
        axes.set_ylabel(y_label)
        axes.legend(frameon=False)
    return figure


def confusion_figure(pairs: Sequence[tuple[str, str]], title: str) -> Figure | None:
    """Counts of (actual, predicted) pairs: class names on both axes, the count in every cell."""
    labels = sorted({label for pair in pairs for label in pair})
    if not labels:
        return None
    index = {label: i for i, label in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for actual, predicted in pairs:
        counts[index[actual]][index[predicted]] += 1
    peak = max(max(row) for row in counts) or 1
    side = max(3.2, 0.42 * len(labels) + 1.8)
    with _style():
        figure = Figure(figsize=(side + 0.9, side), layout="constrained")
        axes = figure.add_subplot()
        axes.grid(False)
        image = axes.imshow(counts, cmap="Blues", vmin=0, vmax=peak)
        axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", rotation_mode="anchor")
        axes.set_yticks(range(len(labels)), labels)
        for row, values in enumerate(counts):
            for col, count in enumerate(values):
                colour = "white" if count > peak * 0.6 else "#222222" if count else "#b0b0b0"  # zeros recede
                axes.text(col, row, str(count), ha="center", va="center", fontsize=8, color=colour)
        axes.set_xlabel("predicted class")
        axes.set_ylabel("actual class")
        axes.set_title(title, loc="left")
        figure.colorbar(image, ax=axes, label="count (examples)", shrink=0.8)
    return figure


def differences_figure(significance: Mapping[str, Any], task: str) -> Figure | None:
    """LoRA − full per metric from significance.json: the difference, its interval, a line at zero
    and, where the file has one, the margin on both sides."""
    prefix = "lora_minus_full."
    metrics = sorted(
        {
            key[len(prefix) :].rsplit(".", 1)[0]
            for key in significance
            if key.startswith(prefix) and key.endswith(".difference")
        }
    )
    rows: list[tuple[str, float, float, float, float | None]] = []
    for metric in metrics:
        try:
            difference, low, high = (
                float(significance[f"{prefix}{metric}.{k}"]) for k in ("difference", "ci_low", "ci_high")
            )
        except (KeyError, TypeError, ValueError):
            continue
        margin = significance.get(f"{prefix}{metric}.margin")
        rows.append((metric, difference, low, high, float(margin) if isinstance(margin, (int, float)) else None))
    if not rows:
        return None
    level = float(significance.get("level", 0.95)) * 100
    with _style():
        figure = Figure(figsize=(5.2, 0.5 * len(rows) + 1.3), layout="constrained")
        axes = figure.add_subplot()
        axes.axvline(0, color="#444444", linewidth=1)
        margin_drawn = False
        for y, (metric, difference, low, high, margin) in enumerate(rows):
            axes.errorbar(
                [difference],
                [y],
                xerr=[[difference - low], [high - difference]],
                fmt="o",
                color="#d62728",
                capsize=4,
                markersize=5,
                linewidth=1.6,
            )
            if margin is not None:
                for x in (-margin, margin):
                    axes.plot([x, x], [y - 0.35, y + 0.35], color="#2ca02c", linestyle="--", linewidth=1.2)
                margin_drawn = True
        axes.set_yticks(range(len(rows)), [row[0] for row in rows])
        axes.set_ylim(-0.6, len(rows) - 0.4)
        axes.invert_yaxis()
        axes.set_xlabel(f"LoRA − full (metric units; > 0: LoRA higher), {level:g}% interval")
        axes.set_title(f"{task}: LoRA − full on the test split", loc="left")
        if margin_drawn:
            axes.plot([], [], color="#2ca02c", linestyle="--", label="± margin (error_analysis.margin)")
            axes.legend(frameon=False, loc="lower right", fontsize=8)
    return figure


def trials_figure(trials: Mapping[str, Sequence[Mapping[str, Any]]], metric: str, task: str) -> Figure | None:
    """The search's validation value per trial for each method; the chosen trial marked with a star,
    trials that were pruned, collapsed or failed drawn hollow."""
    if not any(trials.values()):
        return None
    with _style():
        figure = Figure(figsize=(5.2, 3.0), layout="constrained")
        axes = figure.add_subplot()
        drawn = False
        for method, rows in trials.items():
            colour = COLOURS.get(method)
            points = [(int(r["trial"]), float(r["value"]), r) for r in rows if isinstance(r.get("value"), (int, float))]
            complete = [(t, v) for t, v, r in points if r.get("state") == "complete"]
            other = [(t, v) for t, v, r in points if r.get("state") != "complete"]
            chosen = [(t, v) for t, v, r in points if r.get("chosen")]
            if complete:
                axes.plot(
                    *zip(*complete), "o", color=colour, markersize=5, label=f"{LABELS.get(method, method)} trials"
                )
            if other:
                axes.plot(
                    *zip(*other),
                    "o",
                    markerfacecolor="none",
                    color=colour,
                    markersize=5,
                    label=f"{LABELS.get(method, method)} pruned / collapsed",
                )
            if chosen:
                axes.plot(
                    *zip(*chosen),
                    "*",
                    color=colour,
                    markersize=13,
                    markeredgecolor="black",
                    label=f"{LABELS.get(method, method)} chosen",
                )
            drawn = drawn or bool(points)
        if not drawn:
            return None
        axes.set_xlabel("trial number")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(f"validation {metric}")
        axes.set_title(f"{task}: search trials", loc="left")
        axes.legend(frameon=False, fontsize=7)
    return figure
