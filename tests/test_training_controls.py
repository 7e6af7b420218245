"""Training controls: early stopping and eval_every, class weights (params, weights,
weighted loss, and balanced weights lifting minority recall on a skewed tiny set)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from datasets import Dataset
from tiny_classification import THINGS

from reprotune.core import paths
from reprotune.core.arrow import save_dataset
from reprotune.core.errors import ReprotuneError
from reprotune.core.params import LoraTrainParams, TrainParams
from reprotune.modeling.tokenizer import load_tokenizer
from reprotune.tasks import family, validate_task
from reprotune.training.controls import class_weight_map, label_counts, weighted_loss_trainer
from reprotune.training.train import ordered_eval_trainer, train, training_arguments

# -- params ---------------------------------------------------------------------------------


def task_section(model: str = "unused", **train_full: Any) -> dict[str, Any]:
    return {
        "type": "classification",
        "model": {"name_or_path": model},
        "download": {
            "source": "tsv",
            "files": {"train": "train.tsv", "validation": "validation.tsv", "test": "test.tsv"},
        },
        "tokenize": {"max_length": 16},
        "train_full": {
            "max_steps": 40,
            "batch_size": 16,
            "learning_rate": 3e-3,
            "logging_steps": 50,
            "precision": "fp32",
            "seed": 1,
            **train_full,
        },
        "train_lora": {
            "max_steps": 40,
            "batch_size": 16,
            "learning_rate": 1e-2,
            "r": 4,
            "alpha": 8,
            "logging_steps": 50,
            "precision": "fp32",
        },
        "evaluate": {"batch_size": 64, "bootstrap": {"resamples": 0}},
        "error_analysis": {},
    }


@pytest.mark.parametrize(
    ("train_full", "message"),
    [
        (
            {"class_weights": "balance"},
            "'tasks.t.train_full.class_weights': .*none, balanced or a mapping.*did you mean 'balanced'",
        ),
        ({"class_weights": {"rare": 0}}, "class weight of 'rare' must be a positive finite number"),
        ({"class_weights": {}}, "class_weights mapping is empty"),
        ({"early_stopping": {"patience": 0}}, "'tasks.t.train_full.early_stopping.patience': Input should be greater"),
        (
            {"early_stopping": {"patience": 2, "patiense": 3}},
            "unknown key 'tasks.t.train_full.early_stopping.patiense' \\(did you mean 'patience'\\?\\); "
            "allowed keys: patience, threshold",
        ),
        ({"early_stopping": {"patience": 1, "threshold": -1}}, "early_stopping.threshold': Input should be greater"),
        ({"eval_every": 0}, "'tasks.t.train_full.eval_every': Input should be greater than 0"),
    ],
)
def test_new_keys_are_validated_with_one_line(train_full: dict[str, Any], message: str) -> None:
    with pytest.raises(ReprotuneError, match=message) as caught:
        validate_task("t", task_section(**train_full))
    assert "\n" not in str(caught.value)


def test_new_keys_default_off_and_yaml_number_labels_become_text() -> None:
    params = TrainParams()
    assert params.early_stopping is None and params.eval_every is None and params.class_weights == "none"
    assert TrainParams(class_weights=None).class_weights == "none"
    assert LoraTrainParams(class_weights={0: 2, "B-PER": 1.5}).class_weights == {"0": 2.0, "B-PER": 1.5}


def test_eval_every_evaluates_and_saves_on_the_same_steps(tmp_path: Path) -> None:
    default = training_arguments(TrainParams(), family("ner"), tmp_path)
    assert str(default.eval_strategy.value) == str(default.save_strategy.value) == "epoch"
    args = training_arguments(TrainParams(eval_every=25), family("ner"), tmp_path)
    assert str(args.eval_strategy.value) == str(args.save_strategy.value) == "steps"
    assert args.eval_steps == args.save_steps == 25 and args.load_best_model_at_end


# -- class weights --------------------------------------------------------------------------


def test_balanced_weights_count_examples_or_labelled_tokens() -> None:
    examples = Dataset.from_dict({"labels": [0] * 9 + [1]})
    assert label_counts(examples, 2) == [9, 1]
    windows = Dataset.from_dict({"labels": [0, 0, 0, 1, 1], "example_index": [0, 0, 1, 2, 2]})
    assert label_counts(windows, 2) == [2, 1], "a document's windows count once"
    assert class_weight_map("balanced", ["common", "rare"], [9, 1], "w") == {
        "common": pytest.approx(10 / 18),
        "rare": 5.0,
    }
    tokens = Dataset.from_dict({"labels": [[-100, 0, 0, 1, -100], [-100, 0, 2, -100]]})
    assert label_counts(tokens, 4) == [3, 1, 1, 0]
    weights = class_weight_map("balanced", ["O", "B-PER", "I-PER", "B-LOC"], [3, 1, 1, 0], "w")
    assert weights == {
        "O": pytest.approx(5 / 9),
        "B-PER": pytest.approx(5 / 3),
        "I-PER": pytest.approx(5 / 3),
        "B-LOC": 1.0,
    }, "a label train never shows keeps 1.0"
    assert class_weight_map("none", ["a", "b"], None, "w") is None


def test_explicit_weights_default_to_one_and_unknown_labels_are_refused() -> None:
    assert class_weight_map({"rare": 4.0}, ["common", "rare"], None, "w") == {"common": 1.0, "rare": 4.0}
    with pytest.raises(
        ReprotuneError, match="'tasks.t.train_full.class_weights' names unknown label 'raer'; labels: common, rare"
    ):
        class_weight_map({"raer": 4.0}, ["common", "rare"], None, "tasks.t.train_full.class_weights")


@pytest.mark.parametrize("family_name", ["qa", "mlm"])
def test_class_weights_are_refused_for_qa_and_mlm_before_anything_loads(
    family_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiny_mlm import tiny_task as mlm_task
    from tiny_qa import tiny_task as qa_task

    monkeypatch.chdir(tmp_path)  # no data: the refusal must come first
    section = (qa_task if family_name == "qa" else mlm_task)(tmp_path / "data", tmp_path / "model")
    section["train_lora"] = {**section["train_lora"], "class_weights": "balanced"}
    task = validate_task("t", section)
    with pytest.raises(
        ReprotuneError,
        match=f"'tasks.t.train_lora.class_weights' applies to classification and ner tasks only, not {family_name}",
    ):
        train("t", "lora", task)


def test_weighted_loss_is_weighted_cross_entropy_over_labelled_tokens(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForTokenClassification, TrainingArguments

    torch.manual_seed(0)
    model = BertForTokenClassification(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=3,
        )
    ).eval()
    weights = [0.5, 2.0, 4.0]
    trainer_class = weighted_loss_trainer(ordered_eval_trainer(), weights)
    trainer = trainer_class(
        model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    )
    inputs = {
        "input_ids": torch.tensor([[1, 5, 6, 7, 2], [1, 8, 9, 2, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]),
        "labels": torch.tensor([[-100, 0, 1, 2, -100], [-100, 2, 2, -100, -100]]),
    }
    loss, outputs = trainer.compute_loss(model, dict(inputs), return_outputs=True)
    logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
    keep = inputs["labels"] != -100
    per_token = torch.nn.functional.cross_entropy(logits[keep], inputs["labels"][keep], reduction="none")
    w = torch.tensor(weights)[inputs["labels"][keep]]
    assert loss.item() == pytest.approx(((per_token * w).sum() / w.sum()).item(), rel=1e-5)
    assert outputs.logits.shape == (2, 5, 3) and trainer.loss_is_scaled_for_ga is False


# -- through the train stage on the tiny model ---------------------------------------------


def skewed_rows(common: int, rare: int, offset: int) -> list[tuple[str, str]]:
    """Two classes told apart by their words; `common` and `rare` examples of each."""
    return [(f"red warm fire {THINGS[(i + offset) % 20]} is here", "common") for i in range(common)] + [
        (f"blue cold ice {THINGS[(i + offset) % 20]} is here", "rare") for i in range(rare)
    ]


def prepare_skewed(root: Path, model_dir: Path) -> None:
    """A 90/10 train split (180/20), a 90/10 validation split, a balanced test split; downloaded
    and tokenized into `root` (the current directory)."""
    from reprotune.tasks.classification.params import PRETOKENIZED_INPUT
    from reprotune.tasks.classification.preprocess import prepare_meta, tokenize
    from reprotune.tasks.classification.sources import load_raw, validate_raw

    for name, rows in {
        "train": skewed_rows(180, 20, 0),
        "validation": skewed_rows(18, 2, 3),
        "test": skewed_rows(20, 20, 7),
    }.items():
        (root / f"{name}.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in rows))
    task = validate_task("skew", task_section(str(model_dir)))
    raw, report = load_raw(task.download)
    validate_raw(raw, task)
    save_dataset(raw, paths.raw_dir("skew"))
    meta = prepare_meta(raw, report, task)
    features, _ = tokenize(raw, load_tokenizer(task.model, pretokenized=PRETOKENIZED_INPUT), task, meta)
    save_dataset(features, paths.tokenized_dir("skew"), {"meta.json": meta.model_dump(mode="json")})


def train_and_score(model_dir: Path, method: str = "full", **train_keys: Any) -> tuple[dict[str, Any], pd.DataFrame]:
    from reprotune.evaluation.evaluate import evaluate

    section = task_section(str(model_dir))
    section[f"train_{method}"] = {**section[f"train_{method}"], **train_keys}
    task = validate_task("skew", section)
    train("skew", method, task)
    evaluate("skew", method, task)
    cost = json.loads(paths.cost_file("skew", method).read_text())
    return cost, pd.read_parquet(paths.predictions_file("skew", method))


def recall(frame: pd.DataFrame, label: str) -> float:
    gold = frame[frame["gold"] == label]
    return float((gold["pred"] == label).mean())


def test_balanced_weights_raise_minority_recall_on_a_skewed_set(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same seed, same 40 steps: the plain loss learns the 90% prior and never predicts the
    rare class; with balanced weights (5.0 for rare) it learns the rare class's words."""
    monkeypatch.chdir(tmp_path)
    prepare_skewed(tmp_path, tiny_model_dir)
    plain_cost, plain = train_and_score(tiny_model_dir)
    weighted_cost, weighted = train_and_score(tiny_model_dir, class_weights="balanced")
    assert plain_cost["class_weights"] is None
    assert weighted_cost["class_weights"] == {"common": pytest.approx(200 / (2 * 180)), "rare": 5.0}
    assert recall(weighted, "rare") >= recall(plain, "rare") + 0.5, (recall(plain, "rare"), recall(weighted, "rare"))
    assert recall(weighted, "common") >= 0.9
    assert plain_cost["stopped_early"] is False and plain_cost["early_stopping"] is False
    assert plain_cost["stopped_at_step"] == 40 and plain_cost["best_validation_metric"] == "accuracy"
    assert plain_cost["best_validation_value"] == plain_cost["best_checkpoint_metric"]


def test_early_stopping_every_n_steps_stops_and_reports_the_best_step(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evaluating every 2 steps with patience 2 and a threshold no accuracy gain can pass
    (1.0): the evaluations at steps 4 and 6 do not count as improvements, so LoRA stops at
    step 6 of 40, and the train info (copied into lora-cost.json) says so."""
    monkeypatch.chdir(tmp_path)
    prepare_skewed(tmp_path, tiny_model_dir)
    cost, _ = train_and_score(
        tiny_model_dir,
        "lora",
        eval_every=2,
        early_stopping={"patience": 2, "threshold": 1.0},
        class_weights={"rare": 3},
    )
    assert cost["early_stopping"] and cost["stopped_early"]
    assert cost["stopped_at_step"] == cost["train_steps"] == 6
    assert cost["stopped_at_epoch"] == pytest.approx(6 / 13, abs=1e-3)  # 200 examples / 16 = 13 steps an epoch
    assert cost["best_step"] in (2, 4, 6) and cost["best_epoch"] == pytest.approx(cost["best_step"] / 13, abs=1e-3)
    assert cost["best_validation_metric"] == "accuracy" and cost["best_validation_greater_is_better"] is True
    assert cost["class_weights"] == {"common": 1.0, "rare": 3.0}
