from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny import build_tiny_bert  # noqa: E402


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
