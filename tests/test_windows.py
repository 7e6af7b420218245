"""Strided windows for long inputs (`tokenize.windows`), NER and classification: no word or
token is lost to truncation, each NER word is predicted from its max-context window, a
document's window logits aggregate (mean or max), and inputs that fit predict as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from datasets import ClassLabel, Dataset, Features, Value

from reprotune.core import paths
from reprotune.core.arrow import save_dataset
from reprotune.core.errors import ReprotuneError
from reprotune.modeling.tokenizer import load_tokenizer
from reprotune.sources.splits import make_missing_splits
from reprotune.tasks import validate_task
from reprotune.tasks.classification import preprocess as cls_preprocess
from reprotune.tasks.classification.family import FAMILY as CLS
from reprotune.tasks.classification.family import aggregate_logits, document_logits
from reprotune.tasks.classification.params import ClassificationMeta, ClassificationWindows
from reprotune.tasks.ner import preprocess as ner_preprocess
from reprotune.tasks.ner.family import FAMILY as NER
from reprotune.tasks.ner.family import max_context_words
from reprotune.tasks.ner.params import NerMeta, NerWindows

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
WORDS = (
    "Barack Obama visited Paris yesterday with extraordinarily unbelievable companions and then "
    "flew to Berlin where Angela Merkel waited near the Brandenburg Gate for hours"
).split()


def ner_section(model_dir: Path, **tokenize: Any) -> dict[str, Any]:
    return {
        "type": "ner",
        "model": {"name_or_path": str(model_dir)},
        "download": {"source": "conll", "path": "unused.conll"},
        "tokenize": {"max_length": 16, **tokenize},
        "train_full": {"max_steps": 2},
        "train_lora": {"max_steps": 2},
        "evaluate": {"batch_size": 4},
        "error_analysis": {},
    }


def cls_section(model_dir: Path, **tokenize: Any) -> dict[str, Any]:
    return {
        "type": "classification",
        "model": {"name_or_path": str(model_dir)},
        "download": {"source": "tsv", "path": "unused.tsv"},
        "tokenize": {"max_length": 12, **tokenize},
        "train_full": {"max_steps": 2},
        "train_lora": {"max_steps": 2},
        "evaluate": {"batch_size": 4},
        "error_analysis": {},
    }


def ner_raw(sentences: list[list[str]]) -> Dataset:
    return Dataset.from_dict(
        {
            "id": [str(i) for i in range(len(sentences))],
            "tokens": sentences,
            "tags": [["O"] * len(words) for words in sentences],
        }
    )


# params -------------------------------------------------------------------------


def test_windows_are_off_by_default_and_a_stride_must_leave_room() -> None:
    assert validate_task("n", ner_section(Path("m"))).tokenize.windows is None
    assert validate_task("c", cls_section(Path("m"))).tokenize.windows is None
    task = validate_task("c", cls_section(Path("m"), windows={"stride": 4}))
    assert task.tokenize.windows == ClassificationWindows(stride=4, aggregate="mean")
    with pytest.raises(ReprotuneError, match="windows.stride must leave room"):
        validate_task("n", ner_section(Path("m"), windows={"stride": 14}))
    with pytest.raises(ReprotuneError, match="windows.stride must leave room"):
        validate_task("c", cls_section(Path("m"), windows={"stride": 9}))
    with pytest.raises(ReprotuneError, match="aggregate"):
        validate_task("c", cls_section(Path("m"), windows={"stride": 4, "aggregate": "sum"}))


def test_classification_meta_json_is_unchanged_without_windows() -> None:
    base = {"labels": ["a", "b"], "labels_missing_from_train": [], "text_fields": ["text"], "pair": False}
    assert ClassificationMeta.model_validate(base).model_dump(mode="json") == base
    windowed = ClassificationMeta.model_validate({**base, "windows": {"stride": 4, "aggregate": "max"}})
    assert windowed.model_dump(mode="json")["windows"] == {"stride": 4, "aggregate": "max"}
    assert ClassificationMeta.model_validate(windowed.model_dump(mode="json")) == windowed


# NER: word windows ---------------------------------------------------------------


def test_word_windows_cover_every_word_and_overlap_by_at_most_the_stride() -> None:
    lengths = [1, 3, 1, 2, 4, 1, 1, 2, 6, 1, 1]
    windows = ner_preprocess.word_windows(lengths, capacity=6, stride=2)
    assert windows[0][0] == 0 and windows[-1][1] == len(lengths)
    for (start, end), (next_start, next_end) in zip(windows, windows[1:]):
        assert start < next_start <= end < next_end, "each window starts later and adds new words"
        assert sum(lengths[next_start:end]) <= 2, "shared sub-tokens stay within the stride"
    for start, end in windows:
        assert end - start == 1 or sum(lengths[start:end]) <= 6
    assert ner_preprocess.word_windows([9, 1], capacity=4, stride=2) == [(0, 1), (1, 2)], "a too-long word alone"


def test_long_sentence_windows_hold_every_word_whole(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(validate_task("n", ner_section(tiny_model_dir)).model, pretokenized=True)
    raw = ner_raw([WORDS, WORDS[:3]])
    features = ner_preprocess.tokenize_split(raw, tokenizer, NER_LABELS, 16, False, NerWindows(stride=4))
    rows = [row for row in features if row["example_index"] == 0]
    assert len(rows) > 2 and [row["example_index"] for row in features].count(1) == 1
    whole = tokenizer(WORDS, is_split_into_words=True).word_ids()
    pieces = {w: whole.count(w) for w in range(len(WORDS))}
    seen: set[int] = set()
    for row in rows:
        ids = [w for w in row["word_ids"] if w >= 0]
        assert len(row["input_ids"]) <= 16 and min(ids) == row["word_offset"]
        assert all(ids.count(w) == pieces[w] for w in set(ids)), "a window never splits a word's sub-tokens"
        assert [label for label in row["labels"] if label != -100] == [0] * len(set(ids)), "every window labelled"
        seen |= set(ids)
    assert seen == set(range(len(WORDS)))
    plain = ner_preprocess.tokenize_split(raw.select([1]), tokenizer, NER_LABELS, 16, False, None)
    assert features[-1]["input_ids"] == plain[0]["input_ids"] and features[-1]["word_ids"] == plain[0]["word_ids"]


def test_max_context_picks_the_window_where_the_word_is_most_central() -> None:
    # window A holds words 0-5, window B words 3-8 (word 6 in two sub-tokens)
    a = ([-1, 0, 1, 2, 3, 4, 5, -1], ["a"] * 8)
    b = ([-1, 3, 4, 5, 6, 6, 7, 8, -1], ["b"] * 9)
    chosen = max_context_words([a, b], 10)
    # word 3: A min(3, 2) vs B min(0, 5); word 4: A min(4, 1) vs B min(1, 5) -> B is longer;
    # word 5: A min(5, 0) vs B min(2, 4); word 9: in no window
    assert chosen == ["a", "a", "a", "a", "b", "b", "b", "b", "b", None]
    assert max_context_words([a], 7) == ["a"] * 6 + [None]


def test_ner_predict_gives_every_word_of_a_long_sentence_a_tag(tiny_model_dir: Path) -> None:
    task = validate_task("n", ner_section(tiny_model_dir, max_length=10, windows={"stride": 3}))
    meta = NerMeta(labels=NER_LABELS, types_missing_from_train=[])
    tokenizer = load_tokenizer(task.model, pretokenized=True)
    model = NER.build_model(task, meta)
    raw = ner_raw([WORDS, WORDS[5:9]])
    cut = NER.predict(
        model, tokenizer, raw, ner_preprocess.tokenize_split(raw, tokenizer, NER_LABELS, 10, False, None), meta, task
    )
    windowed = NER.predict(
        model,
        tokenizer,
        raw,
        ner_preprocess.tokenize_split(raw, tokenizer, NER_LABELS, 10, False, task.tokenize.windows),
        meta,
        task,
    )
    assert list(cut["score"][0]).count(0.0) > 0, "truncation leaves words without a prediction"
    assert len(windowed["pred"][0]) == len(WORDS) and all(s > 0 for s in windowed["score"][0])
    assert windowed.iloc[1].to_dict() == cut.iloc[1].to_dict(), "a sentence that fits predicts as before"
    [record] = NER.predict_records(model, tokenizer, [{"text": " ".join(WORDS)}], meta, task)
    assert record["text"] == " ".join(WORDS)


def test_short_sentences_predict_identically_with_windows_on_and_off(tiny_model_dir: Path) -> None:
    off = validate_task("n", ner_section(tiny_model_dir, max_length=64))
    on = validate_task("n", ner_section(tiny_model_dir, max_length=64, windows={"stride": 8}))
    meta = NerMeta(labels=NER_LABELS, types_missing_from_train=[])
    tokenizer = load_tokenizer(off.model, pretokenized=True)
    model = NER.build_model(off, meta)
    raw = ner_raw([WORDS[:5], WORDS[4:12], WORDS[10:13]])
    tables = [
        NER.predict(
            model,
            tokenizer,
            raw,
            ner_preprocess.tokenize_split(raw, tokenizer, NER_LABELS, 64, False, task.tokenize.windows),
            meta,
            task,
        )
        for task in (off, on)
    ]
    pd.testing.assert_frame_equal(*tables)
    texts = [{"text": "Angela Merkel met Barack Obama in Paris."}, {"text": "Nothing here"}]
    assert NER.predict_records(model, tokenizer, texts, meta, off) == NER.predict_records(
        model, tokenizer, texts, meta, on
    )


def test_ner_validation_metric_takes_each_word_from_its_max_context_window() -> None:
    from transformers import EvalPrediction

    labels = ["O", "B-LOC"]
    raw = Dataset.from_dict({"tokens": [["a", "b", "c", "d"], ["e"]], "tags": [["O", "B-LOC", "O", "O"], ["O"]]})
    # sentence 0 in two windows (words 0-2, 1-3), sentence 1 in one
    features = Dataset.from_dict(
        {"word_ids": [[-1, 0, 1, 2, -1], [-1, 1, 2, 3, -1], [-1, 0, -1]], "example_index": [0, 0, 1]}
    )
    logits = np.full((3, 5, 2), -100.0)
    logits[0, :5] = np.eye(2)[[0, 0, 1, 0, 0]]  # window 0: word 1 B-LOC (central there)
    logits[1, :5] = np.eye(2)[[0, 0, 0, 0, 0]]  # window 1: word 1 O (at its edge)
    logits[2, :3] = np.eye(2)[[0, 0, 0]]
    compute = NER.train_metrics(NerMeta(labels=labels, types_missing_from_train=[]), None, raw, features)
    scores = compute(EvalPrediction(predictions=logits, label_ids=np.zeros((3, 5), dtype=int)))
    assert scores["f1"] == 1.0 and scores["token_accuracy"] == 1.0


# classification: document windows ----------------------------------------------------


def test_aggregation_mean_and_max_on_hand_made_logits() -> None:
    windows = np.array([[0.0, 3.0], [1.0, -5.0]])
    assert aggregate_logits(windows, "mean").tolist() == [0.5, -1.0]
    assert aggregate_logits(windows, "max").tolist() == [1.0, 3.0]
    table = np.array([[0.0, 3.0], [1.0, -5.0], [2.0, 1.0]])
    assert document_logits(table, [[0, 1], [2]], "mean").tolist() == [[0.5, -1.0], [2.0, 1.0]]
    with pytest.raises(ReprotuneError, match="aggregate"):
        aggregate_logits(windows, "sum")


@pytest.mark.parametrize(("aggregate", "accuracy"), [("mean", 0.5), ("max", 1.0)])
def test_classification_validation_aggregates_windows_per_document(aggregate: str, accuracy: float) -> None:
    from transformers import EvalPrediction

    meta = ClassificationMeta(
        labels=["a", "b"],
        labels_missing_from_train=[],
        text_fields=["text"],
        pair=False,
        windows=ClassificationWindows(stride=2, aggregate=aggregate),
    )
    features = Dataset.from_dict({"example_index": [0, 0, 1]})
    logits = np.array([[0.0, 3.0], [1.0, -5.0], [2.0, 1.0]])
    compute = CLS.train_metrics(meta, None, Dataset.from_dict({}), features)
    scores = compute(EvalPrediction(predictions=logits, label_ids=np.array([1, 1, 0])))
    assert scores["accuracy"] == accuracy


def test_document_windows_cover_the_text_and_carry_the_label(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(validate_task("c", cls_section(tiny_model_dir)).model)
    long = " ".join(WORDS)
    batch = {"text": [long, "Paris in spring"], "label": [1, 0]}
    out = cls_preprocess.encode_windows(batch, [7, 8], tokenizer, 12, "longest_first", [0, 1], 3)
    first = [row for row, example in enumerate(out["example_index"]) if example == 7]
    assert len(first) > 2 and out["example_index"].count(8) == 1
    assert all(out["labels"][row] == 1 and len(out["input_ids"][row]) <= 12 for row in first)
    assert not any(out["truncated"]) and out["n_tokens"][0] == len(tokenizer(long)["input_ids"])
    content = [tokenizer.convert_ids_to_tokens(out["input_ids"][row])[1:-1] for row in first]
    joined = content[0] + [token for part in content[1:] for token in part[3:]]  # stride 3: 3 tokens repeat
    assert joined == tokenizer.tokenize(long), "every token in some window, consecutive windows share 3"
    plain = cls_preprocess.encode_batch(
        {"text": ["Paris in spring"], "label": [0]}, tokenizer, 12, "longest_first", [0, 1]
    )
    assert out["input_ids"][-1] == plain["input_ids"][0]


def test_sentence_pairs_split_the_longer_text_or_truncate_when_no_room(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(validate_task("c", cls_section(tiny_model_dir)).model)
    long = " ".join(WORDS)
    batch = {"text": ["Who met whom?", long, long], "text_pair": [long, "Who?", long], "label": [0, 1, 0]}
    out = cls_preprocess.encode_windows(batch, [0, 1, 2], tokenizer, 16, "longest_first", [0, 1], 3)
    by_example = {e: [r for r, x in enumerate(out["example_index"]) if x == e] for e in (0, 1, 2)}
    assert len(by_example[0]) > 1 and len(by_example[1]) > 1
    question = tokenizer("Who met whom?", add_special_tokens=False)["input_ids"]
    assert all(out["input_ids"][r][1 : 1 + len(question)] == question for r in by_example[0])
    assert by_example[2] == [len(out["example_index"]) - 1] and out["truncated"][-1], "no room: truncated"


def test_classification_predict_aggregates_window_logits(tiny_model_dir: Path) -> None:
    import torch

    section = cls_section(tiny_model_dir, windows={"stride": 3, "aggregate": "max"})
    task = validate_task("c", section | {"evaluate": {"batch_size": 4, "precision": "fp32"}})
    meta = ClassificationMeta(
        labels=["a", "b", "c"],
        labels_missing_from_train=[],
        text_fields=["text"],
        pair=False,
        windows=task.tokenize.windows,
    )
    tokenizer = load_tokenizer(task.model)
    model = CLS.build_model(task, meta)
    raw = Dataset.from_dict(
        {"id": ["1", "2"], "text": [" ".join(WORDS), "Paris in spring"], "label": [1, 0]},
        features=Features({"id": Value("string"), "text": Value("string"), "label": ClassLabel(names=meta.labels)}),
    )
    features = cls_preprocess.encode_split(raw, tokenizer, 12, "longest_first", [0, 1, 2], meta.windows)
    table = CLS.predict(model, tokenizer, raw, features, meta, task)
    assert list(table["id"]) == ["1", "2"] and list(table["truncated"]) == [False, False]
    rows = [r for r, e in enumerate(features["example_index"]) if e == 0]
    model.eval()
    with torch.no_grad():
        logits = [model(input_ids=torch.tensor([features[r]["input_ids"]])).logits[0].numpy() for r in rows]
    expected = torch.softmax(torch.from_numpy(np.max(logits, axis=0)), dim=-1)
    assert table["probs"][0] == pytest.approx(expected.tolist(), abs=1e-5)


def test_short_documents_predict_identically_with_windows_on_and_off(tiny_model_dir: Path) -> None:
    meta_off = ClassificationMeta(labels=["a", "b"], labels_missing_from_train=[], text_fields=["text"], pair=False)
    meta_on = meta_off.model_copy(update={"windows": ClassificationWindows(stride=4, aggregate="max")})
    task = validate_task("c", cls_section(tiny_model_dir, max_length=64))
    tokenizer = load_tokenizer(task.model)
    model = CLS.build_model(task, meta_off)
    records = [{"text": "Paris in spring"}, {"text": "Obama visited Berlin yesterday with companions"}]
    assert CLS.predict_records(model, tokenizer, records, meta_off, task) == CLS.predict_records(
        model, tokenizer, records, meta_on, task
    )
    [long] = CLS.predict_records(
        model, tokenizer, [{"text": " ".join(WORDS * 3)}], meta_on, validate_task("c", cls_section(tiny_model_dir))
    )
    assert set(long["probs"]) == {"a", "b"} and abs(sum(long["probs"].values()) - 1) < 1e-4


# end to end through the generic train and evaluate --------------------------------------


def write_params(root: Path, name: str, section: dict[str, Any]) -> None:
    (root / "params.yaml").write_text(
        json.dumps({"pipeline": {"tasks": {name: section["type"]}}, "tasks": {name: section}}), encoding="utf-8"
    )


def prepare(name: str, section: dict[str, Any], family: str) -> tuple[Any, Any, Any, dict[str, Any]]:
    """download + tokenize as the stages do, in the current directory."""
    from reprotune import tasks

    task = validate_task(name, section)
    sources, preprocess = tasks.sources(family), tasks.preprocess(family)
    raw, report = sources.load_raw(task.download)
    raw = make_missing_splits(raw, task.download.make_splits, sources.SPLIT_GROUP_COLUMN)
    sources.validate_raw(raw, task)
    save_dataset(raw, paths.raw_dir(name), {"download_report.json": report})
    tokenizer = load_tokenizer(task.model, pretokenized=tasks.params_module(family).PRETOKENIZED_INPUT)
    meta = preprocess.prepare_meta(raw, report, task)
    features, tokenize_report = preprocess.tokenize(raw, tokenizer, tasks.load_task(name, "tokenize"), meta)
    save_dataset(features, paths.tokenized_dir(name), {"meta.json": meta.model_dump(mode="json")})
    return task, raw, features, tokenize_report


def test_ner_windows_train_and_evaluate_through_the_generic_flow(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiny_ner import tiny_task

    from reprotune.evaluation.evaluate import evaluate
    from reprotune.tasks import load_task
    from reprotune.tasks.ner.metrics import score
    from reprotune.training.train import train

    section = tiny_task(tmp_path / "data-src", tiny_model_dir)
    section["tokenize"] = {"max_length": 16, "windows": {"stride": 4}}
    section["train_full"] |= {"max_steps": 6, "epochs": 1, "learning_rate": 5e-3}
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, "tiny_ner", section)
    task, raw, features, report = prepare("tiny_ner", section, "ner")
    for split in ("train", "validation", "test"):
        assert report[split]["words_cut_by_truncation"] == 0 and report[split]["sentences_windowed"] > 0
        assert report[split]["windows"] == len(features[split]) > report[split]["sentences"] == len(raw[split])
    meta = NerMeta(
        labels=json.loads((paths.tokenized_dir("tiny_ner") / "meta.json").read_text())["labels"],
        types_missing_from_train=[],
    )

    info = train("tiny_ner", "full", load_task("tiny_ner", "train-full"))
    model = NER.build_model(task, meta, source=str(paths.model_dir("tiny_ner", "full")))
    tokenizer = load_tokenizer(task.model, pretokenized=True)
    validation = NER.predict(model, tokenizer, raw["validation"], features["validation"], meta, task)
    assert info["best_checkpoint_metric"] == pytest.approx(score(validation, meta, task)["f1"], abs=1e-6)

    metrics = evaluate("tiny_ner", "full", load_task("tiny_ner", "evaluate-full"))
    table = pd.read_parquet(paths.predictions_file("tiny_ner", "full"))
    assert len(table) == len(raw["test"]) and list(table["id"]) == list(raw["test"]["id"])
    assert all(
        len(pred) == len(tokens) and min(s) > 0
        for pred, tokens, s in zip(table["pred"], table["tokens"], table["score"])
    ), "no word is lost"
    assert metrics["f1"] == score(table, meta, task)["f1"]


def test_classification_windows_train_and_evaluate_through_the_generic_flow(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiny_classification import tiny_task

    from reprotune.evaluation.evaluate import evaluate
    from reprotune.tasks import load_task
    from reprotune.tasks.classification.metrics import score
    from reprotune.training.train import train

    section = tiny_task(tmp_path / "data-src", tiny_model_dir)
    section["tokenize"] = {"max_length": 10, "windows": {"stride": 3, "aggregate": "mean"}}
    section["train_full"] |= {"max_steps": 6, "epochs": 1, "metric_for_best_model": "accuracy"}
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, "tiny_cls", section)
    task, raw, features, report = prepare("tiny_cls", section, "classification")
    for split in ("train", "validation", "test"):
        assert report[split]["truncated"] == 0 and report[split]["examples_windowed"] > 0
        assert report[split]["windows"] == len(features[split]) > report[split]["examples"] == len(raw[split])
    meta = ClassificationMeta.model_validate(json.loads((paths.tokenized_dir("tiny_cls") / "meta.json").read_text()))
    assert meta.windows == ClassificationWindows(stride=3, aggregate="mean")

    info = train("tiny_cls", "full", load_task("tiny_cls", "train-full"))
    model = CLS.build_model(task, meta, source=str(paths.model_dir("tiny_cls", "full")))
    tokenizer = load_tokenizer(task.model)
    validation = CLS.predict(model, tokenizer, raw["validation"], features["validation"], meta, task)
    assert info["best_checkpoint_metric"] == pytest.approx(score(validation, meta, task)["accuracy"], abs=1e-6)

    metrics = evaluate("tiny_cls", "full", load_task("tiny_cls", "evaluate-full"))
    table = pd.read_parquet(paths.predictions_file("tiny_cls", "full"))
    assert len(table) == len(raw["test"]) and list(table["id"]) == list(raw["test"]["id"])
    assert metrics["accuracy"] == pytest.approx((table["gold"] == table["pred"]).mean())
    first = table.iloc[0]
    [record] = CLS.predict_records(model, tokenizer, [{"text": first["text"]}], meta, task)
    assert record["label"] == first["pred"] and record["confidence"] == pytest.approx(first["confidence"], abs=1e-5)
