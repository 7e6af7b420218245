"""`reprotune-check`: the metrics gate for CI and for a quick look before a commit.

Compares the metrics in the workspace (`metrics/<task>/*.json`) with the same files at a git
revision, read with `git show REV:path` (the metrics are committed, `cache: false`, so no DVC
is needed), prints a Markdown table of every metric that moved, and fails when a quality
metric dropped by more than its tolerance.

What is compared
  * Quality metrics: every numeric key (nested keys joined with dots, e.g.
    `per_type.person.f1`) of the top-level files `metrics/<task>/<method>.json`
    (baseline, full, lora, ...). These gate.
  * Everything else — `<method>-cost.json` (time, memory, size), `train-*/` (training
    curves), `tokenize.json`, `error_summary.json` — is left out, so timing noise never
    shows; `--include-cost` adds it to the table, and then a metric of those files gates
    only if `tasks.<task>.gate` names it.
  * Never gated, only reported: counts (integer values, and keys named support,
    sentences, examples, seeds, blocks, masked_tokens), spreads (`*_std`, `*_stderr`),
    and interval bounds (`X_ci_low`, `X_ci_high`), which annotate the metric `X`.

Tolerances: `tasks.<task>.gate` in params.yaml, a mapping from a metric to a `GateRule`:

    gate:
      default: {max_drop: 0.01}                 # absolute, for every quality metric not named
      f1: {max_drop: 0.02}
      lora.f1: {max_drop: 0.05, relative: true}  # <method>.<metric> beats <metric>
      per_type.person.f1: {max_drop: 0.05}      # nested metrics gate only when named
      sentences: {max_drop: null}               # null: reported, never gated

A rule is looked up as `<method>.<metric>`, then `<metric>`, then (top-level quality metrics
only) `default`, then the built-in default `BUILTIN_DEFAULT` (0.01 absolute). `relative: true`
makes `max_drop` a fraction of the old value. Lower-is-better metrics (a name containing
"loss" or "perplexity", or a rule with `lower_is_better: true`) drop when they rise.

Intervals: when both sides carry `X_ci_low`/`X_ci_high` for a metric `X`, the verdict says more:
  * a drop beyond tolerance fails either way; the verdict adds "outside noise" when the new
    interval lies wholly below the old point value (wholly above it, lower-is-better), and
    "within noise" otherwise (the new interval still reaches the old value);
  * a drop within tolerance but larger than the old interval's half-width is a regression
    larger than the noise: reported (verdict "warn", a `warning:` line on stderr), not failed.

Exit status: 0 when nothing failed, 1 when a metric failed (one `error:` line each on stderr),
2 on bad input (unknown revision, bad params, unreadable metrics; one `error:` line).
A task, method or metric present on one side only is reported as new/removed, never a failure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from reprotune.core.errors import ReprotuneError, did_you_mean
from reprotune.core.params import GateRule

BUILTIN_DEFAULT = GateRule(max_drop=0.01, relative=False, lower_is_better=None)
GATE_RULES = TypeAdapter(dict[str, GateRule])

AUX_FILES = ("tokenize", "error_summary", "significance", "seeds")
COUNT_KEYS = {"support", "sentences", "examples", "seeds", "blocks", "masked_tokens"}
SPREAD_SUFFIXES = ("_std", "_stderr")
CI_LOW, CI_HIGH = "_ci_low", "_ci_high"
LOWER_BETTER_WORDS = ("loss", "perplexity")
AUX_LOWER_BETTER_WORDS = (*LOWER_BETTER_WORDS, "seconds", "runtime", "memory", "_mb", "bytes")
EPS = 1e-9


# --- reading -------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)


def default_revision(env: dict[str, str] | None = None) -> str:
    """The base branch of a GitHub pull request or GitLab merge request, else HEAD."""
    env = dict(os.environ) if env is None else env
    for var in ("GITHUB_BASE_REF", "CI_MERGE_REQUEST_TARGET_BRANCH_NAME"):
        if env.get(var):
            return f"origin/{env[var]}"
    return "HEAD"


def flatten(data: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a JSON document, nested keys joined with dots (booleans left out)."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out[prefix[:-1]] = data
    return out


def _file_key(rel: PurePosixPath) -> tuple[str, str] | None:
    """metrics-relative path -> (task, method), e.g. wnut16/full.json -> (wnut16, full)."""
    if rel.suffix != ".json" or len(rel.parts) < 2:
        return None
    return rel.parts[0], str(rel.with_suffix("").relative_to(rel.parts[0]))


def is_quality(method: str) -> bool:
    return (
        "/" not in method
        and not method.endswith("-cost")
        and not method.startswith("export-")
        and method not in AUX_FILES
    )


def _parse(text: str, where: str) -> dict[str, float]:
    try:
        return flatten(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ReprotuneError(f"{where} is not valid JSON: {exc}") from exc


def read_workspace(metrics_dir: Path) -> dict[tuple[str, str], dict[str, float]]:
    files: dict[tuple[str, str], dict[str, float]] = {}
    if not metrics_dir.is_dir():
        return files
    for path in sorted(metrics_dir.rglob("*.json")):
        key = _file_key(PurePosixPath(path.relative_to(metrics_dir).as_posix()))
        if key:
            files[key] = _parse(path.read_text(encoding="utf-8"), str(path))
    return files


def read_revision(root: Path, rev: str, metrics_rel: str) -> dict[tuple[str, str], dict[str, float]]:
    if _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode != 0:
        hint = " (fetch it first, e.g. git fetch origin main)" if rev.startswith("origin/") else ""
        raise ReprotuneError(f"unknown revision '{rev}'{hint}")
    listing = _git(root, "ls-tree", "-r", "--name-only", rev, "--", metrics_rel)
    if listing.returncode != 0:
        raise ReprotuneError(f"git ls-tree {rev} failed: {listing.stderr.strip()}")
    files: dict[tuple[str, str], dict[str, float]] = {}
    for name in listing.stdout.splitlines():
        key = _file_key(PurePosixPath(name).relative_to(metrics_rel))
        if not key:
            continue
        shown = _git(root, "show", f"{rev}:{name}")
        if shown.returncode != 0:
            raise ReprotuneError(f"git show {rev}:{name} failed: {shown.stderr.strip()}")
        files[key] = _parse(shown.stdout, f"{rev}:{name}")
    return files


def read_rules(params_path: Path) -> dict[str, dict[str, GateRule]]:
    """tasks.<task>.gate of params.yaml, validated; tasks without one map to {}."""
    if not params_path.exists():
        return {}
    try:
        data = yaml.safe_load(params_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ReprotuneError(f"{params_path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    tasks = data.get("tasks") if isinstance(data, dict) else None
    rules: dict[str, dict[str, GateRule]] = {}
    for task, section in (tasks or {}).items() if isinstance(tasks, dict) else ():
        raw = section.get("gate") if isinstance(section, dict) else None
        if raw is None:
            continue
        try:
            rules[task] = GATE_RULES.validate_python(raw)
        except ValidationError as exc:
            errors = exc.errors()
            err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
            where = ".".join(str(p) for p in (f"tasks.{task}.gate", *err["loc"]))
            if err["type"] == "extra_forbidden":
                msg = f"unknown key{did_you_mean(str(err['loc'][-1]), GateRule.model_fields)}; allowed keys: " + (
                    ", ".join(GateRule.model_fields)
                )
            else:
                msg = f"{err['msg']} (got {err.get('input')!r})"
            raise ReprotuneError(f"{params_path}: '{where}': {msg}") from exc
    return rules


# --- comparing -----------------------------------------------------------------------------


@dataclass
class Row:
    task: str
    method: str
    metric: str
    old: float | None
    new: float | None
    verdict: str
    failed: bool = False
    warning: str | None = None
    error: str | None = None
    old_ci: tuple[float, float] | None = None
    new_ci: tuple[float, float] | None = None


@dataclass
class Report:
    rev: str
    rows: list[Row] = field(default_factory=list)

    @property
    def failures(self) -> list[Row]:
        return [row for row in self.rows if row.failed]


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"


def _is_interval(metric: str) -> bool:
    return metric.endswith(CI_LOW) or metric.endswith(CI_HIGH)


def _intervals(values: dict[str, float]) -> dict[str, tuple[float, float]]:
    out = {}
    for key, low in values.items():
        if key.endswith(CI_LOW) and (high := values.get(key[: -len(CI_LOW)] + CI_HIGH)) is not None:
            out[key[: -len(CI_LOW)]] = (low, high)
    return out


def _report_only(metric: str, old: float | None, new: float | None) -> bool:
    leaf = metric.rsplit(".", 1)[-1]
    ints = all(isinstance(v, int) for v in (old, new) if v is not None)
    return leaf in COUNT_KEYS or leaf.endswith(SPREAD_SUFFIXES) or ints


def _lower_is_better(metric: str, quality: bool, rule: GateRule | None) -> bool:
    if rule is not None and rule.lower_is_better is not None:
        return rule.lower_is_better
    name = metric.lower()
    return any(word in name for word in (LOWER_BETTER_WORDS if quality else AUX_LOWER_BETTER_WORDS))


def _rule_for(rules: dict[str, GateRule], method: str, metric: str, quality: bool) -> GateRule | None:
    for key in (f"{method}.{metric}", metric):
        if key in rules:
            return rules[key]
    if not quality or "." in metric:
        return None
    return rules.get("default", BUILTIN_DEFAULT)


def compare_metric(
    task: str,
    method: str,
    metric: str,
    old: float,
    new: float,
    rule: GateRule | None,
    quality: bool,
    old_ci: tuple[float, float] | None = None,
    new_ci: tuple[float, float] | None = None,
) -> Row:
    row = Row(task, method, metric, old, new, "unchanged", old_ci=old_ci, new_ci=new_ci)
    if old == new or (math.isnan(old) and math.isnan(new)):
        return row
    lower = _lower_is_better(metric, quality, rule)
    drop = (new - old if lower else old - new) if not math.isnan(new) else math.inf
    if math.isnan(old) or drop <= 0:
        row.verdict = "improved" if not math.isnan(old) else "changed"
        return row
    gated = rule is not None and rule.max_drop is not None and not _report_only(metric, old, new)
    if not gated:
        row.verdict = "worse (not gated)"
        return row
    assert rule is not None and rule.max_drop is not None
    allowed = rule.max_drop * abs(old) if rule.relative else rule.max_drop
    allowed_text = _fmt(allowed) + (f" ({rule.max_drop:g} of {_fmt(old)})" if rule.relative else "")
    name = f"{task}/{method}.{metric}"
    verb, sign = ("rose", "+") if lower else ("fell", "-")
    if drop > allowed + EPS:
        row.failed = True
        row.verdict = "**FAIL**: beyond tolerance"
        if old_ci and new_ci:
            outside = new_ci[0] > old if lower else new_ci[1] < old
            row.verdict += ", outside noise" if outside else ", within noise"
        row.error = (
            f"error: {name} {verb} from {_fmt(old)} to {_fmt(new)} ({sign}{_fmt(drop)}), "
            f"more than the allowed {allowed_text}"
        )
        return row
    row.verdict = f"within tolerance ({allowed_text})"
    if old_ci and new_ci:
        half_width = (old_ci[1] - old_ci[0]) / 2
        if drop > half_width + EPS:
            row.verdict = f"warn: larger than noise (±{_fmt(half_width)}), within tolerance ({allowed_text})"
            row.warning = (
                f"warning: {name} {verb} from {_fmt(old)} to {_fmt(new)} ({sign}{_fmt(drop)}): more than the "
                f"interval half-width {_fmt(half_width)}, within the allowed {allowed_text}"
            )
    return row


def compare(
    old_files: dict[tuple[str, str], dict[str, float]],
    new_files: dict[tuple[str, str], dict[str, float]],
    rules: dict[str, dict[str, GateRule]],
    rev: str,
    include_cost: bool = False,
    show_all: bool = False,
) -> Report:
    report = Report(rev)
    old_tasks = {task for task, _ in old_files}
    new_tasks = {task for task, _ in new_files}
    for task in sorted(old_tasks | new_tasks):
        task_rules = rules.get(task, {})
        both = (*old_files.items(), *new_files.items())
        known = {metric for (t, _), values in both if t == task for metric in values}
        methods = {m for t, m in (*old_files, *new_files) if t == task}
        for key in task_rules:
            if key == "default":
                continue
            bare = key.split(".", 1)[1] if key.split(".", 1)[0] in methods and "." in key else key
            if bare not in known:
                raise ReprotuneError(
                    f"params.yaml: 'tasks.{task}.gate.{key}' names no metric of {task}{did_you_mean(bare, known)}"
                )
        if task not in old_tasks or task not in new_tasks:
            report.rows.append(Row(task, "–", "–", None, None, "new task" if task not in old_tasks else "removed task"))
            continue
        for method in sorted(methods):
            quality = is_quality(method)
            if not quality and not include_cost:
                continue
            old, new = old_files.get((task, method)), new_files.get((task, method))
            if old is None or new is None:
                report.rows.append(Row(task, method, "–", None, None, "new" if old is None else "removed"))
                continue
            old_ci, new_ci = _intervals(old), _intervals(new)
            for metric in sorted(set(old) | set(new)):
                if _is_interval(metric):
                    continue
                if metric not in old or metric not in new:
                    report.rows.append(
                        Row(
                            task,
                            method,
                            metric,
                            old.get(metric),
                            new.get(metric),
                            "new" if metric not in old else "removed",
                        )
                    )
                    continue
                row = compare_metric(
                    task,
                    method,
                    metric,
                    old[metric],
                    new[metric],
                    _rule_for(task_rules, method, metric, quality),
                    quality,
                    old_ci.get(metric),
                    new_ci.get(metric),
                )
                if row.verdict != "unchanged" or show_all:
                    report.rows.append(row)
    return report


def _with_ci(value: float | None, ci: tuple[float, float] | None) -> str:
    return _fmt(value) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "")


def _change(row: Row) -> str:
    if row.old is None or row.new is None or math.isnan(row.old) or math.isnan(row.new):
        return "–"
    delta = row.new - row.old
    text = f"{delta:+.4f}" if not (isinstance(row.old, int) and isinstance(row.new, int)) else f"{delta:+d}"
    return text + (f" ({delta / abs(row.old):+.1%})" if row.old else "")


def to_markdown(report: Report) -> str:
    failures = len(report.failures)
    head = f"**reprotune-check** against `{report.rev}`: "
    if not report.rows:
        return head + "no metric moved.\n"
    moved = sum(row.verdict != "unchanged" for row in report.rows)
    head += f"{moved} moved, " + (f"**{failures} failed**" if failures else "none failed") + ".\n"
    lines = [head, "| task | method | metric | old | new | change | verdict |", "|" + " --- |" * 7]
    for row in report.rows:
        lines.append(
            f"| {row.task} | {row.method} | {row.metric} | {_with_ci(row.old, row.old_ci)} | "
            f"{_with_ci(row.new, row.new_ci)} | {_change(row)} | {row.verdict} |"
        )
    return "\n".join(lines) + "\n"


# --- command line --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reprotune-check",
        description="Compare the workspace metrics with a git revision; fail when a quality metric "
        "dropped by more than its tolerance (tasks.<task>.gate in params.yaml).",
    )
    parser.add_argument(
        "rev",
        nargs="?",
        default=None,
        help="git revision to compare with (default: origin/$GITHUB_BASE_REF or "
        "origin/$CI_MERGE_REQUEST_TARGET_BRANCH_NAME when set, else HEAD)",
    )
    parser.add_argument("--md", metavar="FILE", help="also write the Markdown table to FILE")
    parser.add_argument("--all", action="store_true", help="list unchanged metrics too")
    parser.add_argument(
        "--include-cost",
        action="store_true",
        help="also compare cost, training-curve, tokenize and error-summary metrics "
        "(they gate only when named in gate)",
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file with tasks.<task>.gate (default: params.yaml)"
    )
    parser.add_argument("--metrics-dir", default="metrics", help="metrics folder (default: metrics)")
    return parser


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rev = args.rev or default_revision()
    try:
        metrics_dir = Path(args.metrics_dir).resolve()
        top = _git(Path.cwd(), "rev-parse", "--show-toplevel")
        if top.returncode != 0:
            raise ReprotuneError("not inside a git repository")
        root = Path(top.stdout.strip()).resolve()
        try:
            metrics_rel = metrics_dir.relative_to(root).as_posix()
        except ValueError as exc:
            raise ReprotuneError(f"{args.metrics_dir} is outside the git repository {root}") from exc
        rules = read_rules(Path(args.params))
        old = read_revision(root, rev, metrics_rel)
        new = read_workspace(metrics_dir)
        if not old and not new:
            raise ReprotuneError(f"no metrics under {args.metrics_dir} in the workspace nor at {rev}")
        report = compare(old, new, rules, rev, include_cost=args.include_cost, show_all=args.all)
    except (ReprotuneError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    markdown = to_markdown(report)
    sys.stdout.write(markdown)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(markdown, encoding="utf-8")
    for row in report.rows:
        if row.warning:
            print(row.warning, file=sys.stderr)
    for row in report.failures:
        print(row.error, file=sys.stderr)
    return 1 if report.failures else 0


def console() -> None:
    sys.exit(run())


if __name__ == "__main__":
    console()
