"""Predictions from a trained model, as JSON lines.

    reprotune-predict wnut16 --method lora --text "Obama visited Paris"
    echo '{"question": "...", "context": "..."}' | reprotune-predict squad --input -
    reprotune-predict wnut16 --input tweets.txt --output entities.jsonl --html entities.html

Input: --text (repeatable), or --input FILE ('-' for stdin) with one record per line,
either plain text or a JSON object with the task's fields (strings). The model is the
task's checkpoint (`full`) or its base model plus adapter (`lora`), as trained by dvc
repro; with --format onnx, the export stage's ONNX model (--int8: its int8-quantized one),
run by onnxruntime on the CPU.

Every input line is read on its own: a line that is not UTF-8, not JSON, or lacks a field
(or has a non-string one) is reported on stderr as `error: FILE:LINE: ...` and gets an
`{"line": N, "error": ...}` output line in its place; the other lines are predicted, and
the exit status is 1. Texts longer than the model's max_length are windowed (NER; the
output's `"windows"` says how many) or, with --long-inputs refuse, reported the same way."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reprotune import tasks
from reprotune.commands.predict_html import render_html
from reprotune.core.atomic import write_text
from reprotune.core.cli import run_stage
from reprotune.core.errors import ReprotuneError
from reprotune.serving.records import Line, RecordError, check_strings, read_lines
from reprotune.tasks import load_task


def input_lines(source: str) -> Iterator[bytes]:
    """The raw lines of FILE or stdin ('-'), bytes, so each line's encoding is checked alone."""
    if source == "-":
        yield from sys.stdin.buffer
        return
    path = Path(source)
    if not path.exists():
        raise ReprotuneError(f"input file {source} does not exist")
    if not path.is_file():
        raise ReprotuneError(f"input {source} is not a file; give a file with one record per line, or '-'")
    try:
        with path.open("rb") as handle:
            yield from handle
    except OSError as exc:
        raise ReprotuneError(f"cannot read input file {source}: {exc.strerror or exc}") from exc


def read_records(texts: list[str], source: str | None, fields: tuple[str, ...]) -> list[tuple[str, Line]]:
    """(where, Line) for every --text and every non-blank input line, in order; `where` is
    `--text N`, `<stdin>:N` or `FILE:N`."""
    lines: list[tuple[str, Line]] = []
    for number, text in enumerate(texts, start=1):
        try:
            check_strings(text)  # argv undecodable in the locale arrives with lone surrogates
            lines.append((f"--text {number}", Line(number, {fields[0]: text}, None)))
        except RecordError as exc:
            lines.append((f"--text {number}", Line(number, None, str(exc))))
    if source:
        name = "<stdin>" if source == "-" else source
        lines += [(f"{name}:{line.number}", line) for line in read_lines(input_lines(source), fields)]
    if not lines:
        raise ReprotuneError("no input: give --text or --input FILE (or '-' for stdin)")
    return lines


def predict(
    task_name: str,
    method: str,
    records: list[dict[str, Any]],
    params_path: str = "params.yaml",
    fmt: str = "checkpoint",
    int8: bool = False,
    long_inputs: str = "window",
) -> list[dict[str, Any] | RecordError]:
    """One result per record: its prediction, or the RecordError that refused it."""
    from reprotune.commands.serve import available_cpus
    from reprotune.serving import loading
    from reprotune.serving.online import LongInputs, OnlinePredictor

    loaded = loading.load(task_name, method, fmt, params_path, int8=int8, threads=available_cpus())
    long: LongInputs = "refuse" if long_inputs == "refuse" else "window"
    predictor = OnlinePredictor(loaded, long, max_batch=loaded.task.evaluate.batch_size)
    prepared: list[Any] = []
    for record in records:
        try:
            prepared.append(predictor.prepare(record))
        except RecordError as exc:
            prepared.append(exc)
    ready = [p for p in prepared if not isinstance(p, RecordError)]
    results = iter(predictor.run(ready) if ready else [])
    return [p if isinstance(p, RecordError) else next(results) for p in prepared]


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
    parser.add_argument(
        "--long-inputs",
        default="window",
        choices=["window", "refuse"],
        help="texts over tokenize.max_length: split into windows (default) or report as errors",
    )
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    os.environ["TQDM_DISABLE"] = "1"
    family = tasks.family(load_task(args.task, path=args.params).type)
    lines = read_records(args.text, args.input, tuple(family.predict_fields))
    good = [line.record for _, line in lines if line.record is not None]
    predicted = iter(
        predict(args.task, args.method, good, args.params, args.format, args.int8, args.long_inputs) if good else []
    )
    out, errors, results = [], [], []
    for where, line in lines:
        result: dict[str, Any] | RecordError = next(predicted) if line.record is not None else RecordError(line.error)
        if isinstance(result, RecordError):
            errors.append(f"error: {where}: {result}")
            out.append({"line": line.number, "error": str(result)})
        else:
            out.append(result)
            results.append(result)
    text = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in out)
    if args.output:
        write_text(args.output, text)
    else:
        sys.stdout.write(text)
    if args.html:
        write_text(args.html, render_html(results))
    if errors:
        sys.stdout.flush()
        print("\n".join(errors), file=sys.stderr)
        raise SystemExit(1)
    return None


def console() -> None:
    run_stage(main)  # quiets the libraries first


if __name__ == "__main__":
    console()
