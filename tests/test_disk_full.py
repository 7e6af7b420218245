"""A full disk loses nothing: a stage that meets ENOSPC (or EDQUOT) while writing keeps the
previous output, leaves no temporary, and says in one `error:` line what it was writing.
The full disk is simulated: writes through `os.fdopen` (every atomic file) or `Path.write_text`
(files written inside an atomic directory) fail once a byte budget is spent."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scratch import debris
from tiny_ner import tiny_task

from reprotune.core import atomic
from reprotune.core.atomic import DiskFullError, atomic_dir, write_json, write_text
from reprotune.core.cli import run_stage

REPO = Path(__file__).resolve().parents[1]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def write_params(workdir: Path, task: dict) -> None:
    params = {"pipeline": {"tasks": {"t": task["type"]}}, "tasks": {"t": task}}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))


# Runs a stage script with a disk that fills up after FAKE_DISK_FREE bytes written through
# FAKE_DISK_WRITER ("fdopen" or "write_text").
SHIM = """
import errno, os, pathlib, runpy, sys
free = [int(os.environ["FAKE_DISK_FREE"])]
def take(data):
    allowed = data[:max(free[0], 0)]
    free[0] -= len(data)
    if free[0] < 0:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return allowed
class Filling:
    def __init__(self, handle): self._handle = handle
    def write(self, data):
        self._handle.write(take(data))
        return len(data)
    def __getattr__(self, name): return getattr(self._handle, name)
    def __enter__(self): return self
    def __exit__(self, *exc): self._handle.close()
if os.environ["FAKE_DISK_WRITER"] == "fdopen":
    real_fdopen = os.fdopen
    os.fdopen = lambda *args, **kwargs: Filling(real_fdopen(*args, **kwargs))
else:
    real_write_text = pathlib.Path.write_text
    pathlib.Path.write_text = lambda self, data, *args, **kwargs: real_write_text(self, take(data), *args, **kwargs)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_with_full_disk(workdir: Path, writer: str, free: int, script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FAKE_DISK_WRITER": writer, "FAKE_DISK_FREE": str(free)}
    return subprocess.run(
        [sys.executable, "-c", SHIM, str(REPO / "stages" / script), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and [line for line in result.stderr.splitlines() if "error" in line] == [last]
    return last


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("disk-full")
    write_params(root, tiny_task(root / "src", tiny_model_dir))
    for script in ("download.py", "tokenize_align.py"):
        result = subprocess.run(
            [sys.executable, str(REPO / "stages" / script), "t"],
            cwd=root,
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    return root


@pytest.fixture()
def workdir(prepared: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(prepared, tmp_path / "w"))


def test_download_keeps_the_previous_dataset_when_the_disk_fills(workdir: Path) -> None:
    raw = workdir / "data" / "t" / "raw"
    before = snapshot(raw)
    line = one_error_line(run_with_full_disk(workdir, "write_text", 0, "download.py", "t"))
    assert line.startswith("error: no space left on device while writing data/t/raw (the previous directory is kept")
    assert snapshot(raw) == before
    assert debris(workdir) == []


def test_tokenize_keeps_the_previous_report_when_the_disk_fills_midway(workdir: Path) -> None:
    report = workdir / "metrics" / "t" / "tokenize.json"
    before = report.read_bytes()
    line = one_error_line(run_with_full_disk(workdir, "fdopen", 40, "tokenize_align.py", "t"))
    assert line.startswith(
        "error: no space left on device while writing metrics/t/tokenize.json (the previous file is kept"
    )
    assert report.read_bytes() == before
    assert debris(workdir) == []


def filling_fdopen(free: int, code: int = errno.ENOSPC):
    real = os.fdopen

    class Filling:
        def __init__(self, handle):
            self.handle, self.left = handle, free

        def write(self, data):
            self.left -= len(data)
            if self.left < 0:
                raise OSError(code, os.strerror(code))
            return self.handle.write(data)

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    return lambda *args, **kwargs: Filling(real(*args, **kwargs))


@pytest.mark.parametrize(
    ("code", "reason"), [(errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota exceeded")]
)
def test_atomic_file_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, reason: str
) -> None:
    target = tmp_path / "full.json"
    write_json(target, {"f1": 0.5})
    monkeypatch.setattr(atomic.os, "fdopen", filling_fdopen(10, code))
    with pytest.raises(DiskFullError) as caught:
        write_json(target, {"f1": 0.75, "padding": "x" * 100})
    assert str(caught.value).startswith(f"{reason} while writing {target} (the previous file is kept")
    assert target.read_text() == '{\n  "f1": 0.5\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["full.json"]


def test_atomic_dir_names_the_file_it_was_writing_inside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report"
    target.mkdir()
    (target / "old.md").write_text("old")
    monkeypatch.setattr(atomic.os, "fdopen", filling_fdopen(0))
    with pytest.raises(DiskFullError) as caught, atomic_dir(target) as tmp:
        write_text(tmp / "summary.md", "new")
    assert str(caught.value).startswith(
        f"no space left on device while writing {target / 'summary.md'} (the previous file is kept"
    )
    assert snapshot(target) == {"old.md": b"old"}
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_atomic_dir_turns_a_library_write_error_into_one_line(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with pytest.raises(DiskFullError, match=r"^no space left on device while writing .*model \(the previous directory"):
        with atomic_dir(target):
            raise OSError(errno.ENOSPC, "No space left on device")  # as safetensors or pyarrow would
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_outside_atomic_writes_is_one_line_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)

    def main(args: list[str]) -> str:
        raise OSError(errno.ENOSPC, "No space left on device", "models/t/.checkpoints-full/checkpoint-5/optimizer.pt")

    with pytest.raises(SystemExit) as exited:
        run_stage(main, [])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "error: no space left on device while writing "
        "models/t/.checkpoints-full/checkpoint-5/optimizer.pt; free some space and "
        "run the stage again\n"
    )
