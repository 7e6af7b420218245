"""Where the export stage writes, and what it writes when `export.enabled` is false. A light
module: a task that ships nothing should not pay for importing torch, peft and onnx."""

from __future__ import annotations

from pathlib import Path

from reprotune.core.atomic import atomic_dir, write_json


def export_dir(task: str, method: str) -> Path:
    return Path("models") / task / f"export-{method}"


def export_metrics_file(task: str, method: str) -> Path:
    return Path("metrics") / task / f"export-{method}.json"


def skip_export(task_name: str, method: str) -> None:
    """`export.enabled: false`: the outs DVC expects, saying that nothing was exported."""
    with atomic_dir(export_dir(task_name, method)) as out:
        (out / "README.md").write_text(
            f"Not exported: tasks.{task_name}.export.enabled is false in params.yaml.\n", encoding="utf-8"
        )
    write_json(export_metrics_file(task_name, method), {"enabled": False})
