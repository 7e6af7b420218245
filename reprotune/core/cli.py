"""Run a stage function so that user mistakes print one line and exit non-zero."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from reprotune.core.errors import ReprotuneError


def quiet_libraries() -> None:
    """Keep stage logs to what a person needs; progress bars stay on."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets

    # Never write cache files next to loaded Arrow data: that would modify DVC outs.
    datasets.disable_caching()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def run_stage(main: Callable[[list[str]], str | None], argv: list[str] | None = None) -> None:
    """Call `main(args)`; print its summary line, or `error: ...` and exit 2 on a ReprotuneError."""
    quiet_libraries()
    args = sys.argv[1:] if argv is None else argv
    try:
        summary = main(args)
    except ReprotuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if summary:
        print(summary)


def expect_args(args: list[str], names: list[str], script: str) -> list[str]:
    if len(args) != len(names):
        raise ReprotuneError(f"usage: python {script} {' '.join(f'<{n}>' for n in names)}")
    return args
