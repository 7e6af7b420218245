"""download: load a task's source and save train/validation/test as Arrow (data/<task>/raw)."""

from reprotune import tasks
from reprotune.core import paths
from reprotune.core.arrow import save_dataset
from reprotune.core.cli import expect_args, run_stage
from reprotune.sources.hub import resolved_revision
from reprotune.sources.overlap import overlap_report, split_clusters
from reprotune.sources.splits import carve_missing_splits, check_not_empty, limit_samples


def main(args: list[str]) -> str:
    (task_name,) = expect_args(args, ["task"], "stages/download.py")
    task = tasks.load_task(task_name, "download")
    sources = tasks.sources(task.type)
    raw, report = sources.load_raw(task.download)
    near = task.download.near_duplicates
    raw, carving = carve_missing_splits(
        raw, task.download.make_splits, sources.SPLIT_GROUP_COLUMN, sources.TEXT_FIELDS, task.download.duplicates, near
    )
    before_limits = raw
    raw = limit_samples(raw, task.download.max_samples, task.download.sample_seed)
    check_not_empty(raw)
    sources.validate_raw(raw, task)
    report["examples"] = {split: len(dataset) for split, dataset in raw.items()}
    report["carving"] = carving
    # Counted on the saved splits, never removed: given splits keep what the source put in them.
    report["overlap"] = overlap_report(raw, sources.TEXT_FIELDS, carving["carved"], near)
    if task.download.max_samples:
        report["overlap_before_max_samples"] = overlap_report(
            before_limits, sources.TEXT_FIELDS, carving["carved"], near
        )
    if task.download.source == "hub":
        report["hub"] = {
            "dataset": task.download.dataset,
            "config": task.download.config,
            "revision_requested": task.download.revision,
            "revision_resolved": resolved_revision(task.download),
        }
    # Row i of a saved split is in cluster clusters[split][i] (its first row of one text).
    clusters = split_clusters(raw, sources.TEXT_FIELDS, near)
    save_dataset(raw, paths.raw_dir(task_name), {"download_report.json": report, "clusters.json": clusters})
    sizes = ", ".join(f"{split} {len(dataset)}" for split, dataset in raw.items())
    return f"download {task_name}: {sizes} -> {paths.raw_dir(task_name)}"


if __name__ == "__main__":
    run_stage(main)
