"""Tune a method on validation with Optuna before the train stage trains it.

Each trial is one run of the train stage's own path (`train.fit`) with sampled values for
the keys of `tasks.T.search.<method>`, scored by the validation metric that checkpoint
selection uses (the best checkpoint's value). Optuna does the rest: samplers (TPE, random,
grid), pruning from per-epoch validation scores, and the storage that holds the trials, a
journal file in the project by default or any Optuna storage URL that several workers
share (`reprotune-search worker`). The test split is never loaded (`train.prepare`).

A trial whose best checkpoint predicts one label everywhere, or whose loss went non-finite,
is recorded as collapsed and never chosen. The budget counts trials that finished
(complete, pruned, collapsed or failed); a trial killed half way counts for nothing and
runs again on the next start, while finished ones are read back, not rerun.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reprotune.core import paths
from reprotune.core.atomic import pid_alive
from reprotune.core.errors import ReprotuneError, did_you_mean
from reprotune.core.params import LoraTrainParams, SearchParams, SearchRange, TaskParams, TrainParams
from reprotune.training.train import Prepared, fit, method_params, prepare, selection_metric, with_overrides

DEFAULT_STORAGE_DIR = Path(".reprotune") / "search"
"""Where the default journal storage lives: in the project, outside git and every DVC out,
so a killed search resumes and a changed budget extends the same study."""

OUTCOME = "outcome"
"""User attribute every finished trial carries: complete, collapsed, pruned, failed or surplus.
A trial in state FAIL without it was interrupted (killed, or stale in a shared storage)."""

COUNTED = ("complete", "collapsed", "pruned", "failed")
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class SearchContext:
    """One method's search of one task: what a worker needs to run trials."""

    task_name: str
    method: str
    task: TaskParams
    search: SearchParams
    base: TrainParams
    study_name: str
    metric: str
    greater: bool

    @property
    def section(self) -> str:
        return f"tasks.{self.task_name}.search.{self.method}"

    @property
    def budget(self) -> int:
        return self.search.budget(self.method)


def context(task_name: str, method: str, task: TaskParams, prepared_meta_digest: str) -> SearchContext:
    """Check the search space against the train section and name the study after everything
    a trial's result depends on (params, data, code), so a change starts a new study."""
    from reprotune import tasks

    search = task.search
    base = method_params(task, method)
    check_space(task_name, method, search, base)
    family = tasks.family(task.type)
    metric, greater = selection_metric(base, family)
    identity = {
        "task": task_name,
        "method": method,
        "type": task.type,
        "model": task.model.model_dump(mode="json"),
        "base": base.model_dump(mode="json"),
        "space": {key: space_value(value) for key, value in search.space(method).items()},
        "sampler": search.sampler,
        "seed": search.seed,
        "pruner": search.pruner,
        "data": prepared_meta_digest,
        "code": code_digest(),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return SearchContext(task_name, method, task, search, base, f"{task_name}-{method}-{digest}", metric, greater)


def space_value(value: list[Any] | SearchRange) -> Any:
    return value.model_dump(mode="json") if isinstance(value, SearchRange) else value


def check_space(task_name: str, method: str, search: SearchParams, base: TrainParams) -> None:
    """Every searched key is a key of the method's train section; grid takes lists only;
    the epoch cap holds for every value a trial could use."""
    where = f"tasks.{task_name}.search.{method}"
    space = search.space(method)
    allowed = sorted(type(base).model_fields)
    for key, value in space.items():
        if key not in allowed:
            section = "train_lora" if isinstance(base, LoraTrainParams) else "train_full"
            raise ReprotuneError(
                f"params.yaml: '{where}.{key}' is not a key of {section}{did_you_mean(key, allowed)}; "
                f"searchable: {', '.join(allowed)}"
            )
        if search.sampler == "grid" and not isinstance(value, list):
            raise ReprotuneError(
                f"params.yaml: '{where}.{key}' is a range, but the grid sampler tries lists only; "
                "give a list of values or use sampler: tpe"
            )
    if search.max_epochs is not None:
        epochs = space.get("epochs", [base.epochs])
        highest = epochs.high if isinstance(epochs, SearchRange) else max(float(e) for e in epochs)
        if highest > search.max_epochs:
            raise ReprotuneError(
                f"params.yaml: '{where}' can train {highest:g} epochs but "
                f"'tasks.{task_name}.search.max_epochs' caps both methods at {search.max_epochs:g}"
            )


def code_digest(root: Path = Path("reprotune")) -> str:
    """The package's source: a code change starts a new study instead of reusing old trials."""
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        digest.update(file.as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def data_digest(task_name: str) -> str:
    """The tokenized train/validation splits and meta, by the digests the tokenize stage stores."""
    digest = hashlib.sha256()
    tokenized = paths.tokenized_dir(task_name)
    for name in ("meta.json", "train/state.json", "validation/state.json"):
        file = tokenized / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


# -- storage and sampling ---------------------------------------------------------------


def open_storage(search: SearchParams, task_name: str) -> Any:
    """An RDB storage for a URL (with heartbeats, so a dead worker's trial is freed), else a
    journal file, the project's own by default."""
    import optuna

    target = search.storage
    if target is not None and "://" in target:
        try:
            return optuna.storages.RDBStorage(target, heartbeat_interval=60, grace_period=180)
        except Exception as exc:  # noqa: BLE001 (SQLAlchemy raises many kinds)
            raise ReprotuneError(
                f"tasks.{task_name}.search.storage: cannot open '{target}': {str(exc).splitlines()[0]}"
            ) from exc
    path = Path(target) if target is not None else DEFAULT_STORAGE_DIR / f"{task_name}.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path)))


def make_sampler(ctx: SearchContext, offset: int) -> Any:
    """A sampler seeded by the search seed and the trials so far, so a resumed search or a
    second worker draws what one uninterrupted process would have."""
    import optuna

    seed = (ctx.search.seed + offset) % 2**32
    if ctx.search.sampler == "grid":
        grid = {key: list(value) for key, value in ctx.search.space(ctx.method).items() if isinstance(value, list)}
        return optuna.samplers.GridSampler(grid, seed=ctx.search.seed)
    if ctx.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, ctx.budget // 2)))


def make_pruner(ctx: SearchContext) -> Any:
    import optuna

    if ctx.search.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


def load_study(ctx: SearchContext, storage: Any, offset: int = 0) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=ctx.study_name,
        storage=storage,
        sampler=make_sampler(ctx, offset),
        pruner=make_pruner(ctx),
        direction="maximize" if ctx.greater else "minimize",
        load_if_exists=True,
    )


def suggest(trial: Any, ctx: SearchContext) -> dict[str, Any]:
    """The trial's values for the searched keys: lists are categorical, ranges are int when
    the train key is an int, else float."""
    values: dict[str, Any] = {}
    fields = type(ctx.base).model_fields
    for key, space in ctx.search.space(ctx.method).items():
        if isinstance(space, list):
            choices = [json.dumps(c) if isinstance(c, (list, dict)) else c for c in space]
            picked = trial.suggest_categorical(key, choices)
            values[key] = json.loads(picked) if isinstance(picked, str) and picked[:1] in "[{" else picked
        elif fields[key].annotation in (int, "int"):
            values[key] = trial.suggest_int(
                key, int(space.low), int(space.high), log=space.log, step=int(space.step or 1)
            )
        else:
            values[key] = trial.suggest_float(key, space.low, space.high, log=space.log, step=space.step)
    return values


# -- trial bookkeeping -----------------------------------------------------------------


def outcome(trial: Any) -> str | None:
    return trial.user_attrs.get(OUTCOME)


def counted(trials: list[Any]) -> list[Any]:
    """Finished trials in the order they were created: what the budget counts."""
    return sorted((t for t in trials if outcome(t) in COUNTED), key=lambda t: t.number)


def running(trials: list[Any]) -> list[Any]:
    from optuna.trial import TrialState

    return [t for t in trials if t.state == TrialState.RUNNING]


def tell(study: Any, trial: Any, *args: Any, **kwargs: Any) -> None:
    """`study.tell`, where the grid sampler's request to stop once the grid is covered (which
    Optuna allows only inside `optimize`) is not an error: the trial is recorded already."""
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def reap_dead_workers(study: Any) -> int:
    """Trials left RUNNING by a process of this machine that no longer exists (a killed
    search) are marked interrupted, so they run again and count for nothing."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    reaped = 0
    for trial in running(study.get_trials(deepcopy=False)):
        owner = str(trial.user_attrs.get("worker", ""))
        name, _, pid = owner.rpartition(":")
        if name == host and pid.isdigit() and not pid_alive(int(pid)):
            tell(study, trial.number, state=TrialState.FAIL)
            reaped += 1
    return reaped


def constant_prediction(prediction: Any) -> str | None:
    """'predicts only label k' when every labelled position gets the same label while the
    gold labels differ (NER all-O, one class for every document); None otherwise or when
    the predictions are not per-label scores (QA spans; masked-LM's per-block (loss sum,
    masked tokens) rows, whose "labels" are counts): a score per label means one column for
    every gold label id."""
    predictions, labels = prediction.predictions, prediction.label_ids
    if isinstance(predictions, tuple) or labels is None or isinstance(labels, tuple):
        return None
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim < 2 or predictions.shape[:-1] != labels.shape:
        return None
    mask = labels != -100
    predicted, gold = predictions.argmax(-1)[mask], labels[mask]
    if gold.size and (gold.min() < 0 or gold.max() >= predictions.shape[-1]):
        return None
    if gold.size and len(np.unique(gold)) > 1 and len(np.unique(predicted)) == 1:
        return f"predicts only label {int(predicted[0])}"
    return None


class CollapseWatch:
    """Wraps the family's validation metrics to note, per evaluation step, whether the
    model predicted one label everywhere."""

    def __init__(self) -> None:
        self.by_step: dict[int, str | None] = {}
        self.trainer: Any = None

    def wrap(self, compute: Callable[[Any], dict[str, float]]) -> Callable[[Any], dict[str, float]]:
        def watched(prediction: Any) -> dict[str, float]:
            step = int(self.trainer.state.global_step) if self.trainer is not None else len(self.by_step)
            self.by_step[step] = constant_prediction(prediction)
            return compute(prediction)

        return watched

    def reason(self, state: Any, value: float | None) -> str | None:
        """Why the trial's best checkpoint is unusable, if it is."""
        if value is None or not math.isfinite(value):
            return f"diverged (validation {value})"
        losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
        if any(not math.isfinite(float(loss)) for loss in losses):
            return "diverged (training loss not finite)"
        best = getattr(state, "best_global_step", None)
        if best is not None and best in self.by_step:
            return self.by_step[best]
        return self.by_step[max(self.by_step)] if self.by_step else None


def pruning_callback(trial: Any, metric: str) -> Any:
    """Report each evaluation's validation score to the trial; stop the run when the pruner
    says it cannot catch up (Optuna decides, this only relays)."""
    import optuna
    from transformers import TrainerCallback

    class ReportToTrial(TrainerCallback):
        evaluations = 0

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
            value = (metrics or {}).get(f"eval_{metric}")
            if value is None or not math.isfinite(float(value)):
                return
            trial.report(float(value), step=self.evaluations)
            self.evaluations += 1
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {self.evaluations} evaluations at {value:.4f}")

    return ReportToTrial()


# -- running trials ----------------------------------------------------------------------


def run_trial(ctx: SearchContext, prepared: Prepared, trial: Any) -> None:
    """Train one sampled recipe and tell the study how it went."""
    import optuna
    from optuna.trial import TrialState

    trial.set_user_attr("worker", worker_id())
    values = suggest(trial, ctx)
    study = trial.study
    checkpoints = paths.checkpoint_dir(ctx.task_name, f"search-{ctx.method}-{os.getpid()}")
    started = time.perf_counter()
    print(f"search {ctx.task_name} {ctx.method}: trial {trial.number} {values}", file=sys.stderr)
    try:
        params = with_overrides(ctx.base, values, ctx.section)
        watch = CollapseWatch()
        fitted = fit(
            ctx.task_name,
            ctx.method,
            ctx.task,
            params,
            prepared,
            checkpoints,
            [pruning_callback(trial, ctx.metric)],
            ctx.section,
            watch=watch,
        )
        value = fitted.trainer.state.best_metric
        reason = watch.reason(fitted.trainer.state, value)
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
        trial.set_user_attr("epochs_run", round(float(fitted.trainer.state.epoch or 0.0), 4))
        trial.set_user_attr(OUTCOME, "collapsed" if reason else "complete")
        if reason:
            trial.set_user_attr("collapse", reason)
        if value is None or not math.isfinite(value):
            tell(study, trial, state=TrialState.FAIL)
        else:
            tell(study, trial, float(value))
    except optuna.TrialPruned as pruned:
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
        trial.set_user_attr(OUTCOME, "pruned")
        trial.set_user_attr("note", str(pruned))
        tell(study, trial, state=TrialState.PRUNED)
    except ReprotuneError as exc:
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
        trial.set_user_attr(OUTCOME, "failed")
        trial.set_user_attr("note", str(exc))
        tell(study, trial, state=TrialState.FAIL)
    except BaseException:
        tell(study, trial, state=TrialState.FAIL)  # interrupted: no outcome, runs again next time
        raise
    finally:
        shutil.rmtree(checkpoints, ignore_errors=True)


def run_trials(ctx: SearchContext, prepared: Prepared, storage: Any, limit: int | None = None) -> int:
    """Run trials until the budget is met across every worker of the study (or `limit`
    trials here); returns how many this process ran."""
    ran = 0
    while limit is None or ran < limit:
        probe = load_study(ctx, storage)
        reap_dead_workers(probe)
        trials = probe.get_trials(deepcopy=False)
        if len(counted(trials)) + len(running(trials)) >= ctx.budget:
            break
        study = load_study(ctx, storage, offset=len(trials))
        requeue_interrupted(study)
        trial = study.ask()
        others = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
        if len(counted(others)) + len(running(others)) >= ctx.budget:
            # another worker took the last slot between our look and our ask
            from optuna.trial import TrialState

            trial.set_user_attr(OUTCOME, "surplus")
            tell(study, trial, state=TrialState.FAIL)
            break
        run_trial(ctx, prepared, trial)
        ran += 1
    return ran


def requeue_interrupted(study: Any) -> None:
    """Queue again the values of trials that were killed half way (and not yet queued or
    finished since), so a resumed search tries what it would have tried; grid points the
    sampler counts as visited are covered the same way."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    covered = [t.params for t in trials if outcome(t) in COUNTED or t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for t in trials:
        if t.state == TrialState.FAIL and outcome(t) is None and t.params and t.params not in covered:
            study.enqueue_trial(t.params, skip_if_exists=False)
            covered.append(t.params)


def wait_for_others(ctx: SearchContext, storage: Any, timeout: float | None = None) -> None:
    """Block while other workers still run trials of this study (their results count)."""
    started = time.monotonic()
    while True:
        study = load_study(ctx, storage)
        reap_dead_workers(study)
        if not running(study.get_trials(deepcopy=False)):
            return
        if timeout is not None and time.monotonic() - started > timeout:
            raise ReprotuneError(f"search {ctx.study_name}: other workers still run trials after {timeout:.0f}s")
        time.sleep(POLL_SECONDS)


def search(task_name: str, method: str, task: TaskParams, prepared: Prepared | None = None) -> dict[str, Any]:
    """Run (or finish, or read back) one method's search and summarise it."""
    prepared = prepared or prepare(task_name, task)
    ctx = context(task_name, method, task, data_digest(task_name))
    storage = open_storage(task.search, task_name)
    while True:
        run_trials(ctx, prepared, storage)
        wait_for_others(ctx, storage)
        trials = load_study(ctx, storage).get_trials(deepcopy=False)
        if len(counted(trials)) >= ctx.budget:
            break
    return summarise(ctx, counted(trials)[: ctx.budget])


# -- the outcome -------------------------------------------------------------------------


def trial_value(trial: Any) -> float | None:
    if trial.value is not None:
        return float(trial.value)
    steps = trial.intermediate_values
    return float(steps[max(steps)]) if steps else None


def summarise(ctx: SearchContext, trials: list[Any]) -> dict[str, Any]:
    """The chosen settings (best complete, uncollapsed trial; ties to the earlier trial), the
    trials table and the cost, as the search stage writes them."""
    eligible = [t for t in trials if outcome(t) == "complete" and t.value is not None]
    sign = -1.0 if ctx.greater else 1.0
    best = min(eligible, key=lambda t: (sign * float(t.value), t.number)) if eligible else None
    chosen = dict(best.params) if best is not None else {}
    chosen = {key: json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v for key, v in chosen.items()}
    rows = []
    for t in trials:
        row: dict[str, Any] = {
            "trial": t.number,
            "value": trial_value(t),
            "state": outcome(t),
            "chosen": best is not None and t.number == best.number,
            "epochs_run": t.user_attrs.get("epochs_run"),
        }
        row.update({key: json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v for key, v in t.params.items()})
        if t.user_attrs.get("collapse"):
            row["note"] = t.user_attrs["collapse"]
        rows.append(row)
    states = [outcome(t) for t in trials]
    summary = {
        "enabled": True,
        "metric": ctx.metric,
        "direction": "maximize" if ctx.greater else "minimize",
        "sampler": ctx.search.sampler,
        "budget": ctx.budget,
        "trials": len(trials),
        **{state: states.count(state) for state in COUNTED},
        "best_trial": best.number if best is not None else None,
        "best_value": float(best.value) if best is not None else None,
        "chosen": chosen,
        "chosen_from": "best trial" if best is not None else "the train section as written: no trial finished usable",
        "max_epochs": max_epochs(ctx),
    }
    cost = {"search_seconds": round(sum(float(t.user_attrs.get("seconds", 0.0)) for t in trials), 2)}
    return {"summary": summary, "trials": rows, "cost": cost}


def max_epochs(ctx: SearchContext) -> float:
    """The most epochs any trial of this method could train (the report compares the methods)."""
    epochs = ctx.search.space(ctx.method).get("epochs", [ctx.base.epochs])
    return float(epochs.high if isinstance(epochs, SearchRange) else max(float(e) for e in epochs))
