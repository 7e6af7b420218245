"""`reprotune-sweep`: queue a grid of DVC experiments, and pick the best one by the
VALIDATION metric, never the test metric.

A sweep is DVC's own experiment queue; nothing here runs training:

    reprotune-sweep grid --task wnut16 -S train_lora.r=4,8,16 -S 'train_lora.learning_rate=1e-4,3e-4'
      # = dvc exp run --queue -S 'tasks.wnut16.train_lora.r=4,8,16' -S ... (one experiment per combination)
    dvc queue start -j 1                      # or: dvc exp run --run-all
    reprotune-sweep best --task wnut16 --method lora

`best` reads `dvc exp show --json` and ranks the finished experiments (and the baseline
commit) by what the train stage recorded in `metrics/<task>/<method>-cost.json`:
`best_validation_value`, the selection metric of the checkpoint it kept (older runs only
have `best_checkpoint_metric`). The test metric (`metrics/<task>/<method>.json`) is shown for
information and plays no part in the choice: picking by the test set would make its number
an optimistic estimate. It prints a Markdown table (experiment, changed params, validation
metric, test metric) and the winner.

Exit status: 0 with a winner, 1 when no experiment has the metric, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprotune.core.errors import ReprotuneError
from reprotune.core.nested import flatten

METHODS = ("full", "lora")
PARAMS_FILE = "params.yaml"
LOWER_IS_BETTER = ("loss", "perplexity")


@dataclass
class Candidate:
    """One experiment (or the baseline commit) for one method."""

    name: str
    rev: str
    params: dict[str, Any]
    validation_metric: str | None
    validation_value: float | None
    greater_is_better: bool | None
    test_metric: str | None = None
    test_value: float | None = None
    changed: list[str] = field(default_factory=list)
    note: str = ""


# -- reading `dvc exp show --json` ----------------------------------------------------


def _data(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    return entry.get("data") or {}


def _file_data(files: Mapping[str, Any] | None, path: str) -> dict[str, Any] | None:
    found = (files or {}).get(path)
    if not isinstance(found, Mapping) or "data" not in found:
        return None
    return dict(found["data"] or {})


def iter_revisions(payload: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, Mapping[str, Any], str, bool]]:
    """(name, entry, state, is_baseline) for each baseline commit and each experiment; the
    `workspace` row is skipped (it mirrors an applied or half-run state)."""
    for baseline in payload:
        if baseline.get("rev") == "workspace":
            continue
        name = baseline.get("name") or str(baseline.get("rev", ""))[:7]
        yield f"{name} (baseline)", baseline, "failed" if baseline.get("error") else "success", True
        for experiment in baseline.get("experiments") or []:
            state = (experiment.get("executor") or {}).get("state") or "success"
            for rev in experiment.get("revs") or []:
                if rev.get("error"):
                    state = "failed"
                label = rev.get("name") or experiment.get("name") or str(rev.get("rev", ""))[:7]
                yield str(label), rev, str(state), False


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _test_value(
    test: Mapping[str, Any] | None, metric: str | None, headline: Sequence[str]
) -> tuple[str | None, float | None]:
    if not test:
        return None, None
    for key in ([metric] if metric else []) + list(headline):
        if key in test and _number(test[key]) is not None:
            return key, _number(test[key])
    return None, None


def _headline_keys(task_type: Any) -> tuple[str, ...]:
    try:
        from reprotune import tasks

        return tuple(tasks.metrics(str(task_type)).HEADLINE_KEYS)
    except Exception:  # noqa: BLE001 (information only: an unknown family shows no test metric)
        return ()


def _fallback_direction(metric: str) -> bool:
    return not any(word in metric for word in LOWER_IS_BETTER)


def candidates(
    payload: Sequence[Mapping[str, Any]], task: str, method: str, metrics_dir: str = "metrics"
) -> list[Candidate]:
    """Every revision of the payload as a candidate for `method` of `task`."""
    cost_path = f"{metrics_dir}/{task}/{method}-cost.json"
    test_path = f"{metrics_dir}/{task}/{method}.json"
    found = []
    for name, entry, state, _ in iter_revisions(payload):
        data = _data(entry)
        params = flatten(_file_data(data.get("params"), PARAMS_FILE) or {})
        cost = _file_data(data.get("metrics"), cost_path)
        task_type = params.get(f"tasks.{task}.type")
        section = f"tasks.{task}.train_{method}"
        metric = value = greater = None
        note = "" if state == "success" else state
        if cost is not None:
            metric = cost.get("best_validation_metric") or params.get(f"{section}.metric_for_best_model")
            value = _number(cost.get("best_validation_value", cost.get("best_checkpoint_metric")))
            greater = cost.get("best_validation_greater_is_better")
            if metric is None and value is not None:
                metric = _default_metric(task_type)
            if greater is None and metric is not None:
                greater = _fallback_direction(metric)
        elif not note:
            note = f"no {cost_path}"
        test_metric, test_value = _test_value(
            _file_data(data.get("metrics"), test_path), metric, _headline_keys(task_type) if task_type else ()
        )
        found.append(
            Candidate(
                name, str(entry.get("rev", "")), params, metric, value, greater, test_metric, test_value, note=note
            )
        )
    baseline = next((c.params for c in found if c.name.endswith("(baseline)")), {})
    other = [f"tasks.{task}.train_{m}." for m in METHODS if m != method]
    for candidate in found:
        candidate.changed = changed_params(
            baseline, candidate.params, keep=(f"tasks.{task}.", "pipeline."), drop=tuple(other)
        )
    return found


def _default_metric(task_type: Any) -> str | None:
    """The family's selection metric, for train info written before `best_validation_metric`."""
    if not task_type:
        return None
    try:
        from reprotune import tasks

        return str(tasks.family(str(task_type)).default_metric)
    except Exception:  # noqa: BLE001
        return None


def changed_params(
    baseline: Mapping[str, Any], params: Mapping[str, Any], keep: tuple[str, ...] = ("",), drop: tuple[str, ...] = ()
) -> list[str]:
    """`key=value` for each param under `keep` (and not under `drop`) that differs from the
    baseline commit, `tasks.` left off; for one method that is its task's keys, the other
    method's train section aside."""
    keys = sorted(key for key in set(baseline) | set(params) if key.startswith(keep) and not key.startswith(drop))
    return [f"{key.removeprefix('tasks.')}={params.get(key)}" for key in keys if baseline.get(key) != params.get(key)]


# -- choosing ---------------------------------------------------------------------------


@dataclass
class Choice:
    method: str
    metric: str | None
    ranked: list[Candidate]
    skipped: list[Candidate]

    @property
    def winner(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None


def choose(found: Sequence[Candidate], method: str, metric: str | None = None) -> Choice:
    """Rank the candidates that recorded `metric` (default: the selection metric most of them
    recorded) by its validation value, best first; the rest are skipped with a reason."""
    usable = [c for c in found if c.validation_value is not None and c.validation_metric and not c.note]
    if metric is None and usable:
        metric = Counter(c.validation_metric for c in usable).most_common(1)[0][0]
    ranked, skipped = [], []
    for candidate in found:
        if candidate in usable and candidate.validation_metric == metric:
            ranked.append(candidate)
        else:
            if not candidate.note:
                candidate.note = (
                    f"selected by validation {candidate.validation_metric}, not {metric}"
                    if candidate.validation_metric
                    else "no validation metric recorded"
                )
            skipped.append(candidate)
    greater = ranked[0].greater_is_better if ranked else True
    order = {id(c): index for index, c in enumerate(found)}  # ties: the baseline, then dvc's order
    ranked.sort(
        key=lambda c: (
            -c.validation_value if greater else c.validation_value,  # type: ignore[operator]
            not c.name.endswith("(baseline)"),
            order[id(c)],
        )
    )
    return Choice(method, metric, ranked, skipped)


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def to_markdown(choice: Choice, task: str) -> str:
    metric = choice.metric or "metric"
    lines = [
        f"### {task} · {choice.method}: experiments by validation {metric}",
        "",
        f"| experiment | changed params | validation {metric} | test (information only) |",
        "| --- | --- | ---: | ---: |",
    ]
    for candidate in choice.ranked:
        test = f"{candidate.test_metric} {_cell(candidate.test_value)}" if candidate.test_metric else "–"
        mark = " ★" if candidate is choice.winner else ""
        lines.append(
            f"| {candidate.name}{mark} | {', '.join(candidate.changed) or '–'} | "
            f"{_cell(candidate.validation_value)} | {test} |"
        )
    for candidate in choice.skipped:
        lines.append(f"| {candidate.name} | {', '.join(candidate.changed) or '–'} | – ({candidate.note}) | – |")
    lines.append("")
    winner = choice.winner
    if winner is None:
        lines.append(f"No experiment recorded a validation {metric} for {task} ({choice.method}).")
    else:
        apply = "" if winner.name.endswith("(baseline)") else f"; `dvc exp apply {winner.name}` to take it"
        lines.append(
            f"**Best ({choice.method}, validation {metric}): {winner.name}** "
            f"= {_cell(winner.validation_value)}{apply}. The test metric was not used to choose."
        )
    return "\n".join(lines) + "\n"


# -- commands ---------------------------------------------------------------------------


def exp_show_payload(source: str | None) -> list[dict[str, Any]]:
    """`dvc exp show --json` (all commits' experiments of HEAD), or a saved copy of it."""
    if source:
        text = Path(source).read_text(encoding="utf-8")
    else:
        done = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["failed"])[-1]
            raise ReprotuneError(f"dvc exp show --json: {tail}")
        text = done.stdout
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise ReprotuneError(f"dvc exp show --json did not give JSON: {exc}") from exc
    if not isinstance(payload, list):
        raise ReprotuneError("dvc exp show --json: expected a list of revisions (dvc 3)")
    return payload


def queue_arguments(task: str, sets: Sequence[str]) -> list[str]:
    """`dvc exp run --queue` with each `-S key=values` put under `tasks.<task>.` (keys already
    starting with `tasks.` or `pipeline.` are kept). DVC expands `a,b,c`, `range(start, stop[, step])`
    and `choice(...)` into one queued experiment per combination."""
    command = ["dvc", "exp", "run", "--queue"]
    for item in sets:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ReprotuneError(f"-S '{item}': expected key=value[,value...], e.g. train_lora.r=4,8,16")
        if not key.startswith(("tasks.", "pipeline.")):
            key = f"tasks.{task}.{key}"
        command += ["-S", f"{key}={values}"]
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reprotune-sweep",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    best = commands.add_parser("best", help="rank experiments by the validation metric; print the table and winner")
    best.add_argument("--task", required=True, help="the task (tasks.<task> in params.yaml)")
    best.add_argument("--method", choices=METHODS, action="append", help="full or lora (repeatable; default: both)")
    best.add_argument(
        "--metric",
        help="the validation metric to rank by (default: the selection metric the "
        "train stage recorded); experiments selected by another are skipped",
    )
    best.add_argument("--from-json", help="a saved `dvc exp show --json` output instead of running dvc")
    best.add_argument("--metrics-dir", default="metrics")
    best.add_argument("--md", help="also write the Markdown to this file")
    grid = commands.add_parser("grid", help="queue one DVC experiment per combination (dvc exp run --queue -S)")
    grid.add_argument("--task", required=True)
    grid.add_argument(
        "-S",
        "--set",
        dest="sets",
        action="append",
        required=True,
        help="key=v1,v2 or key=range(1,4); key relative to tasks.<task> (e.g. train_lora.r=4,8)",
    )
    grid.add_argument("--dry-run", action="store_true", help="print the dvc command only")
    return parser


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "grid":
            command = queue_arguments(args.task, args.sets)
            print(" ".join(f"'{part}'" if any(c in part for c in " ,()") else part for part in command))
            if args.dry_run:
                return 0
            return subprocess.run(command).returncode
        payload = exp_show_payload(args.from_json)
        markdown, found_any = [], False
        for method in args.method or METHODS:
            found = candidates(payload, args.task, method, args.metrics_dir)
            if not args.method and all(c.validation_value is None for c in found):
                continue  # by default, a method no revision trained is left out
            choice = choose(found, method, args.metric)
            found_any = found_any or choice.winner is not None
            markdown.append(to_markdown(choice, args.task))
    except (ReprotuneError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = "\n".join(markdown) or f"No experiment has train info for task {args.task}.\n"
    sys.stdout.write(text)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(text, encoding="utf-8")
    return 0 if found_any else 1


def console() -> None:
    sys.exit(run())


if __name__ == "__main__":
    console()
