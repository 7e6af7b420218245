"""Benchmark: what a stage pays before it does any work (interpreter start and imports).

Each stage script is started with no arguments, so it imports what it imports at the top,
then stops at its usage line; the median wall time of --repeats runs is its start-up. With
--repo it measures another checkout (e.g. a `git worktree` of an older commit) with this
interpreter, for before/after numbers on the same machine in one run.

    python bench/stage_startup.py                               # this checkout
    git worktree add /tmp/before 1626957 && python bench/stage_startup.py --repo /tmp/before --name before

Results: bench/results/stage-startup-<name>.json (no timestamps, no absolute paths).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from reprotune.core.atomic import write_json

REPO = Path(__file__).resolve().parents[1]
STAGES = (
    "fingerprint",
    "download",
    "tokenize_align",
    "search",
    "train",
    "evaluate",
    "error_analysis",
    "export",
    "compare",
)


def startup(repo: Path, stage: str, repeats: int) -> float:
    """Median seconds from process start to the usage error, bytecode cached (one warm-up run)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(repo)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on users' machines: .pyc files written and reused
    command = [sys.executable, "-m", f"stages.{stage}"] + (["extra-argument"] if stage == "compare" else [])
    seconds = []
    for attempt in range(repeats + 1):
        begun = time.perf_counter()
        done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
        if attempt:
            seconds.append(time.perf_counter() - begun)
        if "usage" not in done.stderr:
            raise SystemExit(f"stages.{stage} did not stop at its usage line: {done.stderr[-500:]}")
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose stages/ to start")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--name", default="now", help="bench/results/stage-startup-<name>.json")
    args = parser.parse_args()
    rows = {stage: round(startup(args.repo.resolve(), stage, args.repeats), 2) for stage in STAGES}
    for stage, seconds in rows.items():
        print(f"{stage:15} {seconds:5.2f} s")
    write_json(
        REPO / "bench" / "results" / f"stage-startup-{args.name}.json",
        {"kind": "stage-startup", "repeats": args.repeats, "cpus": os.cpu_count(), "seconds": rows},
    )


if __name__ == "__main__":
    main()
