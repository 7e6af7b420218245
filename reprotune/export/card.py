"""The model card: README.md in the exported model directory, in the Hub's format (YAML
metadata between `---` lines, then Markdown). Everything in it is read from files the
pipeline wrote: the metrics JSON, meta.json, the download report, dvc.lock, and git."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reprotune import tasks

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CI_SUFFIXES = ("_ci_low", "_ci_high")
SPLIT_ORDER = ("train", "validation", "test")


@dataclass
class CardInfo:
    task: str
    method: str
    family: str
    base_model: str
    base_revision: str | None = None
    labels: list[str] = field(default_factory=list)
    limitations: dict[str, list[str]] = field(default_factory=dict)
    """e.g. {'types_missing_from_train': [...]} from meta."""
    data_source: dict[str, Any] = field(default_factory=dict)
    split_sizes: dict[str, int] = field(default_factory=dict)
    train_params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    git_revision: str | None = None
    git_dirty: bool = False
    lock_stage: str | None = None
    lock_md5: str | None = None
    artifacts: list[str] = field(default_factory=list)


# gathering --------------------------------------------------------------------------
def git_revision(root: Path) -> tuple[str | None, bool]:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, False
    return rev or None, bool(dirty)


def lock_stage(root: Path, stage: str) -> dict[str, Any]:
    lock = root / "dvc.lock"
    if not lock.is_file():
        return {}
    data = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    return (data.get("stages") or {}).get(stage) or {}


def _section(stage: dict[str, Any], key: str) -> dict[str, Any]:
    params = (stage.get("params") or {}).get("params.yaml") or {}
    value = params.get(key)
    return value if isinstance(value, dict) else {}


def _out_md5(stage: dict[str, Any], path: str) -> str | None:
    for out in stage.get("outs") or []:
        if out.get("path") == path:
            return out.get("md5")
    return None


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def gather(
    task: str,
    method: str,
    family: str,
    model: Any,
    meta: dict[str, Any],
    export: dict[str, Any],
    root: Path = Path("."),
    artifacts: list[str] | None = None,
) -> CardInfo:
    """Read what the card says from the pipeline's files under `root`."""
    from reprotune.core import paths

    train = lock_stage(root, f"train-{method}@{task}")
    download = lock_stage(root, f"download@{task}")
    report = _read_json(root / paths.raw_dir(task) / "download_report.json")
    source = _section(download, f"tasks.{task}.download") or {
        k: report[k] for k in ("source", "dataset", "config", "path") if k in report
    }
    revision, dirty = git_revision(root)
    limitations = {k: list(v) for k, v in meta.items() if k.endswith("_missing_from_train") and v}
    return CardInfo(
        task=task,
        method=method,
        family=family,
        base_model=model.name_or_path,
        base_revision=getattr(model, "revision", None),
        labels=list(meta.get("labels") or []),
        limitations=limitations,
        data_source={k: v for k, v in source.items() if v not in (None, {}, [])},
        split_sizes=dict(report.get("examples") or {}),
        train_params=_section(train, f"tasks.{task}.train_{method}"),
        metrics=_read_json(root / paths.metrics_file(task, method)),
        export=export,
        git_revision=revision,
        git_dirty=dirty,
        lock_stage=f"train-{method}@{task}" if train else None,
        lock_md5=_out_md5(train, paths.model_dir(task, method).as_posix()),
        artifacts=list(artifacts or []),
    )


# rendering --------------------------------------------------------------------------
def headline_metrics(metrics: dict[str, Any]) -> dict[str, tuple[float, float | None, float | None]]:
    """Top-level numbers (not counts, not interval bounds) with their interval where present."""
    out = {}
    for key, value in metrics.items():
        if key.endswith(CI_SUFFIXES) or isinstance(value, bool) or not isinstance(value, float):
            continue
        low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
        out[key] = (
            value,
            low if isinstance(low, (int, float)) else None,
            high if isinstance(high, (int, float)) else None,
        )
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value, ensure_ascii=False)}`"
    return str(value)


def _dataset_name(info: CardInfo) -> str:
    return str(info.data_source.get("dataset") or info.data_source.get("path") or info.task)


def metadata(info: CardInfo) -> dict[str, Any]:
    headline = headline_metrics(info.metrics)
    data: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": tasks.facts(info.family).PIPELINE_TAG}
    if HUB_ID.match(info.base_model):
        data["base_model"] = info.base_model
    if info.data_source.get("source") == "hub" and info.data_source.get("dataset"):
        data["datasets"] = [info.data_source["dataset"]]
    data["tags"] = [
        "reprotune",
        info.family,
        info.method,
        *(["peft-merged"] if info.method == "lora" else []),
        *(["onnx"] if "onnx" in info.artifacts else []),
    ]
    data["metrics"] = sorted(headline)
    results = [{"type": key, "value": value, "name": f"test {key}"} for key, (value, _, _) in sorted(headline.items())]
    data["model-index"] = [
        {
            "name": f"{info.task}-{info.method}",
            "results": [
                {
                    "task": {"type": tasks.facts(info.family).PIPELINE_TAG, "name": tasks.facts(info.family).TASK_NAME},
                    "dataset": {"name": _dataset_name(info), "type": _dataset_name(info), "split": "test"},
                    "metrics": results,
                }
            ],
        }
    ]
    return {k: v for k, v in data.items() if v not in (None, [], {})}


def render(info: CardInfo) -> str:
    meta_yaml = yaml.safe_dump(metadata(info), sort_keys=False, allow_unicode=True)
    lines = ["---", meta_yaml.rstrip(), "---", "", f"# {info.task} ({info.method})", ""]
    method = (
        "LoRA, merged into the base weights (a plain transformers checkpoint)"
        if info.method == "lora"
        else "full fine-tuning"
    )
    lines += [
        f"{tasks.facts(info.family).TASK_NAME} model fine-tuned from `{info.base_model}`"
        f"{f' (revision `{info.base_revision}`)' if info.base_revision else ''} by {method}, "
        "with the reprotune DVC pipeline.",
        "",
        "## Model",
        "",
        f"- Base model: `{info.base_model}`",
        f"- Task: {info.family} (`{tasks.facts(info.family).PIPELINE_TAG}`)",
        f"- Method: {info.method}",
    ]
    if info.labels:
        lines.append(f"- Labels ({len(info.labels)}): {', '.join(f'`{label}`' for label in info.labels)}")
    lines += ["", "## Data", ""]
    if info.data_source:
        lines += [f"- {key}: `{value}`" for key, value in info.data_source.items() if not isinstance(value, dict)]
        nested = {k: v for k, v in info.data_source.items() if isinstance(v, dict)}
        lines += [f"- {key}: {_fmt(value)}" for key, value in nested.items()]
    else:
        lines.append("- Source: not recorded (no dvc.lock entry for the download stage)")
    if info.split_sizes:
        lines += ["", "| split | examples |", "| --- | ---: |"]
        order = sorted(info.split_sizes, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 9, s))
        lines += [f"| {split} | {info.split_sizes[split]} |" for split in order]
    lines += ["", "## Training parameters", ""]
    if info.train_params:
        lines += ["| param | value |", "| --- | --- |"]
        lines += [f"| {key} | {_fmt(value)} |" for key, value in sorted(info.train_params.items())]
        lines += ["", "Unlisted parameters took reprotune's defaults."]
    else:
        lines.append("Not recorded: dvc.lock has no entry for the training stage.")
    lines += ["", "## Test results", ""]
    headline = headline_metrics(info.metrics)
    if headline:
        lines += ["| metric | value | 95% interval |", "| --- | ---: | --- |"]
        for key, (value, low, high) in sorted(headline.items()):
            interval = f"[{low:.4f}, {high:.4f}]" if low is not None and high is not None else "-"
            lines.append(f"| {key} | {value:.4f} | {interval} |")
        for key, value in info.metrics.items():
            if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
                columns = sorted({c for v in value.values() for c in v})
                lines += ["", f"{key}:", "", f"| | {' | '.join(columns)} |", f"| --- |{' ---: |' * len(columns)}"]
                lines += [
                    f"| {name} | {' | '.join(_fmt(row.get(c, '')) for c in columns)} |"
                    for name, row in sorted(value.items())
                ]
    else:
        lines.append("No test metrics found (run the evaluate stage).")
    if info.export:
        lines += ["", "## Export", "", "```json", json.dumps(info.export, indent=2, sort_keys=True), "```"]
    lines += ["", "## Provenance", ""]
    rev = info.git_revision or "unknown"
    lines.append(f"- Git revision: `{rev}`{' (with uncommitted changes)' if info.git_dirty else ''}")
    if info.lock_stage:
        lines.append(f"- Made by DVC stage `{info.lock_stage}`; dvc.lock md5 of its output: `{info.lock_md5}`")
    lines += [
        "",
        "## Intended use",
        "",
        f"{tasks.facts(info.family).TASK_NAME} on text like the training data "
        f"(`{_dataset_name(info)}`). Check the test results above on your own data before relying on it.",
        "",
        "## Limitations",
        "",
        f"- Trained on {info.split_sizes.get('train', 'an unknown number of')} examples; "
        "the intervals above show how uncertain the test figures are.",
    ]
    for key, missing in info.limitations.items():
        kind = key.removesuffix("_missing_from_train").replace("_", " ")
        lines.append(
            f"- {kind.capitalize()} missing from train, so the model cannot have learned them: "
            f"{', '.join(f'`{m}`' for m in missing)}"
        )
    lines.append("- Inherits the biases and the language coverage of the base model and the data.")
    lines += [
        "",
        "## How to use",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'model = pipeline("{tasks.facts(info.family).PIPELINE_TAG}", model="path/to/this/folder")',
        "```",
    ]
    if "onnx" in info.artifacts:
        lines += [
            "",
            "ONNX (onnxruntime, CPU): `onnx/model.onnx`"
            + (", int8: `onnx/model_int8.onnx`" if "int8" in info.artifacts else "")
            + "; or `reprotune-predict <task> --method <method> --format onnx`.",
        ]
    return "\n".join(lines) + "\n"


def split_card(text: str) -> tuple[dict[str, Any], str]:
    """(YAML metadata, Markdown body) of a card; for tests and the Hub push."""
    if not text.startswith("---\n"):
        return {}, text
    head, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(head) or {}, body
