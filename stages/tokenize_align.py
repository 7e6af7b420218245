"""tokenize: tokenize-and-align the raw splits for the task's model (data/<task>/tokenized)."""

import json

from reprotune.core import paths
from reprotune.core.arrow import load_dataset_dir, save_dataset
from reprotune.core.atomic import write_json
from reprotune.core.cli import expect_args, run_stage
from reprotune.core.params import load_task
from reprotune.modeling.tokenizer import load_tokenizer
from reprotune.tasks import get_family


def main(args: list[str]) -> str:
    (task_name,) = expect_args(args, ["task"], "stages/tokenize_align.py")
    task = load_task(task_name)
    family = get_family(task.type)
    raw_path = paths.raw_dir(task_name)
    raw = load_dataset_dir(raw_path, "download")
    tokenizer = load_tokenizer(task.model, pretokenized=family.pretokenized_input)
    meta = family.prepare_meta(raw, task)
    features, report = family.tokenize(raw, tokenizer, task, meta)
    download_report = raw_path / "download_report.json"
    if download_report.exists():
        report["download"] = json.loads(download_report.read_text(encoding="utf-8"))
    save_dataset(features, paths.tokenized_dir(task_name), {"meta.json": meta})
    write_json(paths.tokenize_report(task_name), report)
    sizes = ", ".join(f"{split} {len(dataset)}" for split, dataset in features.items())
    return f"tokenize {task_name}: {sizes} features -> {paths.tokenized_dir(task_name)}"


if __name__ == "__main__":
    run_stage(main)
