"""Atomic outputs: write beside the target, then rename, so a killed stage never
leaves a half-written result that `dvc commit` could cache.

Temporaries are named `.NAME.tmp-<pid>-<random>` (and `.NAME.old-<pid>` during the swap of a
directory) beside the target; .gitignore and .dvcignore ignore them, and every stage sweeps the
ones whose writer is dead when it starts (`sweep_stale`), so a SIGKILL leaves nothing behind for
long. A full disk (ENOSPC, EDQUOT) while writing becomes one line naming the target, and the
previous output is kept.

Test hook: REPROTUNE_PAUSE_BEFORE_RENAME=<seconds> sleeps right before each temporary is
renamed into place, so tests/test_faults.py can SIGKILL a quick stage inside the window where
its complete temporary exists but the target is still the old one. Never set it otherwise.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reprotune.core.errors import ReprotuneError

PAUSE_ENV = "REPROTUNE_PAUSE_BEFORE_RENAME"
"""Test hook: seconds to sleep before each rename into place (tests/test_faults.py)."""
OUTPUT_ROOTS = ("data", "models", "metrics", "reports")
"""Where stages write (paths.py); `sweep_stale` looks here, two levels deep."""
_OWNER = re.compile(r"\.(?:tmp|old)-(\d+)")
_DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


class DiskFullError(ReprotuneError):
    """The disk (or quota) ran out while writing `target`; the previous output is kept."""

    def __init__(self, reason: str, target: Path, kind: str) -> None:
        self.reason, self.target, self.kind = reason, target, kind
        super().__init__(
            f"{reason} while writing {target} (the previous {kind} is kept; free some space and run the stage again)"
        )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _owner_alive(leftover: Path) -> bool:
    """Whether the process that made this temporary still runs (never true for our own pid's
    leftovers from an earlier, reused pid: we only call this for names we did not just create)."""
    match = _OWNER.search(leftover.name)
    if not match:
        return False  # an older name without a pid: its writer is long gone
    pid = int(match.group(1))
    return pid != os.getpid() and pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(target: Path) -> None:
    """Delete temporaries a killed run left beside `target` (never the target itself, nor the
    temporaries of a writer that is still running)."""
    target = Path(target)
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for leftover in target.parent.glob(pattern):
            if not _owner_alive(leftover):
                _remove(leftover)


def sweep_stale(roots: Iterable[str | os.PathLike[str]] = OUTPUT_ROOTS) -> list[Path]:
    """Delete the temporaries of dead writers under the output folders (the roots, their
    children and grandchildren: where every stage out lives); called when a stage starts."""
    removed = []
    for root in map(Path, roots):
        for depth in ("", "*/", "*/*/"):
            for pattern in (".*.tmp-*", ".*.old-*"):
                for leftover in root.glob(depth + pattern):
                    if not _owner_alive(leftover):
                        _remove(leftover)
                        removed.append(leftover)
    return removed


def _prefix(target: Path) -> str:
    return f".{target.name}.tmp-{os.getpid()}-"


def _pause() -> None:
    seconds = os.environ.get(PAUSE_ENV)
    if seconds:
        time.sleep(float(seconds))


def _disk_full(exc: BaseException, target: Path, tmp: Path, kind: str) -> DiskFullError | None:
    """The one-line error for a full disk, naming the real target (also for a file written
    inside the temporary directory of an enclosing `atomic_dir`)."""
    if isinstance(exc, DiskFullError):
        inner, outer = Path(os.path.abspath(exc.target)), Path(os.path.abspath(tmp))
        if inner.is_relative_to(outer):
            return DiskFullError(exc.reason, target / inner.relative_to(outer), exc.kind)
        return None
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        return DiskFullError(_DISK_FULL[exc.errno], target, kind)
    return None


@contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(target), dir=target.parent))
    try:
        try:
            yield tmp
            _pause()
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            if target.exists() or target.is_symlink():
                os.replace(target, old)
            os.replace(tmp, target)
            _remove(old)
        except Exception as exc:
            full = _disk_full(exc, target, tmp, "directory")
            if full is None:
                raise
            raise full from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(target: str | os.PathLike[str], mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside `target`; rename it over `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    fd, tmp_name = tempfile.mkstemp(prefix=_prefix(target), dir=target.parent)
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            _pause()
            os.replace(tmp, target)
        except Exception as exc:
            full = _disk_full(exc, target, tmp, "file")
            if full is None:
                raise
            raise full from exc
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


def disk_full_message(exc: OSError) -> str | None:
    """One line for a full disk met outside `atomic_file` / `atomic_dir` (None for other errors)."""
    if exc.errno not in _DISK_FULL:
        return None
    where = f" while writing {exc.filename}" if exc.filename else ""
    return f"{_DISK_FULL[exc.errno]}{where}; free some space and run the stage again"
