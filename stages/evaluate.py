"""evaluate: score a method (baseline, full or lora) on the test split (metrics/<task>/<method>.json)."""

from reprotune.core import paths
from reprotune.core.cli import expect_args, run_stage
from reprotune.core.params import load_task
from reprotune.evaluation.evaluate import evaluate
from reprotune.tasks import get_family


def main(args: list[str]) -> str:
    task_name, method = expect_args(args, ["task", "baseline|full|lora"], "stages/evaluate.py")
    task = load_task(task_name)
    metrics = evaluate(task_name, method, task, get_family(task.type))
    headline = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    return f"evaluate {task_name} {method}: {headline} -> {paths.metrics_file(task_name, method)}"


if __name__ == "__main__":
    run_stage(main)
