"""`reprotune-check`: the metrics gate for CI and for a quick look before a commit.

Compares the metrics in the workspace (`metrics/<task>/*.json`) with the same files at a git
revision, read with `git show REV:path` (the metrics are committed, `cache: false`, so no DVC
is needed), prints a Markdown table of every metric that moved, and fails when a quality
metric dropped by more than its tolerance, or is gone, or is not a valid number.

What is compared
  * Quality metrics: the keys of the top-level files `metrics/<task>/<method>.json`
    (baseline, full, lora, ...), nested keys joined with dots (`per_type.person.f1`). A key is
    a metric when it is a number on either side, is named in `gate`, or has a known range by
    its name (f1, accuracy, ...); strings such as `eval_device` are left out.
  * Everything else — `<method>-cost.json`, `train-*/`, `tokenize.json`, `error_summary.json`,
    `significance.json`, `seeds.json` — is left out unless `--include-cost`; then a metric of
    those files gates only if `tasks.<task>.gate` names it.
  * Never gated, only reported: counts (integers; keys named support, sentences, examples,
    seeds, blocks, masked_tokens), spreads (`*_std`, `*_stderr`), and interval bounds
    (`X_ci_low`, `X_ci_high`), which annotate the metric `X`.

Tolerances: `tasks.<task>.gate` in params.yaml maps a metric to a `GateRule`; a rule is looked
up as `<method>.<metric>`, then `<metric>`, then (top-level quality metrics only) `default`,
then `BUILTIN_DEFAULT` (0.01 absolute). A metric whose rule has a `max_drop` is *gated*:

  * it fails when it is missing (its file, its task folder or all of metrics/ included), not a
    number (null, a string, a boolean), not finite, or outside its range (`range` in the rule;
    by name: f1/precision/recall/accuracy/exact_match... [0, 1], mcc [-1, 1], loss >= 0,
    perplexity >= 1); a task leaves only by being taken out of `pipeline.tasks`; a method file
    whose top level is not an object (a JSON array) fails as a whole;
  * it fails when it dropped by more than `max_drop` (`relative: true`: a fraction of the old
    value; lower-is-better metrics, named *loss*/*perplexity* or `lower_is_better: true`, drop
    when they rise) against the revision and against the pinned reference (top-level
    `gate.reference` or `gate.reference_file`), so small drops cannot add up unseen;
  * an invalid value at the revision (nan, null, out of range) cannot be compared with: a
    `warning:` says so and the new value is checked on its own (and against the reference).

Noise: when both sides carry `X_ci_low`/`X_ci_high`, the gate builds an interval for the change
new - old from the two intervals by MOVER (Zou & Donner 2008: the difference of two independent
estimates, each side's interval arm combined in quadrature). Both revisions are scored on the
same test set, so the paired interval would be narrower: this one errs towards "within noise".
It covers the test sample, not another training run. A failure says "outside noise" when the
interval excludes 0. A drop within tolerance is a `warn` (a `warning:` line, not a failure) when
the interval excludes 0 (a real drop) or reaches past -max_drop (the test set cannot show the drop
is within tolerance); when the change's interval is wider than ±max_drop, every drop warns.

Exit status: 0 when nothing failed, 1 when a metric failed (one `error:` line each on stderr),
2 when the gate could not run (unknown revision, bad params, a metrics file that is not UTF-8 or
not JSON; one `error:` line).
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

from reprotune.core.atomic import write_json, write_text
from reprotune.core.errors import ReprotuneError, did_you_mean
from reprotune.core.nested import flatten
from reprotune.core.params import GateParams, GateRule, load_yaml

BUILTIN_DEFAULT = GateRule(max_drop=0.01, relative=False, lower_is_better=None)
GATE_RULES = TypeAdapter(dict[str, GateRule])

AUX_FILES = ("tokenize", "error_summary", "significance", "seeds")
COUNT_KEYS = {"support", "sentences", "examples", "seeds", "blocks", "masked_tokens"}
SPREAD_SUFFIXES = ("_std", "_stderr")
CI_LOW, CI_HIGH = "_ci_low", "_ci_high"
LOWER_BETTER_WORDS = ("loss", "perplexity")
AUX_LOWER_BETTER_WORDS = (*LOWER_BETTER_WORDS, "seconds", "runtime", "memory", "_mb", "bytes")
UNIT = (0.0, 1.0)
RANGES: dict[str, tuple[float | None, float | None]] = {
    "mcc": (-1.0, 1.0),
    "loss": (0.0, None),
    "perplexity": (1.0, None),
    "answered": UNIT,
}
UNIT_WORDS = ("f1", "precision", "recall", "accuracy", "exact_match")
UNIT_SUFFIXES = ("_f1", "_accuracy")  # macro_f1, token_accuracy, top_k_accuracy (not eval_precision: a string)
EPS = 1e-9
MISSING: Any = object()


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Malformed:
    """A metrics file whose top level is not an object: it holds no metric at all."""

    kind: str


Metrics = dict[str, Any]
Files = dict[tuple[str, str], Metrics | Malformed]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def known_range(metric: str, rule: GateRule | None) -> tuple[float | None, float | None] | None:
    """The valid range of a metric: the rule's `range`, else by the last part of its name."""
    if rule is not None and rule.range is not None:
        return rule.range
    leaf = metric.rsplit(".", 1)[-1].lower()
    if leaf in RANGES:
        return RANGES[leaf]
    if leaf in UNIT_WORDS or leaf.endswith(UNIT_SUFFIXES):
        return UNIT
    return None


def problem(value: Any, metric: str, rule: GateRule | None) -> str | None:
    """Why `value` is no valid value of `metric` (None when it is one)."""
    if value is MISSING:
        return "is missing"
    if value is None:
        return "is null, not a number"
    if isinstance(value, bool):
        return f"is {str(value).lower()}, not a number"
    if isinstance(value, str):
        return f"is the string {json.dumps(value[:40])}, not a number"
    if not is_number(value):
        return f"is a JSON {'array' if isinstance(value, list) else 'object'}, not a number"
    if not math.isfinite(value):
        return f"is {_fmt(value)}, not a finite number"
    bounds = known_range(metric, rule)
    if bounds and ((bounds[0] is not None and value < bounds[0]) or (bounds[1] is not None and value > bounds[1])):
        return f"= {value:g} is outside its range {_range_text(bounds)}"
    return None


def _range_text(bounds: tuple[float | None, float | None]) -> str:
    low, high = ("-inf" if bounds[0] is None else f"{bounds[0]:g}"), ("inf" if bounds[1] is None else f"{bounds[1]:g}")
    return f"[{low}, {high}]"


# --- reading -------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)


def _git_show(root: Path, spec: str) -> bytes:
    shown = subprocess.run(["git", "-C", str(root), "show", spec], capture_output=True)
    if shown.returncode != 0:
        raise ReprotuneError(f"git show {spec} failed: {shown.stderr.decode('utf-8', 'replace').strip()}")
    return shown.stdout


def default_revision(env: dict[str, str] | None = None) -> str:
    """The base branch of a GitHub pull request or GitLab merge request, else HEAD."""
    env = dict(os.environ) if env is None else env
    for var in ("GITHUB_BASE_REF", "CI_MERGE_REQUEST_TARGET_BRANCH_NAME"):
        if env.get(var):
            return f"origin/{env[var]}"
    return "HEAD"


def _decode(raw: bytes, where: str) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReprotuneError(f"{where} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReprotuneError(f"{where} is not valid JSON: {exc}") from exc


def _parse(raw: bytes, where: str) -> Metrics | Malformed:
    data = _decode(raw, where)
    if not isinstance(data, dict):
        return Malformed("array" if isinstance(data, list) else type(data).__name__.replace("NoneType", "null"))
    return flatten(data)


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


def read_workspace(metrics_dir: Path, metrics_rel: str = "metrics") -> Files:
    files: Files = {}
    if not metrics_dir.is_dir():
        return files
    for path in sorted(metrics_dir.rglob("*.json")):
        rel = PurePosixPath(path.relative_to(metrics_dir).as_posix())
        key = _file_key(rel)
        if key:
            files[key] = _parse(path.read_bytes(), f"{metrics_rel}/{rel}")
    return files


def verify_revision(root: Path, rev: str) -> str:
    """The commit `rev` names; one error line when it names none."""
    found = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if found.returncode != 0:
        hint = " (fetch it first, e.g. git fetch origin main)" if rev.startswith("origin/") else ""
        raise ReprotuneError(f"unknown revision '{rev}'{hint}")
    return found.stdout.strip()


def read_revision(root: Path, rev: str, metrics_rel: str) -> Files:
    verify_revision(root, rev)
    listing = _git(root, "ls-tree", "-r", "--name-only", rev, "--", metrics_rel)
    if listing.returncode != 0:
        raise ReprotuneError(f"git ls-tree {rev} failed: {listing.stderr.strip()}")
    files: Files = {}
    for name in listing.stdout.splitlines():
        key = _file_key(PurePosixPath(name).relative_to(metrics_rel))
        if key:
            files[key] = _parse(_git_show(root, f"{rev}:{name}"), f"{rev}:{name}")
    return files


def read_reference_file(root: Path, path: str) -> Files:
    """A pinned reference `{task: {method: metrics}}`, as committed at HEAD (an uncommitted edit
    must not move the bar)."""
    rel = PurePosixPath(path).as_posix()
    if _git(root, "cat-file", "-e", f"HEAD:{rel}").returncode != 0:
        raise ReprotuneError(
            f"params.yaml: 'gate.reference_file' {path} is not committed at HEAD; "
            "commit it so that the reference is reviewed"
        )
    data = _decode(_git_show(root, f"HEAD:{rel}"), f"HEAD:{rel}")
    shape = f"HEAD:{rel} must hold {{task: {{method: {{metric: value}}}}}} (reprotune-check --write-reference)"
    if not isinstance(data, dict) or not all(isinstance(methods, dict) for methods in data.values()):
        raise ReprotuneError(shape)
    files: Files = {}
    for task, methods in data.items():
        for method, values in methods.items():
            if not isinstance(values, dict):
                raise ReprotuneError(shape)
            files[(task, method)] = flatten(values)
    return files


def reference_snapshot(metrics_dir: Path) -> dict[str, dict[str, Any]]:
    """The workspace's quality metrics files as one document, for `--write-reference`."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(metrics_dir.glob("*/*.json")):
        task, method = path.parent.name, path.stem
        if is_quality(method):
            data = _decode(path.read_bytes(), f"{metrics_dir.name}/{task}/{path.name}")
            if isinstance(data, dict):
                out.setdefault(task, {})[method] = data
    return out


@dataclass
class Config:
    """What params.yaml says to the gate."""

    rules: dict[str, dict[str, GateRule]] = field(default_factory=dict)
    settings: GateParams = field(default_factory=GateParams)
    tasks: set[str] | None = None  # pipeline.tasks; None: params name none, every task is expected


def _explain(exc: ValidationError, where: str, model: type[GateRule] | type[GateParams], path: Path) -> ReprotuneError:
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    at = ".".join(str(p) for p in (where, *err["loc"]))
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(model.model_fields)
        msg = f"unknown key{did_you_mean(str(err['loc'][-1]), model.model_fields)}; allowed keys: {allowed}"
    else:
        msg = f"{err['msg']} (got {err.get('input')!r})"
    return ReprotuneError(f"{path}: '{at}': {msg}")


def read_config(params_path: Path) -> Config:
    """tasks.<task>.gate, the top-level gate section and pipeline.tasks of params.yaml, validated."""
    if not params_path.exists():
        return Config()
    try:
        data = load_yaml(params_path.read_bytes().decode("utf-8")) or {}  # as the stages read it (2e-5 a number)
    except UnicodeDecodeError as exc:
        raise ReprotuneError(f"{params_path} is not UTF-8 text") from exc
    except yaml.YAMLError as exc:
        raise ReprotuneError(f"{params_path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    data = data if isinstance(data, dict) else {}
    config = Config()
    tasks = data.get("tasks")
    for task, section in tasks.items() if isinstance(tasks, dict) else ():
        raw = section.get("gate") if isinstance(section, dict) else None
        if raw is None:
            continue
        try:
            config.rules[task] = GATE_RULES.validate_python(raw)
        except ValidationError as exc:
            raise _explain(exc, f"tasks.{task}.gate", GateRule, params_path) from exc
    try:
        config.settings = GateParams.model_validate(data.get("gate") or {})
    except ValidationError as exc:
        raise _explain(exc, "gate", GateParams, params_path) from exc
    pipeline = data.get("pipeline")
    named = pipeline.get("tasks") if isinstance(pipeline, dict) else None
    if isinstance(named, (dict, list)) and named:
        config.tasks = {str(name) for name in named}
    return config


def read_rules(params_path: Path) -> dict[str, dict[str, GateRule]]:
    """tasks.<task>.gate of params.yaml, validated; tasks without one map to {}."""
    return read_config(params_path).rules


# --- comparing -----------------------------------------------------------------------------


@dataclass
class Row:
    task: str
    method: str
    metric: str
    old: Any
    new: Any
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
    reference: bool = False

    @property
    def failures(self) -> list[Row]:
        return [row for row in self.rows if row.failed]


def _fmt(value: Any) -> str:
    if value is None or value is MISSING:
        return "–"
    if isinstance(value, bool) or not is_number(value):
        return json.dumps(value)[:20].replace("|", "\\|")
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"


def _is_interval(metric: str) -> bool:
    return metric.endswith(CI_LOW) or metric.endswith(CI_HIGH)


def _intervals(values: Metrics) -> dict[str, tuple[float, float]]:
    """X -> (X_ci_low, X_ci_high) where both are finite numbers in order."""
    out = {}
    for key, low in values.items():
        if not key.endswith(CI_LOW):
            continue
        high: Any = values.get(key[: -len(CI_LOW)] + CI_HIGH)
        if is_number(low) and is_number(high) and math.isfinite(low) and math.isfinite(high) and low <= high:
            out[key[: -len(CI_LOW)]] = (float(low), float(high))
    return out


def change_interval(
    old: float, new: float, old_ci: tuple[float, float], new_ci: tuple[float, float]
) -> tuple[float, float]:
    """MOVER interval of new - old from the two sides' intervals (independent estimates)."""
    change = new - old
    low = change - math.hypot(max(new - new_ci[0], 0.0), max(old_ci[1] - old, 0.0))
    high = change + math.hypot(max(new_ci[1] - new, 0.0), max(old - old_ci[0], 0.0))
    return low, high


def _report_only(metric: str, values: tuple[Any, ...]) -> bool:
    leaf = metric.rsplit(".", 1)[-1]
    numbers = [v for v in values if is_number(v)]
    return (
        leaf in COUNT_KEYS
        or leaf.endswith(SPREAD_SUFFIXES)
        or (bool(numbers) and all(isinstance(v, int) for v in numbers))
    )


def _is_gated(metric: str, rule: GateRule | None, values: tuple[Any, ...]) -> bool:
    """A rule with a max_drop, and no count or spread (a headline name stays gated when it is an integer)."""
    if rule is None or rule.max_drop is None:
        return False
    return not _report_only(metric, values) or known_range(metric, rule) is not None


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


def _named(rules: dict[str, GateRule], method: str, metric: str) -> bool:
    return f"{method}.{metric}" in rules or metric in rules


@dataclass
class Side:
    """Where the old values come from: the revision, or the pinned reference."""

    label: str
    reference: bool = False

    def since(self) -> str:
        return f" since the pinned reference {self.label}" if self.reference else ""


def compare_metric(
    task: str,
    method: str,
    metric: str,
    old: Any,
    new: Any,
    rule: GateRule | None,
    quality: bool,
    old_ci: tuple[float, float] | None = None,
    new_ci: tuple[float, float] | None = None,
    side: Side | None = None,
    where: str | None = None,
) -> Row:
    side = side or Side("HEAD")
    where = where or f"metrics/{task}/{method}.json"
    name = f"{task}/{method}.{metric}"
    row = Row(task, method, metric, old, new, "unchanged", old_ci=old_ci, new_ci=new_ci)
    gated = _is_gated(metric, rule, (old, new))
    new_problem, old_problem = problem(new, metric, rule), problem(old, metric, rule)
    if gated and new_problem and not (new is MISSING and old is MISSING):
        row.failed = True
        row.verdict = "**FAIL**: " + ("missing" if new is MISSING else "not a valid value")
        at = f" ({_fmt(old)} at {side.label})" if new is MISSING and is_number(old) else ""
        row.error = f"error: {where}: {metric} {new_problem}{at}"
        return row
    if old is MISSING or new is MISSING:
        row.verdict = "new" if old is MISSING else "removed"
        return row
    if gated and old_problem:
        row.verdict = f"not compared: the value at {side.label} {old_problem}"
        row.warning = f"warning: {name}: the value at {side.label} {old_problem}; {_fmt(new)} is checked on its own"
        return row
    if not (is_number(old) and is_number(new)):
        row.verdict = "unchanged" if old == new else "changed (not a number)"
        return row
    if old == new or (math.isnan(old) and math.isnan(new)):
        return row
    lower = _lower_is_better(metric, quality, rule)
    drop = (new - old if lower else old - new) if not math.isnan(new) else math.inf
    if math.isnan(old) or drop <= 0:
        row.verdict = "improved" if not math.isnan(old) else "changed"
        return row
    if not gated:
        row.verdict = "worse (not gated)"
        return row
    assert rule is not None and rule.max_drop is not None
    allowed = rule.max_drop * abs(old) if rule.relative else rule.max_drop
    allowed_text = _fmt(allowed) + (f" ({rule.max_drop:g} of {_fmt(old)})" if rule.relative else "")
    verb, sign = ("rose", "+") if lower else ("fell", "-")
    interval = change_interval(old, new, old_ci, new_ci) if old_ci and new_ci else None
    real = interval is not None and (interval[0] > 0 if lower else interval[1] < 0)
    noise = "" if interval is None else (", outside noise" if real else ", within noise")
    moved = f"{verb} from {_fmt(old)} to {_fmt(new)} ({sign}{_fmt(drop)}){side.since()}"
    if drop > allowed + EPS:
        row.failed = True
        row.verdict = "**FAIL**: beyond tolerance" + noise
        row.error = f"error: {name} {moved}, more than the allowed {allowed_text}"
        return row
    row.verdict = f"within tolerance ({allowed_text})"
    if interval is None:
        return row
    worst = interval[1] if lower else -interval[0]
    unshown = worst > allowed + EPS
    if not (real or unshown):
        return row
    span = f"[{interval[0]:+.4f}, {interval[1]:+.4f}]"
    reasons = []
    if real:
        reasons.append("it excludes 0 (a real drop)")
    if unshown:
        reasons.append(f"it reaches past {sign}{_fmt(allowed)} (the test set cannot show the drop is within tolerance)")
    row.verdict = f"warn: within tolerance ({allowed_text}), change in {span}" + noise
    row.warning = f"warning: {name} {moved}, within the allowed {allowed_text}; the interval of the change {span}: " + (
        " and ".join(reasons)
    )
    return row


def _gated_metrics(values: Metrics, rules: dict[str, GateRule], method: str) -> list[str]:
    out = []
    for metric, value in sorted(values.items()):
        rule = _rule_for(rules, method, metric, is_quality(method))
        if _is_interval(metric) or not _is_gated(metric, rule, (value,)):
            continue
        if is_number(value) or _named(rules, method, metric) or known_range(metric, rule):
            out.append(metric)
    return out


def _check_rule_names(task: str, task_rules: dict[str, GateRule], files: list[Metrics], methods: set[str]) -> None:
    known = {metric for values in files for metric in values}
    for key in task_rules:
        if key == "default":
            continue
        bare = key.split(".", 1)[1] if key.split(".", 1)[0] in methods and "." in key else key
        if bare not in known:
            raise ReprotuneError(
                f"params.yaml: 'tasks.{task}.gate.{key}' names no metric of {task}{did_you_mean(bare, known)}"
            )


def compare(
    old_files: Files,
    new_files: Files,
    rules: dict[str, dict[str, GateRule]],
    rev: str,
    include_cost: bool = False,
    show_all: bool = False,
    expected: set[str] | None = None,
    metrics_rel: str = "metrics",
    reference: bool = False,
    already: set[tuple[str, str, str]] | None = None,
) -> Report:
    """Rows for every moved metric of `new_files` against `old_files` (the revision, or with
    `reference` the pinned reference; `already` holds what the revision pass failed on, so a
    missing or invalid metric gives one line, not two)."""
    report = Report(rev, reference=reference)
    side = Side(rev, reference)
    already = already if already is not None else set()
    old_tasks = {task for task, _ in old_files}
    new_tasks = {task for task, _ in new_files}

    def fail(row: Row, error: str) -> None:
        row.failed, row.error = True, error
        report.rows.append(row)

    for task in sorted(old_tasks | new_tasks):
        task_rules = rules.get(task, {})
        methods = {m for t, m in (*old_files, *new_files) if t == task}
        if not reference:
            dicts = [v for (t, _), v in (*old_files.items(), *new_files.items()) if t == task and isinstance(v, dict)]
            _check_rule_names(task, task_rules, dicts, methods)
        if task not in new_tasks:
            held = sorted(
                f"{m}.json"
                for (t, m), v in old_files.items()
                if t == task and isinstance(v, dict) and is_quality(m) and _gated_metrics(v, task_rules, m)
            )
            row = Row(task, "–", "–", None, None, "removed task")
            if expected is not None and task not in expected:
                row.verdict = "removed task (not in pipeline.tasks)"
                report.rows.append(row)
            elif not held:
                report.rows.append(row)
            elif (task, "", "") not in already:
                row.verdict = "**FAIL**: removed task"
                already.add((task, "", ""))
                fail(
                    row,
                    f"error: {metrics_rel}/{task}/ is missing (at {rev} it held {', '.join(held)}); to retire a task, "
                    "take it out of pipeline.tasks",
                )
            continue
        if task not in old_tasks:
            report.rows.append(Row(task, "–", "–", None, None, "new task" + (" (not pinned)" if reference else "")))
        for method in sorted(methods):
            quality = is_quality(method)
            if not quality and not include_cost:
                continue
            old, new = old_files.get((task, method)), new_files.get((task, method))
            where = f"{metrics_rel}/{task}/{method}.json"
            old_values = old if isinstance(old, dict) else {}
            if isinstance(new, Malformed):
                if (task, method, "") not in already:
                    already.add((task, method, ""))
                    fail(
                        Row(task, method, "–", None, None, "**FAIL**: not an object"),
                        f"error: {where}: the top level is a JSON {new.kind}, not an object of metrics",
                    )
                continue
            if new is None:
                held = _gated_metrics(old_values, task_rules, method)
                if held and (task, method, "") not in already:
                    already.add((task, method, ""))
                    fail(
                        Row(task, method, "–", None, None, "**FAIL**: removed"),
                        f"error: {where} is missing (at {rev} it held {', '.join(held)})",
                    )
                elif not held and task in old_tasks:
                    report.rows.append(Row(task, method, "–", None, None, "removed"))
                continue
            if old is None and task in old_tasks:
                report.rows.append(Row(task, method, "–", None, None, "new"))
            old_ci, new_ci = _intervals(old_values), _intervals(new)
            for metric in sorted(set(old_values) | set(new)):
                if _is_interval(metric):
                    continue
                rule = _rule_for(task_rules, method, metric, quality)
                o, n = old_values.get(metric, MISSING), new.get(metric, MISSING)
                if not (
                    is_number(o) or is_number(n) or _named(task_rules, method, metric) or known_range(metric, rule)
                ):
                    continue
                if old is None and problem(n, metric, rule) is None:
                    continue  # a new file: only its invalid values are rows
                if (task, method, metric) in already:
                    continue
                row = compare_metric(
                    task, method, metric, o, n, rule, quality, old_ci.get(metric), new_ci.get(metric), side, where
                )
                if old is None and not row.failed:
                    continue
                if row.failed and not row.verdict.startswith("**FAIL**: beyond"):
                    already.add((task, method, metric))
                if row.verdict != "unchanged" or show_all:
                    report.rows.append(row)
    return report


def _with_ci(value: Any, ci: tuple[float, float] | None) -> str:
    return _fmt(value) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "")


def _change(row: Row) -> str:
    if not (is_number(row.old) and is_number(row.new)) or not math.isfinite(row.old) or not math.isfinite(row.new):
        return "–"
    delta = row.new - row.old
    text = f"{delta:+.4f}" if not (isinstance(row.old, int) and isinstance(row.new, int)) else f"{delta:+d}"
    return text + (f" ({delta / abs(row.old):+.1%})" if row.old else "")


def to_markdown(report: Report) -> str:
    failures = len(report.failures)
    head = ("**against the pinned reference**" if report.reference else "**reprotune-check** against") + (
        f" `{report.rev}`: "
    )
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
        description="Compare the workspace metrics with a git revision (and the pinned reference, gate.reference "
        "in params.yaml); fail when a quality metric is missing, not a valid number, or dropped by more than its "
        "tolerance (tasks.<task>.gate in params.yaml).",
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
    parser.add_argument(
        "--write-reference",
        metavar="FILE",
        help="write the workspace's quality metrics to FILE (commit it and set gate.reference_file: FILE) and exit",
    )
    return parser


def _reference(root: Path, settings: GateParams, rev: str, metrics_rel: str) -> tuple[str, Files | None] | None:
    """(label, files) of the pinned reference; files None when it is the revision itself."""
    if settings.reference_file:
        return settings.reference_file, read_reference_file(root, settings.reference_file)
    if settings.reference:
        try:
            commit = verify_revision(root, settings.reference)
        except ReprotuneError as exc:
            raise ReprotuneError(f"params.yaml: 'gate.reference': {exc}") from exc
        if commit == verify_revision(root, rev):
            return settings.reference, None
        return settings.reference, read_revision(root, settings.reference, metrics_rel)
    return None


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rev = args.rev or default_revision()
    try:
        metrics_dir = Path(args.metrics_dir).resolve()
        if args.write_reference:
            snapshot = reference_snapshot(metrics_dir)
            if not snapshot:
                raise ReprotuneError(f"no quality metrics under {args.metrics_dir} to write")
            write_json(args.write_reference, snapshot)
            print(f"wrote {args.write_reference}: {len(snapshot)} tasks; commit it and set gate.reference_file")
            return 0
        top = _git(Path.cwd(), "rev-parse", "--show-toplevel")
        if top.returncode != 0:
            raise ReprotuneError("not inside a git repository")
        root = Path(top.stdout.strip()).resolve()
        try:
            metrics_rel = metrics_dir.relative_to(root).as_posix()
        except ValueError as exc:
            raise ReprotuneError(f"{args.metrics_dir} is outside the git repository {root}") from exc
        config = read_config(Path(args.params))
        old = read_revision(root, rev, metrics_rel)
        new = read_workspace(metrics_dir, metrics_rel)
        pinned = _reference(root, config.settings, rev, metrics_rel)
        if not old and not new:
            raise ReprotuneError(f"no metrics under {args.metrics_dir} in the workspace nor at {rev}")
        options: dict[str, Any] = {"include_cost": args.include_cost, "metrics_rel": metrics_rel}
        already: set[tuple[str, str, str]] = set()
        reports = [
            compare(old, new, config.rules, rev, show_all=args.all, expected=config.tasks, already=already, **options)
        ]
        note = ""
        if pinned is not None and pinned[1] is None:
            note = f"\nThe pinned reference `{pinned[0]}` is `{rev}` itself: compared once.\n"
        elif pinned is not None and pinned[1] is not None:
            reports.append(
                compare(
                    pinned[1],
                    new,
                    config.rules,
                    pinned[0],
                    expected=config.tasks,
                    reference=True,
                    already=already,
                    **options,
                )
            )
    except (ReprotuneError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    markdown = "\n".join(to_markdown(report) for report in reports) + note
    sys.stdout.write(markdown)
    if args.md:
        try:
            write_text(args.md, markdown)
        except OSError as exc:
            print(f"error: cannot write {args.md}: {exc}", file=sys.stderr)
            return 2
    rows = [row for report in reports for row in report.rows]
    for row in rows:
        if row.warning:
            print(row.warning, file=sys.stderr)
    failures = [row for row in rows if row.failed]
    for row in failures:
        print(row.error, file=sys.stderr)
    return 1 if failures else 0


def console() -> None:
    sys.exit(run())


if __name__ == "__main__":
    console()
