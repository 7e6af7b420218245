"""search-full / search-lora: tune the method on validation (Optuna) with the task's search
budget, and write the chosen settings the train stage then trains (metrics/<task>/search-<method>*).

With `search.enabled: false` it writes that nothing was searched, without importing torch."""

from reprotune import tasks
from reprotune.core import paths
from reprotune.core.atomic import write_json
from reprotune.core.cli import expect_args, run_stage


def main(args: list[str]) -> str:
    task_name, method = expect_args(args, ["task", "full|lora"], "stages/search.py")
    paths.check_method(method)
    task = tasks.load_task(task_name, f"search-{method}")
    if task.search.enabled:
        from reprotune.training.search import search

        result = search(task_name, method, task)
    else:
        from reprotune.training.chosen import disabled

        result = disabled()
    write_json(paths.search_trials_file(task_name, method), result["trials"])
    write_json(paths.search_cost_file(task_name, method), result["cost"])
    write_json(paths.search_file(task_name, method), result["summary"])
    summary = result["summary"]
    if not summary["enabled"]:
        return f"search-{method} {task_name}: off (tasks.{task_name}.search.enabled); train_{method} as written"
    return (
        f"search-{method} {task_name}: {summary['trials']} trials ({summary['pruned']} pruned, "
        f"{summary['collapsed']} collapsed, {summary['failed']} failed), best {summary['metric']} "
        f"{summary['best_value']} with {summary['chosen']}"
    )


if __name__ == "__main__":
    run_stage(main)
