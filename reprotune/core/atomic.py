"""Atomic outputs: write beside the target, then rename, so a killed stage never
leaves a half-written result that `dvc commit` could cache."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def remove_stale(target: Path) -> None:
    """Delete temporaries a killed run left beside `target` (never the target itself)."""
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for leftover in target.parent.glob(pattern):
            _remove(leftover)


@contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists() or target.is_symlink():
            os.replace(target, old)
        os.replace(tmp, target)
        _remove(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(target: str | os.PathLike[str], mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside `target`; rename it over `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(target: str | os.PathLike[str], data: Any) -> None:
    """Write JSON atomically with sorted keys, so identical results give identical bytes."""
    with atomic_file(target) as handle:
        json.dump(data, handle, indent=2, sort_keys=True, ensure_ascii=False)
        handle.write("\n")


def write_text(target: str | os.PathLike[str], text: str) -> None:
    with atomic_file(target) as handle:
        handle.write(text)


def write_frame(target: str | os.PathLike[str], frame: Any) -> None:
    """Write a pandas DataFrame as Parquet or CSV (by suffix), atomically."""
    target = Path(target)
    with atomic_file(target, "wb") as handle:
        if target.suffix == ".parquet":
            frame.to_parquet(handle, index=False)
        else:
            handle.write(frame.to_csv(index=False).encode("utf-8"))
