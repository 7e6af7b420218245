"""Run a stage function so that user mistakes print one line and exit non-zero."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from reprotune.core.atomic import disk_full_message, sweep_stale
from reprotune.core.errors import ReprotuneError


def quiet_libraries() -> None:
    """Keep stage logs to what a person needs; progress bars stay on. Imports nothing: a stage
    that needs neither datasets nor transformers (a search or export that is off) starts in a
    fraction of a second. (datasets' caching is turned off where Arrow data is loaded,
    reprotune.core.arrow.)"""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is imported
    logging.getLogger("transformers").setLevel(logging.ERROR)
    # peft asks transformers 5 for a renamed attribute on every adapter load: noise a user cannot act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    if "transformers" in sys.modules:  # imported already: the variable came too late
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()


AUDIT_ENV = "REPROTUNE_AUDIT_DIR"
"""When set, each stage writes the project files it imported there (tests/test_invalidation.py
checks them against the stage's deps in dvc.yaml)."""


def record_imports(args: list[str]) -> None:
    """Write the repository's Python files this process imported, relative to the repo root."""
    target = os.environ.get(AUDIT_ENV)
    if not target:
        return
    root = Path.cwd().resolve()
    files = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        path = Path(file).resolve()
        if path.is_relative_to(root) and path.relative_to(root).parts[0] in ("reprotune", "stages"):
            files.add(path.relative_to(root).as_posix())
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(root):
        files.add(script.relative_to(root).as_posix())
    name = "-".join([Path(sys.argv[0]).stem, *args]) + ".json"
    Path(target).mkdir(parents=True, exist_ok=True)
    (Path(target) / name).write_text(json.dumps(sorted(files), indent=1) + "\n", encoding="utf-8")


def run_stage(main: Callable[[list[str]], str | None], argv: list[str] | None = None, libraries: bool = True) -> None:
    """Call `main(args)`; print its summary line, or `error: ...` and exit 2 on a ReprotuneError
    (or on a full disk anywhere, e.g. in Trainer checkpoints). First remove what killed stages
    left behind (reprotune.core.atomic.sweep_stale). `libraries=False` skips configuring
    datasets and transformers, for a stage that uses neither (fingerprint runs every repro)."""
    if libraries:
        quiet_libraries()
    args = sys.argv[1:] if argv is None else argv
    try:
        sweep_stale()
        summary = main(args)
    except ReprotuneError as exc:
        fail(str(exc))
    except OSError as exc:
        message = disk_full_message(exc)
        if message is None:
            raise
        fail(message)
    record_imports(args)
    if summary:
        print(summary)


def fail(message: str) -> NoReturn:
    print("error: " + message.replace("\r", " ").replace("\n", " "), file=sys.stderr)  # always one line
    sys.exit(2)


def expect_args(args: list[str], names: list[str], script: str) -> list[str]:
    if len(args) != len(names):
        raise ReprotuneError(f"usage: python {script} {' '.join(f'<{n}>' for n in names)}")
    return args
