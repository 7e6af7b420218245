"""Shared fixtures, and how the suite runs in parallel (pytest-xdist, `-n auto --dist loadgroup`
in pyproject.toml; `-n 0` runs it in one process).

- Tests that use a shared reproduced project (`reproduced`, `scratch_reproduced`) are marked
  `slow` and grouped onto one worker per project: the project is built once, and the tests that
  change it (in place, in file order) run one after another as they do without xdist.
- Tests that use a module-scoped fixture run on one worker per module, which builds it once.
- Tests marked `serial` measure time (latency, throughput): they run last, and while one runs the
  other workers wait, so no other test shares the CPU with it.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Generator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Every dvc command otherwise starts a `dvc daemon analytics` process (an interpreter that imports
# dvc, about a second of CPU) to report usage; the suite runs a few hundred dvc commands.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
if "PYTEST_XDIST_WORKER" in os.environ:
    # One torch thread per worker (and per stage it starts, which inherits this) before torch is
    # imported: N workers on N cores, each with N threads, would oversubscribe every core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from tiny import build_tiny_bert  # noqa: E402

SHARED_PROJECTS = {"reproduced": "reproduced", "scratch_reproduced": "scratch"}
"""Session fixture -> xdist group of the tests that use it (one worker builds and changes it)."""
SLOW_FIXTURES = {*SHARED_PROJECTS, "smoke_result"}
"""Fixtures that run the pipeline or the bench end to end: their tests are `slow`."""
GROUPS_FILE = "xdist-groups.json"
"""{nodeid: group} from the workers' collection, read by the controller's scheduler."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        if any(name in SLOW_FIXTURES for name in names):
            item.add_marker(pytest.mark.slow)
        group = next((SHARED_PROJECTS[name] for name in names if name in SHARED_PROJECTS), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
        elif item.get_closest_marker("xdist_group") is None and _uses_a_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    items.sort(key=lambda item: item.get_closest_marker("serial") is not None)  # stable: serial ones last


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """On a worker: write each grouped test's group for the scheduler, before xdist's own
    hook reports the collection (the controller may read the file as soon as it has every
    worker's report). (xdist's own loadgroup renames node ids, which pytest 9.2 ignores:
    pytest-xdist issue #1386.)"""
    config = session.config
    if not hasattr(config, "workerinput"):
        return
    groups = {}
    for item in session.items:
        mark = item.get_closest_marker("xdist_group")
        if mark is not None:
            groups[item.nodeid] = str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    target = Path(config.option.basetemp).parent / GROUPS_FILE
    temporary = target.with_name(f"{GROUPS_FILE}.{config.workerinput['workerid']}")
    temporary.write_text(json.dumps(groups, sort_keys=True))
    os.replace(temporary, target)  # every worker writes the same map; none reads a half-written one


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`--dist loadgroup` by the groups the workers wrote: each group is one unit of work, the
    largest first, on whichever worker is free (xdist's LoadScopeScheduling)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # first called once every worker has collected
                path = config._tmp_path_factory.getbasetemp() / GROUPS_FILE  # type: ignore[attr-defined]
                self.groups = json.loads(path.read_text())
            return self.groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)


def _uses_a_module_fixture(item: pytest.Item) -> bool:
    """Whether the test requests a module-scoped fixture (built once per worker that runs it)."""
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(
        definitions[-1].scope == "module" for definitions in info.name2fixturedefs.values() if definitions
    )


class _RunLock:
    """One lock file for all workers of a run: each test holds it shared, a `serial` test
    exclusive (and keeps it through the serial tests that follow it on the same worker)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.mode: int | None = None

    def hold(self, mode: int) -> None:
        if self.mode != mode:
            self.release()
            fcntl.flock(self.fd, mode)
            self.mode = mode

    def release(self) -> None:
        if self.mode is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.mode = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """Setup (session fixtures included), call and teardown under the run lock, on xdist workers."""
    if not hasattr(item.config, "workerinput"):
        return (yield)
    lock = getattr(item.config, "_reprotune_run_lock", None)
    if lock is None:
        lock = _RunLock(Path(item.config.option.basetemp).parent / "serial.lock")
        item.config._reprotune_run_lock = lock  # type: ignore[attr-defined]
    serial = item.get_closest_marker("serial") is not None
    lock.hold(fcntl.LOCK_EX if serial else fcntl.LOCK_SH)
    try:
        return (yield)
    finally:
        if not (serial and nextitem is not None and nextitem.get_closest_marker("serial") is not None):
            lock.release()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny head-less BERT encoder saved to disk, shared by the whole session."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The tiny profile reproduced once (`dvc repro`) in a temporary copy of the repo, with
    bytecode writing on and every stage recording what it imported (`audit/`)."""
    import yaml
    from e2e import run, stage_env, tiny_profile
    from tiny import build_tiny_bert, copy_repo, git

    root = tmp_path_factory.mktemp("e2e")
    repo = copy_repo(root / "repo")
    profile = tiny_profile(root, build_tiny_bert(root / "tiny-model"))
    (repo / "params.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    git(repo, "commit", "-qam", "tiny profile")
    run(repo, "dvc", "repro", env=stage_env(root / "audit"))
    return repo, profile


@pytest.fixture(scope="session")
def scratch_reproduced(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, dict]:
    """The one-task scratch project (tests/scratch.py), reproduced once for the session, with
    the uninterrupted run's metrics; tests that change it work on a copy."""
    from scratch import metrics_snapshot, scratch_repo

    repo = scratch_repo(tmp_path_factory.mktemp("scratch"), tiny_model_dir)
    return repo, metrics_snapshot(repo)
