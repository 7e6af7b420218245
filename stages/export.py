"""export: ship a trained method (models/<task>/export-<method>/ and metrics/<task>/export-<method>.json):
LoRA merged into the base, ONNX and int8 files checked against PyTorch, size and CPU
latency, a Hub model card; the Hub push only when export.push_to_hub names a repo."""

from reprotune import tasks
from reprotune.core import paths
from reprotune.core.cli import expect_args, quiet_libraries, run_stage
from reprotune.export.outputs import export_dir, export_metrics_file, skip_export


def main(args: list[str]) -> str:
    task_name, method = expect_args(args, ["task", "full|lora"], "stages/export.py")
    paths.check_method(method)
    task = tasks.load_task(task_name, f"export-{method}")
    if not task.export.enabled:
        skip_export(task_name, method)
        return f"export {task_name} {method}: skipped (tasks.{task_name}.export.enabled is false)"
    quiet_libraries()
    from reprotune.export.build import run_export  # torch, peft, onnx: only when something ships

    metrics = run_export(task_name, method, task)
    latency = metrics["latency"]
    headline = ", ".join(f"{name} p50 {t['p50_ms']:.1f} ms" for name, t in latency.items())
    return (
        f"export {task_name} {method}: {headline} -> {export_dir(task_name, method)}, "
        f"{export_metrics_file(task_name, method)}"
    )


if __name__ == "__main__":
    run_stage(main, libraries=False)  # configured above, once we know the stage exports
