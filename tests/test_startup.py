"""Stage start-up: what a stage process imports before it does any work (bench/stage_startup.py
measures it). peft and `transformers.trainer_utils` cost about 3 s per process and only the
training and adapter-loading paths need them."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import torch
from transformers import set_seed

from reprotune.evaluation.seeding import seed_everything

LIGHT_STAGES = (
    "fingerprint",
    "download",
    "tokenize_align",
    "search",
    "evaluate",
    "error_analysis",
    "export",
    "compare",
)
"""Stage scripts whose imports must not pull in peft or the Trainer's utilities."""


def test_stage_scripts_import_neither_peft_nor_the_trainer_utilities() -> None:
    probe = (
        "import importlib, sys\n"
        f"for stage in {LIGHT_STAGES!r}:\n"
        "    importlib.import_module('stages.' + stage)\n"
        "heavy = ('peft', 'transformers.trainer_utils', 'transformers.trainer')\n"
        "print(','.join(sorted(name for name in heavy if name in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_seed_everything_leaves_the_generators_where_transformers_set_seed_does() -> None:
    def draws() -> tuple[float, float, torch.Tensor]:
        return random.random(), float(np.random.rand()), torch.rand(4)

    set_seed(1234)
    expected = draws()
    seed_everything(1234)
    got = draws()
    assert got[:2] == expected[:2]
    assert torch.equal(got[2], expected[2])
    seed_everything(1235)
    assert not torch.equal(draws()[2], expected[2])
