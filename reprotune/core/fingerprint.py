"""Content fingerprints of what a task reads from outside the repository.

DVC can only depend on paths written in dvc.yaml, but a task's data and model are
named in params.yaml (`download.path`, `download.files`, `model.name_or_path`) and
may sit outside the repo or inside an installed package. The `fingerprint` stage
hashes their content into small JSON files under data/<task>/fingerprint/ that the
download, tokenize, train and evaluate stages depend on; the file only changes when
the content does, so nothing reruns for a touched-but-unchanged file.

Only names as written in params.yaml, sizes and SHA-256 digests go in, never
absolute paths, so two machines with the same files write the same bytes. Hashes are
cached by (path, size, mtime) in .dvc/tmp so a no-op `dvc repro` stays fast.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any

from reprotune.core.assets import PACKAGE_PREFIX, is_local_ref, resolve_path, visible_files

CACHE_FILE = Path(".dvc") / "tmp" / "reprotune-fingerprints.json"
CHUNK = 1 << 20


class HashCache:
    """SHA-256 of files keyed by (absolute path, size, mtime_ns), like DVC's own state."""

    def __init__(self, path: Path = CACHE_FILE) -> None:
        self.path = path
        try:
            self.entries: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}
        self.dirty = False

    def digest(self, file: Path) -> str:
        stat = file.stat()
        key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in self.entries:
            sha = hashlib.sha256()
            with open(file, "rb") as handle:
                while block := handle.read(CHUNK):
                    sha.update(block)
            self.entries[key] = sha.hexdigest()
            self.dirty = True
        return self.entries[key]

    def save(self) -> None:
        if not self.dirty or not self.path.parent.is_dir():
            return
        # One temporary per process: queued experiments or parallel stages may save at once
        # (the last complete file wins; a cache miss only costs a re-hash).
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(json.dumps(self.entries, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:  # a cache: never fail a stage for it (e.g. a full disk)
            tmp.unlink(missing_ok=True)


def path_fingerprint(ref: str, cache: HashCache) -> dict[str, Any]:
    """Size and digest of a file, or of every visible file of a folder, under the name `ref`."""
    path = resolve_path(ref, "source")
    entry: dict[str, Any] = {"ref": ref}
    if ref.startswith(PACKAGE_PREFIX):
        package = ref[len(PACKAGE_PREFIX) :].strip("/").split("/")[0]
        entry["package"] = package
        entry["version"] = package_version(package)
    if path.is_file():
        entry.update(size=path.stat().st_size, sha256=cache.digest(path))
        return entry
    files = {file.relative_to(path).as_posix(): cache.digest(file) for file in visible_files(path)}
    entry["files"] = len(files)
    entry["sha256"] = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return entry


def package_version(module: str) -> str | None:
    """The installed distribution's version for an importable module name, if known."""
    for dist in importlib.metadata.packages_distributions().get(module, []) or [module]:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def data_fingerprint(download: dict[str, Any], cache: HashCache) -> dict[str, Any]:
    """What `download` reads: local files and folders by content, Hub datasets by id and revision."""
    if download.get("source") == "hub":
        return {key: download.get(key) for key in ("source", "dataset", "config", "revision")}
    entries: dict[str, Any] = {"source": download.get("source")}
    if download.get("path"):
        entries["path"] = path_fingerprint(str(download["path"]), cache)
    for split, ref in sorted((download.get("files") or {}).items()):
        # A split may be several files (classification concatenates them): one entry each, in order.
        if isinstance(ref, list):
            entries[f"files.{split}"] = [path_fingerprint(str(item), cache) for item in ref]
        else:
            entries[f"files.{split}"] = path_fingerprint(str(ref), cache)
    return entries


def model_fingerprint(model: dict[str, Any], cache: HashCache) -> dict[str, Any]:
    """A local or package model directory by content; a Hub model by id and revision."""
    ref = str(model.get("name_or_path", ""))
    if ref and is_local_ref(ref):
        return {"local": path_fingerprint(ref, cache)}
    return {"hub": ref, "revision": model.get("revision")}
