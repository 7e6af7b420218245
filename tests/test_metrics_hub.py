"""The local `evaluate` modules give the pipeline's numbers: the same predictions, the same
metrics/<task>/<method>.json content (scores and bootstrap intervals), with no Hub."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest

from reprotune.core.params import BootstrapParams
from reprotune.evaluation.uncertainty import add_intervals
from reprotune.metrics_hub import module_path
from reprotune.tasks.classification.params import ClassificationMeta
from reprotune.tasks.mlm.params import MaskSettings, MlmMeta
from reprotune.tasks.ner.params import NerMeta
from reprotune.tasks.qa.params import QaMeta, WindowSettings

DEFAULTS = BootstrapParams()  # the pipeline's evaluate.bootstrap defaults


@pytest.fixture(scope="module")
def load(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    cache = tmp_path_factory.mktemp("hf")
    monkeypatch = pytest.MonkeyPatch()
    request.addfinalizer(monkeypatch.undo)
    for name in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_MODULES_CACHE", str(cache / "modules"))
    evaluate = pytest.importorskip("evaluate")

    def loaded(family: str):
        return evaluate.load(module_path(family), cache_dir=str(cache / "data"))

    return loaded


def pipeline(family: str, predictions: pd.DataFrame, meta) -> dict:
    """What the evaluate stage writes for these predictions (score + intervals, default bootstrap)."""
    metrics = importlib.import_module(f"reprotune.tasks.{family}.metrics")
    return add_intervals(
        metrics.score(predictions, meta, None),
        metrics,
        predictions,
        meta,
        DEFAULTS.resamples,
        DEFAULTS.seed,
        DEFAULTS.level,
    )


def test_defaults_are_the_pipelines():
    assert (DEFAULTS.resamples, DEFAULTS.seed, DEFAULTS.level) == (1000, 0, 0.95)
    with pytest.raises(ValueError):
        module_path("seqeval")


def test_ner_module_matches_the_pipeline(load):
    rng = np.random.default_rng(0)
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    gold = [[str(t) for t in rng.choice(labels, size=n, p=[0.6, 0.1, 0.1, 0.1, 0.1])] for n in rng.integers(1, 9, 40)]
    pred = [g if rng.random() < 0.4 else [str(t) for t in rng.choice(labels, size=len(g))] for g in gold]
    expected = pipeline(
        "ner", pd.DataFrame({"gold": gold, "pred": pred}), NerMeta(labels=labels, types_missing_from_train=[])
    )
    assert "f1_ci_low" in expected
    assert load("ner").compute(predictions=pred, references=gold) == expected


def test_classification_module_matches_the_pipeline(load):
    rng = np.random.default_rng(1)
    labels = ["business", "sport", "tech"]
    gold = [str(x) for x in rng.choice(labels, size=60)]
    pred = [g if rng.random() < 0.7 else str(rng.choice(labels)) for g in gold]
    meta = ClassificationMeta(labels=labels, labels_missing_from_train=[], text_fields=["text"], pair=False)
    expected = pipeline("classification", pd.DataFrame({"gold": gold, "pred": pred}), meta)
    assert load("classification").compute(predictions=pred, references=gold, labels=labels) == expected


def test_qa_module_matches_the_pipeline(load):
    gold = [["Eiffel Tower"], ["1889", "in 1889"], ["Paris"], ["Gustave Eiffel"], ["iron"]] * 6
    pred = ["the Eiffel Tower", "1889", "", "Eiffel", "wrought iron"] * 6
    meta = QaMeta(
        version_2_with_negative=False, window=WindowSettings(max_length=384, doc_stride=128, max_question_length=64)
    )
    expected = pipeline("qa", pd.DataFrame({"pred_text": pred, "gold_texts": gold}), meta)
    assert load("qa").compute(predictions=pred, references=gold) == expected


def test_mlm_module_matches_the_pipeline(load):
    rng = np.random.default_rng(2)
    n = 90
    frame = pd.DataFrame(
        {
            "block": np.sort(rng.integers(0, 25, n)),
            "loss": rng.gamma(2.0, 1.0, n).round(6),
            "correct": rng.random(n) < 0.4,
            "in_top_k": rng.random(n) < 0.7,
        }
    )
    meta = MlmMeta(masking=MaskSettings(strategy="token", probability=0.15), chunk_size=128)
    expected = pipeline("mlm", frame, meta)
    got = load("mlm").compute(
        predictions=frame[["loss", "correct", "in_top_k"]].to_dict("records"),
        references=frame[["block"]].to_dict("records"),
    )
    assert got == expected


def test_modules_can_skip_the_intervals(load):
    out = load("ner").compute(predictions=[["B-PER", "O"]], references=[["B-PER", "O"]], resamples=0)
    assert out["f1"] == 1.0 and "f1_ci_low" not in out
