"""error-analysis: compare full and LoRA (and the baseline) error by error (reports/<task>/), and
test whether their headline differences are significant and whether LoRA is good enough against
full within `error_analysis.margin` (metrics/<task>/significance.json). Copies of one text in the
test split (data/<task>/raw/clusters.json) are resampled as one cluster."""

import pandas as pd

from reprotune import tasks
from reprotune.core import paths
from reprotune.core.atomic import atomic_dir, write_json, write_text
from reprotune.core.cli import expect_args, run_stage
from reprotune.core.errors import ReprotuneError
from reprotune.evaluation.clusters import load_test_clusters
from reprotune.evaluation.paired import significance, significance_json, significance_lines, with_section


def main(args: list[str]) -> str:
    (task_name,) = expect_args(args, ["task"], "stages/error_analysis.py")
    task = tasks.load_task(task_name, "error-analysis")
    predictions = {}
    for method in paths.EVAL_METHODS:
        path = paths.predictions_file(task_name, method)
        if not path.exists():
            raise ReprotuneError(f"{path} is missing; run the evaluate stage for '{method}' first (dvc repro)")
        predictions[method] = pd.read_parquet(path)
    meta = tasks.task_meta(task_name, task.type)
    analysis = tasks.analysis(task.type)
    results = significance(predictions, meta, task, load_test_clusters(task_name))
    with atomic_dir(paths.report_dir(task_name)) as report, atomic_dir(paths.confusion_dir(task_name)) as confusion:
        summary = analysis.analyse(predictions, meta, task, report, confusion)
        summary_file = report / "summary.md"
        if summary_file.exists():
            write_text(
                summary_file, with_section(summary_file.read_text(encoding="utf-8"), significance_lines(results))
            )
    write_json(paths.error_summary_file(task_name), summary)
    write_json(paths.significance_file(task_name), significance_json(results, task))
    return f"error-analysis {task_name}: read {paths.report_dir(task_name) / 'summary.md'} first"


if __name__ == "__main__":
    run_stage(main)
