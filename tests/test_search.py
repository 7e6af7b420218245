"""The search stages (reprotune/training/search.py): Optuna trials on validation, chosen
settings the train stage trains, a budget shared by workers, resumption, collapse, and the
LoRA variants the search can vary. Tiny models; the scratch project of tests/scratch.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from e2e import dry_run_stages, run, set_param, stage_env

from reprotune.core.errors import ReprotuneError
from reprotune.core.params import LoraTrainParams, SearchParams

GRID_LR = [1e-6, 3e-4, 2e-2]
"""On the tiny NER task: 2e-2 reaches the lowest validation loss by predicting O everywhere."""


def scratch_copy(scratch_reproduced: tuple[Path, dict], tmp_path: Path) -> Path:
    return Path(shutil.copytree(scratch_reproduced[0], tmp_path / "repo", symlinks=True))


def enable_grid(repo: Path, method: str = "full", values: list[float] | None = None, trials: int = 3) -> None:
    """A grid over learning rates, selected by validation loss (continuous, so the trials differ)."""
    set_param(
        repo,
        "tasks.t.search",
        {
            "enabled": True,
            "trials": trials,
            "sampler": "grid",
            "pruner": "none",
            "full": {"learning_rate": values or GRID_LR},
            "lora": {"learning_rate": values or GRID_LR},
        },
    )
    set_param(repo, f"tasks.t.train_{method}.metric_for_best_model", "loss")


def read(repo: Path, name: str) -> Any:
    return json.loads((repo / "metrics" / "t" / name).read_text())


def test_grid_search_picks_the_better_validation_score_and_train_trains_it(
    scratch_reproduced: tuple[Path, dict], tmp_path: Path
) -> None:
    """Enabling the search stales the search stages only; repro runs the grid, the lower
    validation loss wins, and the train stage's best validation loss is that trial's."""
    repo = scratch_copy(scratch_reproduced, tmp_path)
    set_param(repo, "tasks.t.search", {"enabled": False, "lora": {"r": [4]}})
    assert dry_run_stages(repo) == {"search-full@t", "search-lora@t"}
    enable_grid(repo, "full")
    assert dry_run_stages(repo) == {"search-full@t", "search-lora@t", "train-full@t"}
    run(repo, "dvc", "repro", "train-full@t")
    summary, trials = read(repo, "search-full.json"), read(repo, "search-full/trials.json")
    assert summary["enabled"] and summary["trials"] == 3
    assert sorted(row["learning_rate"] for row in trials) == sorted(GRID_LR)
    state = {row["learning_rate"]: row["state"] for row in trials}
    values = {row["learning_rate"]: row["value"] for row in trials}
    assert state[2e-2] == "collapsed" and values[2e-2] < min(values[1e-6], values[3e-4])  # best loss, all O
    assert state[1e-6] == state[3e-4] == "complete" and values[1e-6] != values[3e-4]
    best_lr = min((1e-6, 3e-4), key=lambda lr: values[lr])
    assert summary["chosen"] == {"learning_rate": best_lr} and summary["collapsed"] == 1
    assert [row["chosen"] for row in trials] == [row["learning_rate"] == best_lr for row in trials]
    info = json.loads((repo / "models" / "t" / "full" / "train_info.json").read_text())
    assert info["search_overrides"] == {"learning_rate": best_lr}
    assert info["best_checkpoint_metric"] == pytest.approx(summary["best_value"], rel=1e-6)
    # The search and train stages are up to date (the journal lives outside every out);
    # only what follows the new model waits for repro.
    stale = dry_run_stages(repo)
    assert "evaluate-full@t" in stale and not stale & {"search-full@t", "train-full@t", "train-lora@t"}


def run_search(repo: Path, method: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from reprotune import tasks
    from reprotune.training.search import search

    monkeypatch.chdir(repo)
    return search("t", method, tasks.load_task("t", f"search-{method}"))


def test_search_never_reads_the_test_split(
    scratch_reproduced: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = scratch_copy(scratch_reproduced, tmp_path)
    enable_grid(repo, "lora", values=[1e-3], trials=1)
    for stage in ("raw", "tokenized"):
        shutil.rmtree(repo / "data" / "t" / stage / "test")
    result = run_search(repo, "lora", monkeypatch)
    assert result["summary"]["trials"] == 1 and result["summary"]["complete"] == 1


def test_killed_search_resumes_without_rerunning_finished_trials(
    scratch_reproduced: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reprotune.training.search as search_module

    repo = scratch_copy(scratch_reproduced, tmp_path)
    enable_grid(repo, "full", values=[1e-6, 1e-3, 2e-2], trials=3)
    real_fit = search_module.fit
    calls: list[float] = []

    def fit_then_die(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[3].learning_rate)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process is stopped during its second trial
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(search_module, "fit", fit_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_search(repo, "full", monkeypatch)
    first = calls[0]
    calls.clear()
    monkeypatch.setattr(search_module, "fit", lambda *a, **k: (calls.append(a[3].learning_rate), real_fit(*a, **k))[1])
    result = run_search(repo, "full", monkeypatch)
    assert len(calls) == 2 and first not in calls  # the finished trial is read back, not rerun
    assert sorted(row["learning_rate"] for row in result["trials"]) == [1e-6, 1e-3, 2e-2]
    assert len(result["trials"]) == 3 and {row["state"] for row in result["trials"]} <= {"complete", "collapsed"}


def test_two_workers_share_one_budget_and_the_stage_agrees_with_one_process(
    scratch_reproduced: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = [1e-6, 1e-4, 1e-3, 2e-2]
    shared = scratch_copy(scratch_reproduced, tmp_path / "shared")
    enable_grid(shared, "full", values=grid, trials=4)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "reprotune.commands.search", "worker", "t", "full"],
            cwd=shared,
            env=stage_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), outputs
    ran = [int(json.loads(out.strip().splitlines()[-1])["ran"]) for out, _ in outputs]
    assert sum(ran) == 4 and all(n >= 1 for n in ran), ran  # both worked, the budget is met exactly
    import reprotune.training.search as search_module

    calls: list[Any] = []
    monkeypatch.setattr(search_module, "fit", lambda *a, **k: calls.append(a))
    together = run_search(shared, "full", monkeypatch)
    assert calls == []  # the stage reads the finished study
    assert sorted(row["trial"] for row in together["trials"]) == [0, 1, 2, 3]
    assert sorted(row["learning_rate"] for row in together["trials"]) == grid  # no grid point twice

    monkeypatch.undo()
    alone = scratch_copy(scratch_reproduced, tmp_path / "alone")
    enable_grid(alone, "full", values=grid, trials=4)
    single = run_search(alone, "full", monkeypatch)
    by_lr = {row["learning_rate"]: row["value"] for row in single["trials"]}
    assert {row["learning_rate"]: row["value"] for row in together["trials"]} == pytest.approx(by_lr)
    assert together["summary"]["chosen"] == single["summary"]["chosen"]


# -- units: choice, collapse, space checks, LoRA variants -------------------------------


def frozen(number: int, value: float | None, outcome: str, lr: float) -> Any:
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    state = {"pruned": TrialState.PRUNED, "failed": TrialState.FAIL}.get(outcome, TrialState.COMPLETE)
    trial = optuna.trial.create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params={"learning_rate": lr},
        distributions={"learning_rate": FloatDistribution(1e-6, 1.0)},
        user_attrs={"outcome": outcome, "seconds": 1.5},
        intermediate_values={0: value} if value is not None else {},
    )
    trial.number = number
    return trial


def test_a_collapsed_trial_is_never_chosen() -> None:
    from reprotune.training.search import SearchContext, summarise

    ctx = SearchContext("t", "lora", None, SearchParams(), LoraTrainParams(), "s", "f1", True)  # type: ignore[arg-type]
    trials = [
        frozen(0, 0.40, "complete", 1e-3),
        frozen(1, 0.90, "collapsed", 5e-3),
        frozen(2, 0.95, "pruned", 2e-3),
        frozen(3, None, "failed", 1e-2),
    ]
    result = summarise(ctx, trials)
    assert result["summary"]["chosen"] == {"learning_rate": 1e-3}
    assert result["summary"]["collapsed"] == 1 and result["summary"]["pruned"] == 1
    assert result["cost"]["search_seconds"] == 6.0
    only_collapsed = summarise(ctx, [frozen(0, 0.9, "collapsed", 1e-3)])
    assert only_collapsed["summary"]["chosen"] == {} and only_collapsed["summary"]["best_trial"] is None


def test_constant_predictions_are_named_a_collapse() -> None:
    from transformers import EvalPrediction

    from reprotune.training.search import constant_prediction

    labels = np.array([[0, 1, -100], [2, 0, -100]])
    all_o = np.zeros((2, 3, 3))
    all_o[..., 0] = 1.0
    assert constant_prediction(EvalPrediction(all_o, labels)) == "predicts only label 0"
    varied = np.eye(3)[[[0, 1, 2], [2, 0, 1]]]
    assert constant_prediction(EvalPrediction(varied, labels)) is None
    assert constant_prediction(EvalPrediction((all_o, all_o), labels)) is None  # QA spans: not judged


def test_masked_lm_validation_rows_are_not_read_as_a_collapse() -> None:
    """Masked-LM's validation pass returns one (loss sum, masked tokens) row per block with the
    counts as its "labels" (tasks/mlm/family.py: masked_only_trainer): not scores per label, so
    never a collapse. The search on a real set marked all 16 trials collapsed before."""
    from transformers import EvalPrediction

    from reprotune.tasks.mlm.family import IGNORE, block_loss_stats
    from reprotune.training.search import constant_prediction

    generator = torch.Generator().manual_seed(0)
    labels = torch.full((6, 16), IGNORE)
    labels[:, ::3] = torch.randint(0, 50, (6, 6), generator=generator)
    labels[0, 1] = 7  # blocks with different numbers of masked tokens
    stats = block_loss_stats(torch.randn(6, 16, 50, generator=generator), labels)
    assert stats[:, 0].gt(stats[:, 1]).all()  # losses above counts: argmax would say "label 0" everywhere
    assert constant_prediction(EvalPrediction(stats.numpy(), stats[:, 1].numpy())) is None


def test_search_space_keys_and_grid_ranges_are_checked() -> None:
    from reprotune.core.params import TrainParams
    from reprotune.training.search import check_space

    with pytest.raises(ReprotuneError, match=r"'tasks.t.search.full.lr' is not a key of train_full.*learning_rate"):
        check_space("t", "full", SearchParams(full={"lr": [1e-3]}), TrainParams())
    ranged = SearchParams.model_validate({"sampler": "grid", "full": {"learning_rate": {"low": 1e-5, "high": 1e-3}}})
    with pytest.raises(ReprotuneError, match="grid sampler tries lists only"):
        check_space("t", "full", ranged, TrainParams())
    capped = SearchParams.model_validate({"max_epochs": 2, "full": {"epochs": [1, 3]}})
    with pytest.raises(ReprotuneError, match="caps both methods at 2"):
        check_space("t", "full", capped, TrainParams())


def tiny_classifier() -> Any:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=3
    )
    return BertForSequenceClassification(config)


def lora(**keys: Any) -> Any:
    from reprotune.training.lora import apply_lora

    params = LoraTrainParams.model_validate({"r": 4, "alpha": 8, **keys})
    return apply_lora(tiny_classifier(), params, "SEQ_CLS", ("classifier",), "tasks.t.train_lora"), params


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"use_rslora": True}, {"use_rslora": True}),
        ({"use_dora": True}, {"use_dora": True}),
        ({"init_lora_weights": "gaussian"}, {"init_lora_weights": "gaussian"}),
        ({"bias": "lora_only"}, {"bias": "lora_only"}),
        ({}, {"init_lora_weights": True, "use_dora": False, "use_rslora": False}),
    ],
)
def test_every_lora_variant_reaches_the_lora_config(keys: dict[str, Any], expected: dict[str, Any]) -> None:
    model, _ = lora(**keys)
    config = model.peft_config["default"]
    assert {key: getattr(config, key) for key in expected} == expected


def test_loraplus_and_head_learning_rate_reach_the_optimizer(tmp_path: Path) -> None:
    from transformers import TrainingArguments

    from reprotune.training.lora import lora_optimizer

    model, params = lora(learning_rate=1e-3, loraplus_lr_ratio=16, head_learning_rate=5e-3, weight_decay=0.01)
    args = TrainingArguments(output_dir=str(tmp_path), optim="adamw_torch", use_cpu=True, report_to="none")
    optimizer = lora_optimizer(model, params, args)
    names = {id(p): name for name, p in model.named_parameters()}
    lr_of = {names[id(p)]: group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert set(lr_of) == {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(lr == 1e-3 for name, lr in lr_of.items() if "lora_A" in name)
    assert all(lr == 16e-3 for name, lr in lr_of.items() if "lora_B" in name)
    head = [lr for name, lr in lr_of.items() if "modules_to_save" in name]
    assert head and all(lr == 5e-3 for lr in head)
    plain, plain_params = lora()
    assert lora_optimizer(plain, plain_params, args) is None  # neither set: the Trainer's own optimizer


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_base_changing_inits_are_refused_with_a_head(init: str) -> None:
    with pytest.raises(ReprotuneError, match=f"init_lora_weights: {init} rewrites the base weights"):
        lora(init_lora_weights=init)


def test_a_combination_peft_refuses_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """peft checks combinations in LoraConfig/get_peft_model (e.g. DoRA with lora_bias); none
    of the keys reprotune exposes trips one in peft 0.21, so peft's refusal is simulated."""
    import peft

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("The argument lora_bias=True is not supported for DoRA, please pass use_dora=False")

    monkeypatch.setattr(peft, "get_peft_model", refuse)
    with pytest.raises(
        ReprotuneError, match=r"tasks.t.train_lora: peft does not support .*use_dora=True.*DoRA"
    ) as info:
        lora(use_dora=True)
    assert "\n" not in str(info.value)


def test_report_states_how_each_method_was_tuned_and_warns_on_unequal_budgets(tmp_path: Path) -> None:
    from reprotune.reporting.tuning import tuning_lines

    task = tmp_path / "t"
    (task / "search-lora").mkdir(parents=True)
    for method, budget in (("full", 4), ("lora", 8)):
        summary = {"enabled": True, "budget": budget, "trials": budget, "pruned": 1, "collapsed": 0, "failed": 0}
        summary |= {"metric": "f1", "best_value": 0.5, "best_trial": 2, "chosen": {"learning_rate": 1e-3}}
        (task / f"search-{method}.json").write_text(json.dumps({**summary, "max_epochs": 3.0}))
        (task / f"search-{method}-cost.json").write_text(json.dumps({"search_seconds": 120.0}))
    rows = [{"trial": 1, "state": "collapsed", "note": "predicts only label 0"}]
    (task / "search-lora" / "trials.json").write_text(json.dumps(rows))
    text = "\n".join(tuning_lines(tmp_path, "t"))
    assert "| lora | 8 of 8 | 1 | 0 | 0 | learning_rate = 0.001 | f1 0.5 (trial 2) | 2.0 min |" in text
    assert "budgets differ" in text and "trial 1: predicts only label 0" in text
    for method in ("full", "lora"):
        (task / f"search-{method}.json").write_text(json.dumps({"enabled": False, "chosen": {}}))
    assert "search.enabled=true" in "\n".join(tuning_lines(tmp_path, "t"))
