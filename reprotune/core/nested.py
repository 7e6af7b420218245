"""Nested JSON/YAML mappings as one level of dotted keys, the way `dvc metrics diff` and
`dvc exp show` name them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every leaf, nested keys joined with dots. Whatever is not a non-empty mapping is a leaf,
    kept as it is (None, a string, a boolean, an empty mapping), so a value that changed type
    shows up as changed instead of vanishing."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
