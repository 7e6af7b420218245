"""MkDocs hook: add the generated pages, so the site can never drift from their sources:
the params reference from the pydantic schema (docs/gen_params.py), and the home page from
README.md (its links into docs/ made site-relative)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import gen_params  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"


def home_page() -> str:
    """README.md with `docs/...` links pointing inside the site (`docs/` itself is the home page)."""
    text = README.read_text(encoding="utf-8")
    return text.replace("](docs/)", "](index.md)").replace("](docs/", "](")


def on_files(files: Any, config: Any) -> Any:
    """Add reference/params.md and index.md to the site's files (not written into docs/)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, gen_params.PAGE, content=gen_params.render()))
    files.append(File.generated(config, "index.md", content=home_page()))
    return files
