"""Predictions from a trained model, as JSON lines.

    reprotune-predict wnut16 --method lora --text "Obama visited Paris"
    echo '{"question": "...", "context": "..."}' | reprotune-predict squad --input -
    reprotune-predict wnut16 --input tweets.txt --output entities.jsonl --html entities.html

Input: --text (repeatable), or --input FILE ('-' for stdin) with one record per line,
either plain text or a JSON object with the task's fields. The model is the task's
checkpoint (`full`) or its base model plus adapter (`lora`), as trained by dvc repro;
with --format onnx, the export stage's ONNX model (--int8: its int8-quantized one),
run by onnxruntime on the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from reprotune import tasks
from reprotune.core import paths
from reprotune.core.cli import quiet_libraries, run_stage
from reprotune.core.errors import ReprotuneError
from reprotune.core.paths import RUN_INFO
from reprotune.evaluation.evaluate import load_method_model
from reprotune.modeling.tokenizer import load_tokenizer
from reprotune.rendering import render_html
from reprotune.tasks import load_task


def read_records(texts: list[str], source: str | None, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """Plain lines fill the family's first field; JSON object lines must carry all fields."""
    lines = list(texts)
    if source:
        handle = sys.stdin if source == "-" else open(source, encoding="utf-8")
        with handle:
            lines += [line.rstrip("\n") for line in handle if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        record = json.loads(line) if line.lstrip().startswith("{") else {fields[0]: line}
        missing = [field for field in fields if field not in record]
        if missing:
            raise ReprotuneError(f"input record {number} lacks field '{missing[0]}' (needs: {', '.join(fields)})")
        records.append(record)
    if not records:
        raise ReprotuneError("no input: give --text or --input FILE (or '-' for stdin)")
    return records


def predict(
    task_name: str,
    method: str,
    records: list[dict[str, Any]],
    params_path: str = "params.yaml",
    fmt: str = "checkpoint",
    int8: bool = False,
) -> list[dict]:
    if fmt != "checkpoint" or int8:
        from reprotune.export.runtime import load_predictor

        return load_predictor(task_name, method, fmt, params_path, int8=int8)(records)
    task = load_task(task_name, path=params_path)
    family = tasks.family(task.type)
    run_info = paths.model_dir(task_name, method) / RUN_INFO
    if method != "baseline" and not run_info.exists():
        raise ReprotuneError(f"{run_info.parent} is missing; train it first (dvc repro train-{method}@{task_name})")
    meta = tasks.parse_meta(task.type, json.loads(run_info.read_text(encoding="utf-8"))["meta"])
    tokenizer = load_tokenizer(task.model, pretokenized=tasks.params_module(task.type).PRETOKENIZED_INPUT)
    model = load_method_model(task_name, method, task, family, meta)
    try:
        return family.predict_records(model, tokenizer, records, meta, task)
    except NotImplementedError as exc:
        raise ReprotuneError(str(exc)) from exc


def main(argv: list[str]) -> str | None:
    parser = argparse.ArgumentParser(
        prog="reprotune-predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", help="a task name from params.yaml")
    parser.add_argument("--method", default="full", choices=["full", "lora"])
    parser.add_argument("--text", action="append", default=[], help="an input text (repeatable)")
    parser.add_argument("--input", help="file with one record per line, '-' for stdin")
    parser.add_argument("--output", help="write JSON lines here instead of stdout")
    parser.add_argument("--html", help="also write NER entities as highlighted HTML")
    parser.add_argument(
        "--format",
        default="checkpoint",
        choices=["checkpoint", "onnx"],
        help="checkpoint: the trained model; onnx: models/<task>/export-<method>/onnx/model.onnx",
    )
    parser.add_argument("--int8", action="store_true", help="with --format onnx: the int8-quantized model")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    family = tasks.family(load_task(args.task, path=args.params).type)
    records = read_records(args.text, args.input, family.predict_fields)
    results = predict(args.task, args.method, records, args.params, args.format, args.int8)
    lines = "".join(json.dumps(result, ensure_ascii=False) + "\n" for result in results)
    if args.output:
        Path(args.output).write_text(lines, encoding="utf-8")
    else:
        sys.stdout.write(lines)
    if args.html:
        Path(args.html).write_text(render_html(results), encoding="utf-8")
    return None


def console() -> None:
    quiet_libraries()
    run_stage(main)


if __name__ == "__main__":
    console()
