"""compare: one report of full against LoRA (and baseline) for every task (reports/comparison/)."""

from pathlib import Path

from reprotune.core import paths
from reprotune.core.atomic import atomic_dir
from reprotune.core.cli import expect_args, run_stage
from reprotune.core.params import parse_pipeline, read_params
from reprotune.reporting.report import build


def main(args: list[str]) -> str:
    expect_args(args, [], "stages/compare.py")
    pipeline = parse_pipeline(read_params().get("pipeline"))
    with atomic_dir(paths.COMPARISON_DIR) as out:
        build(pipeline.tasks, Path("metrics"), out)
    return f"compare: read {paths.COMPARISON_DIR / 'comparison.md'}"


if __name__ == "__main__":
    run_stage(main)
