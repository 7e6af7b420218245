"""Where each stage reads and writes, in one place, so dvc.yaml and code agree."""

from __future__ import annotations

from pathlib import Path

from reprotune.core.errors import ReprotuneError

METHODS = ("full", "lora")
"""The trained methods; `baseline` is the pretrained encoder with an untrained head."""
EVAL_METHODS = ("baseline", *METHODS)


def check_method(method: str, allowed: tuple[str, ...] = METHODS) -> str:
    """`method` if it is one of `allowed`, else the one error line every command gives."""
    if method not in allowed:
        raise ReprotuneError(f"unknown method '{method}'; allowed: {', '.join(allowed)}")
    return method


COMPARISON_DIR = Path("reports") / "comparison"
TRAIN_INFO = "train_info.json"
"""What a train stage measured, saved inside the model directory."""
RUN_INFO = "reprotune.json"
"""The task, method and labels a model directory was trained for (read by predict)."""


def fingerprint_file(task: str, what: str) -> Path:
    """`data` or `model`: content digests of what the task reads from outside the repo."""
    return Path("data") / task / "fingerprint" / f"{what}.json"


def raw_dir(task: str) -> Path:
    return Path("data") / task / "raw"


def tokenized_dir(task: str) -> Path:
    return Path("data") / task / "tokenized"


def model_dir(task: str, method: str) -> Path:
    return Path("models") / task / method


def checkpoint_dir(task: str, method: str) -> Path:
    """Trainer checkpoints for `resume: true`; outside every DVC out, git-ignored."""
    return Path("models") / task / f".checkpoints-{method}"


def search_file(task: str, method: str) -> Path:
    """The search's outcome for one method: budget, trial counts, the chosen settings."""
    return Path("metrics") / task / f"search-{method}.json"


def search_trials_file(task: str, method: str) -> Path:
    """Every trial of the search, for `dvc plots` and the report's table."""
    return Path("metrics") / task / f"search-{method}" / "trials.json"


def search_cost_file(task: str, method: str) -> Path:
    return Path("metrics") / task / f"search-{method}-cost.json"


def live_dir(task: str, method: str) -> Path:
    return Path("metrics") / task / f"train-{method}"


def metrics_file(task: str, method: str) -> Path:
    return Path("metrics") / task / f"{method}.json"


def cost_file(task: str, method: str) -> Path:
    return Path("metrics") / task / f"{method}-cost.json"


def tokenize_report(task: str) -> Path:
    return Path("metrics") / task / "tokenize.json"


def predictions_file(task: str, method: str) -> Path:
    return Path("data") / task / "predictions" / f"{method}.parquet"


def confusion_dir(task: str) -> Path:
    return Path("metrics") / task / "confusion"


def error_summary_file(task: str) -> Path:
    return Path("metrics") / task / "error_summary.json"


def significance_file(task: str) -> Path:
    """Paired tests of the methods against each other (error-analysis)."""
    return Path("metrics") / task / "significance.json"


def seeds_file(task: str) -> Path:
    """Mean and spread over training seeds (`reprotune-seeds report`)."""
    return Path("metrics") / task / "seeds.json"


def report_dir(task: str) -> Path:
    return Path("reports") / task
