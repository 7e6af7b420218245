"""MkDocs hook: add the params reference page, generated from the pydantic schema at build
time (docs/gen_params.py), so the site can never show keys the code no longer accepts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import gen_params  # noqa: E402


def on_files(files: Any, config: Any) -> Any:
    """Add reference/params.md to the site's files (not written into docs/)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, gen_params.PAGE, content=gen_params.render()))
    return files
