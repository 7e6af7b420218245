"""The compare stage: the Markdown report with SVG pictures."""
