"""HTML views of predictions for people: entity spans highlighted in their text
(`reprotune-predict --html`). Not a stage dependency."""

from __future__ import annotations

import html
from typing import Any


def render_html(results: list[dict[str, Any]]) -> str:
    """NER results as HTML with highlighted entities and their types."""
    blocks = []
    for result in results:
        text, cursor, parts = result["text"], 0, []
        for entity in result.get("entities", []):
            parts.append(html.escape(text[cursor : entity["start"]]))
            parts.append(
                f'<mark title="{entity["score"]:.2f}">{html.escape(text[entity["start"] : entity["end"]])}'
                f"<sub>{html.escape(entity['type'])}</sub></mark>"
            )
            cursor = entity["end"]
        parts.append(html.escape(text[cursor:]))
        blocks.append(f"<p>{''.join(parts)}</p>")
    style = "mark{background:#ffe08a;padding:0 .2em;border-radius:.2em}sub{font-size:.7em;color:#555;margin-left:.2em}"
    return f"<!doctype html><meta charset='utf-8'><style>{style}</style>\n" + "\n".join(blocks) + "\n"
