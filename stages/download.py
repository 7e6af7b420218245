"""download: load a task's source and save train/validation/test as Arrow (data/<task>/raw)."""

from reprotune import tasks
from reprotune.core import paths
from reprotune.core.arrow import save_dataset
from reprotune.core.cli import expect_args, run_stage
from reprotune.sources.hub import resolved_revision
from reprotune.sources.splits import check_not_empty, limit_samples, make_missing_splits


def main(args: list[str]) -> str:
    (task_name,) = expect_args(args, ["task"], "stages/download.py")
    task = tasks.load_task(task_name, "download")
    sources = tasks.sources(task.type)
    raw, report = sources.load_raw(task.download)
    raw = make_missing_splits(raw, task.download.make_splits, sources.SPLIT_GROUP_COLUMN)
    raw = limit_samples(raw, task.download.max_samples, task.download.sample_seed)
    check_not_empty(raw)
    sources.validate_raw(raw, task)
    report["examples"] = {split: len(dataset) for split, dataset in raw.items()}
    if task.download.source == "hub":
        report["hub"] = {"dataset": task.download.dataset, "config": task.download.config,
                         "revision_requested": task.download.revision, "revision_resolved": resolved_revision(task.download)}
    save_dataset(raw, paths.raw_dir(task_name), {"download_report.json": report})
    sizes = ", ".join(f"{split} {len(dataset)}" for split, dataset in raw.items())
    return f"download {task_name}: {sizes} -> {paths.raw_dir(task_name)}"


if __name__ == "__main__":
    run_stage(main)
