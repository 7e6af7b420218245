"""reprotune-search: run a task's search trials from more processes or machines.

    reprotune-search worker wnut16 lora          # run trials until the study's budget is met
    reprotune-search status wnut16 lora          # trials finished, running, and the best so far

Every worker reads `tasks.<task>.search` from params.yaml and opens the same Optuna study
(its name covers params, data and code); point `search.storage` at a database URL that all
machines reach (postgresql://..., mysql://...) or, on one machine, leave the default journal
file. The search stage (`dvc repro`) then runs what is left of the budget and reads the study.
"""

from __future__ import annotations

import argparse
import json
import sys

from reprotune.core.cli import run_stage
from reprotune.core.errors import ReprotuneError


def main(argv: list[str]) -> str:
    parser = argparse.ArgumentParser(prog="reprotune-search", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["worker", "status"])
    parser.add_argument("task")
    parser.add_argument("method", choices=["full", "lora"])
    parser.add_argument("--trials", type=int, default=None, help="run at most this many trials here")
    args = parser.parse_args(argv)

    from reprotune import tasks
    from reprotune.training import search

    task = tasks.load_task(args.task, f"search-{args.method}")
    if not task.search.enabled:
        raise ReprotuneError(f"tasks.{args.task}.search.enabled is false; set it to true to run a search")
    ctx = search.context(args.task, args.method, task, search.data_digest(args.task))
    storage = search.open_storage(task.search, args.task)
    if args.command == "status":
        trials = search.load_study(ctx, storage).get_trials(deepcopy=False)
        done = search.counted(trials)
        summary = search.summarise(ctx, done[: ctx.budget])["summary"]
        state = {
            "study": ctx.study_name,
            "budget": ctx.budget,
            "finished": len(done),
            "running": len(search.running(trials)),
        }
        print(json.dumps({**state, "best_trial": summary["best_trial"], "chosen": summary["chosen"]}, sort_keys=True))
        return ""
    ran = search.run_trials(ctx, search.prepare(args.task, task), storage, limit=args.trials)
    print(json.dumps({"study": ctx.study_name, "ran": ran}, sort_keys=True))
    return ""


def console() -> None:
    run_stage(main, sys.argv[1:])


if __name__ == "__main__":
    console()
