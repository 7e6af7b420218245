"""Small dependency-free SVG charts for the comparison report: line curves and a
confusion heat map, readable in any Markdown viewer or browser."""

from __future__ import annotations

from html import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, width: int = 420, height: int = 240) -> str:
    """One polyline per series, shared axes, min/max labels."""
    points = [p for values in series.values() for p in values]
    if not points:
        return ""
    left, right, top, bottom = 48, 12, 28, 30
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="16" font-size="13">{escape(title)}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{sy(y1) + 4:.1f}" text-anchor="end">{y1:.3g}</text>',
        f'<text x="{left - 4}" y="{sy(y0) + 4:.1f}" text-anchor="end">{y0:.3g}</text>',
        f'<text x="{left}" y="{height - 12}">{x0:.3g}</text>',
        f'<text x="{width - right}" y="{height - 12}" text-anchor="end">{x1:.3g} step</text>',
    ]
    for index, (name, values) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{path}"/>')
        parts.append(
            f'<text x="{width - right - 44 * index}" y="16" text-anchor="end" fill="{colour}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def confusion_chart(pairs: list[tuple[str, str]], title: str, cell: int = 26) -> str:
    """Counts of (actual, predicted) pairs as a shaded grid, actual down, predicted across."""
    labels = sorted({label for pair in pairs for label in pair})
    if not labels:
        return ""
    counts: dict[tuple[str, str], int] = {}
    for pair in pairs:
        counts[pair] = counts.get(pair, 0) + 1
    peak = max(counts.values())
    margin = 8 + 7 * max(len(label) for label in labels)
    size = margin + cell * len(labels) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size + 24}" font-family="sans-serif" '
        f'font-size="10"><rect width="100%" height="100%" fill="white"/>',
        f'<text x="4" y="14" font-size="13">{escape(title)} (rows actual, columns predicted)</text>',
    ]
    for row, actual in enumerate(labels):
        y = 24 + margin + row * cell
        parts.append(f'<text x="{margin - 4}" y="{y + cell / 2 + 3}" text-anchor="end">{escape(actual)}</text>')
        for col, predicted in enumerate(labels):
            x = margin + col * cell
            count = counts.get((actual, predicted), 0)
            shade = int(255 - 200 * count / peak)
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="rgb({shade},{shade},255)" stroke="#ddd"/>'
            )
            if count:
                parts.append(f'<text x="{x + cell / 2}" y="{y + cell / 2 + 3}" text-anchor="middle">{count}</text>')
    for col, predicted in enumerate(labels):
        centre = margin + col * cell + cell / 2
        parts.append(f'<text transform="translate({centre},{24 + margin - 4}) rotate(-60)">{escape(predicted)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
