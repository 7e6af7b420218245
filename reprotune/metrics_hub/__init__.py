"""The pipeline's metrics as local Hugging Face `evaluate` modules, for scoring your own
predictions in a notebook and getting the numbers the pipeline reports (no Hub needed)::

    import evaluate
    from reprotune.metrics_hub import module_path

    seqeval_like = evaluate.load(module_path("ner"))
    seqeval_like.compute(predictions=[["B-PER", "O"]], references=[["B-PER", "O"]])

Each family's module (`<family>/<family>.py`) calls that family's `metrics.score` and adds the
same bootstrap intervals as metrics/<task>/<method>.json (`resamples=1000, seed=0, level=0.95`
unless given to `compute`). Nothing here is imported by a pipeline stage, so no stage depends
on it. It needs the `evaluate` library (`pip install evaluate`), which the pipeline does not.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
FAMILIES = tuple(sorted(path.parent.name for path in HERE.glob("*/*.py") if path.stem == path.parent.name))
"""The families with a module here (`<family>/<family>.py`): an optional extra per family."""


def module_path(family: str) -> str:
    """The folder to hand to `evaluate.load` for one family's metric."""
    if family not in FAMILIES:
        raise ValueError(f"no metric module for family {family!r}; there are: {', '.join(FAMILIES)}")
    return str(HERE / family)
