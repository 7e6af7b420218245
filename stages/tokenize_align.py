"""tokenize: tokenize-and-align the raw splits for the task's model (data/<task>/tokenized)."""

import json

from reprotune import tasks
from reprotune.core import paths
from reprotune.core.arrow import load_dataset_dir, save_dataset
from reprotune.core.atomic import write_json
from reprotune.core.cli import expect_args, run_stage
from reprotune.modeling.tokenizer import check_length, load_tokenizer


def main(args: list[str]) -> str:
    (task_name,) = expect_args(args, ["task"], "stages/tokenize_align.py")
    task = tasks.load_task(task_name, "tokenize")
    preprocess = tasks.preprocess(task.type)
    raw_path = paths.raw_dir(task_name)
    raw = load_dataset_dir(raw_path, "download")
    download_report = json.loads((raw_path / "download_report.json").read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(task.model, pretokenized=tasks.params_module(task.type).PRETOKENIZED_INPUT)
    length_key = "max_length" if getattr(task.tokenize, "max_length", None) is not None else "chunk_size"
    check_length(
        task.model, tokenizer, getattr(task.tokenize, length_key, None), f"tasks.{task_name}.tokenize.{length_key}"
    )
    meta = preprocess.prepare_meta(raw, download_report, task)
    features, report = preprocess.tokenize(raw, tokenizer, task, meta)
    report["download"] = download_report
    save_dataset(features, paths.tokenized_dir(task_name), {"meta.json": meta.model_dump(mode="json")})
    write_json(paths.tokenize_report(task_name), report)
    sizes = ", ".join(f"{split} {len(dataset)}" for split, dataset in features.items())
    return f"tokenize {task_name}: {sizes} features -> {paths.tokenized_dir(task_name)}"


if __name__ == "__main__":
    run_stage(main)
