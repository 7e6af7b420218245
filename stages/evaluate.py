"""baseline / evaluate-full / evaluate-lora: score a method on the test split (metrics/<task>/<method>.json)."""

from reprotune import tasks
from reprotune.core import paths
from reprotune.core.cli import expect_args, run_stage
from reprotune.evaluation.evaluate import evaluate


def main(args: list[str]) -> str:
    task_name, method = expect_args(args, ["task", "baseline|full|lora"], "stages/evaluate.py")
    paths.check_method(method, paths.EVAL_METHODS)
    task = tasks.load_task(task_name, "baseline" if method == "baseline" else f"evaluate-{method}")
    metrics = evaluate(task_name, method, task)
    headline = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    return f"evaluate {task_name} {method}: {headline} -> {paths.metrics_file(task_name, method)}"


if __name__ == "__main__":
    run_stage(main)
