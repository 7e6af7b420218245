"""compare: one report of full against LoRA (and baseline) for every task (reports/comparison/)."""

from pathlib import Path

from reprotune.core.atomic import atomic_dir
from reprotune.core.cli import expect_args, run_stage
from reprotune.core.params import load_all
from reprotune.reporting.report import build

OUT = Path("reports") / "comparison"


def main(args: list[str]) -> str:
    expect_args(args, [], "stages/compare.py")
    pipeline, tasks = load_all()
    with atomic_dir(OUT) as out:
        build(pipeline.tasks, {name: tasks[name].type for name in pipeline.tasks}, Path("metrics"), out)
    return f"compare: read {OUT / 'comparison.md'}"


if __name__ == "__main__":
    run_stage(main)
