"""Each family's per-example statistics and additive HEADLINE give exactly what its `score`
reports, so the bootstrap intervals and paired tests are about the pipeline's own numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reprotune.core.additive import is_additive
from reprotune.evaluation.uncertainty import bootstrap_intervals
from reprotune.tasks.classification import metrics as classification
from reprotune.tasks.classification.params import ClassificationMeta
from reprotune.tasks.mlm import metrics as mlm
from reprotune.tasks.mlm.params import MaskSettings, MlmMeta
from reprotune.tasks.ner import metrics as ner
from reprotune.tasks.ner.params import NerMeta
from reprotune.tasks.qa import metrics as qa
from reprotune.tasks.qa.params import QaMeta, WindowSettings

NER_META = NerMeta(labels=["O", "B-LOC", "I-LOC", "B-PER", "I-PER"], types_missing_from_train=[])
CLS_META = ClassificationMeta(
    labels=["business", "sport", "tech"], labels_missing_from_train=[], text_fields=["text"], pair=False
)
QA_META = QaMeta(
    version_2_with_negative=False, window=WindowSettings(max_length=384, doc_stride=128, max_question_length=64)
)
MLM_META = MlmMeta(masking=MaskSettings(strategy="token", probability=0.15), chunk_size=8)


def agrees(family, predictions: pd.DataFrame, meta) -> dict[str, float]:
    """headline(example_stats) against score, key by key, at score's rounding."""
    scores = family.score(predictions, meta, None)
    stats = family.example_stats(predictions, meta)
    headline = family.HEADLINE(stats)
    assert is_additive(family.HEADLINE)
    assert set(headline) == set(family.HEADLINE_KEYS)
    for key in family.HEADLINE_KEYS:
        digits = 4 if key == "perplexity" else 6
        assert round(headline[key], digits) == pytest.approx(scores[key], abs=10.0**-digits), key
    return headline


# ----------------------------------------------------------------------------- NER


def ner_predictions(gold: list[list[str]], pred: list[list[str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [str(i) for i in range(len(gold))], "tokens": [["w"] * len(g) for g in gold], "gold": gold, "pred": pred}
    )


def test_ner_counts_per_sentence_and_per_type():
    predictions = ner_predictions(
        [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC"], ["O", "O"]],
        [["B-PER", "I-PER", "O", "B-PER"], ["O", "O"], ["I-LOC", "B-LOC"]],  # a stray I- starts nothing
    )
    stats = ner.example_stats(predictions, NER_META)
    assert stats[["tp", "fp", "fn"]].values.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 0]]
    assert stats["tp:PER"].tolist() == [1, 0, 0] and stats["fn:LOC"].tolist() == [1, 1, 0]
    assert stats["fp:LOC"].tolist() == [0, 0, 1] and stats["fp:PER"].tolist() == [1, 0, 0]
    headline = agrees(ner, predictions, NER_META)
    assert headline == pytest.approx({"precision": 1 / 3, "recall": 1 / 3, "f1": 1 / 3})


def test_ner_without_any_predicted_entity_scores_zero_like_seqeval():
    predictions = ner_predictions([["B-PER", "O"], ["O", "O"]], [["O", "O"], ["O", "O"]])
    assert agrees(ner, predictions, NER_META) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}


def random_tags(rng: np.random.Generator, length: int) -> list[str]:
    return [str(t) for t in rng.choice(NER_META.labels, size=length, p=[0.6, 0.1, 0.1, 0.1, 0.1])]


def test_ner_headline_matches_seqeval_on_random_tags_and_in_every_resample():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 12, size=60)
    gold = [random_tags(rng, n) for n in lengths]
    pred = [g if rng.random() < 0.3 else random_tags(rng, len(g)) for g in gold]
    predictions = ner_predictions(gold, pred)
    agrees(ner, predictions, NER_META)

    def seqeval_headline(rows: pd.DataFrame) -> dict[str, float]:  # the pipeline's scorer on the resample
        frame = predictions.iloc[rows["row"].to_numpy()]
        return {k: ner.score(frame, NER_META, None)[k] for k in ner.HEADLINE_KEYS}

    stats = ner.example_stats(predictions, NER_META)
    fast = bootstrap_intervals(stats, ner.HEADLINE, 20, 3)
    slow = bootstrap_intervals(stats.assign(row=range(len(stats))), seqeval_headline, 20, 3)
    for key in ner.HEADLINE_KEYS:
        assert fast[key] == pytest.approx(slow[key], abs=2e-6)


# ----------------------------------------------------------------------------- classification


def cls_predictions(gold: list[str], pred: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [str(i) for i in range(len(gold))], "text": ["t"] * len(gold), "gold": gold, "pred": pred}
    )


def test_classification_one_hot_cells():
    predictions = cls_predictions(["sport", "tech", "tech", "business"], ["sport", "sport", "tech", "tech"])
    stats = classification.example_stats(predictions, CLS_META)
    assert stats["correct"].tolist() == [1, 0, 1, 0]
    assert stats["tp:tech"].tolist() == [0, 0, 1, 0]
    assert stats["gold:tech"].tolist() == [0, 1, 1, 0] and stats["pred:tech"].tolist() == [0, 0, 1, 1]
    assert agrees(classification, predictions, CLS_META)["accuracy"] == 0.5


@pytest.mark.parametrize(
    "case",
    [
        (["sport", "tech", "tech", "business"], ["sport", "sport", "tech", "tech"]),
        (["sport", "tech", "business"], ["sport", "sport", "sport"]),  # one class predicted: MCC 0
        (["sport", "sport"], ["sport", "sport"]),  # one class in gold and predictions
        (["sport", "tech"], ["business", "business"]),  # a class only predicted counts in macro-F1
        (["sport", "other"], ["sport", "tech"]),  # a gold label outside the model's labels
    ],
    ids=["mixed", "constant-prediction", "single-class", "predicted-only-class", "unknown-label"],
)
@pytest.mark.filterwarnings("ignore:A single label was found")
def test_classification_headline_matches_sklearn(case):
    agrees(classification, cls_predictions(*case), CLS_META)


def test_classification_headline_matches_sklearn_on_random_labels_and_in_every_resample():
    rng = np.random.default_rng(1)
    gold = [str(x) for x in rng.choice(CLS_META.labels, size=80)]
    pred = [g if rng.random() < 0.6 else str(rng.choice(CLS_META.labels)) for g in gold]
    predictions = cls_predictions(gold, pred)
    agrees(classification, predictions, CLS_META)

    def sklearn_headline(rows: pd.DataFrame) -> dict[str, float]:
        return classification.headline_scores(list(rows["gold"]), list(rows["pred"]))

    stats = classification.example_stats(predictions, CLS_META)
    fast = bootstrap_intervals(stats, classification.HEADLINE, 30, 5)
    slow = bootstrap_intervals(stats, sklearn_headline, 30, 5)
    for key in classification.HEADLINE_KEYS:
        assert fast[key] == pytest.approx(slow[key], abs=2e-6)


# ----------------------------------------------------------------------------- QA


def test_qa_per_question_scores():
    predictions = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "pred_text": ["The Eiffel Tower", "1889", ""],
            "gold_texts": [["Eiffel Tower"], ["1889", "in the year 1889"], ["Paris"]],
        }
    )
    stats = qa.example_stats(predictions, QA_META)
    assert stats["em"].tolist() == [1.0, 1.0, 0.0]
    assert stats["f1"].tolist() == pytest.approx([1.0, 1.0, 0.0])
    assert agrees(qa, predictions, QA_META) == pytest.approx({"exact_match": 2 / 3, "f1": 2 / 3})
    partial = predictions.assign(pred_text=["Tower", "1889", "Paris France"])
    headline = agrees(qa, partial, QA_META)
    assert headline["f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)


# ----------------------------------------------------------------------------- MLM


def test_mlm_blocks_sum_their_masked_tokens():
    predictions = pd.DataFrame(
        {
            "block": [0, 0, 0, 2, 2, 5],
            "position": [1, 3, 4, 0, 6, 2],
            "loss": [0.5, 1.5, 2.0, 0.25, 3.0, 1.0],
            "correct": [True, False, False, True, False, True],
            "in_top_k": [True, True, False, True, False, True],
        }
    )
    stats = mlm.example_stats(predictions, MLM_META)
    assert stats["block"].tolist() == [0, 2, 5]
    assert stats[["loss_sum", "masked_tokens", "correct", "in_top_k"]].values.tolist() == [
        [4.0, 3, 1, 2],
        [3.25, 2, 1, 1],
        [1.0, 1, 1, 1],
    ]
    headline = agrees(mlm, predictions, MLM_META)
    assert headline["perplexity"] == pytest.approx(math.exp(8.25 / 6))
    assert headline["accuracy"] == pytest.approx(0.5) and headline["top_k_accuracy"] == pytest.approx(4 / 6)
