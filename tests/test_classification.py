"""Classification family: sources (TSV with/without header, pairs, folders, Hub
ClassLabel), stable labels, bad-value errors, sklearn scores, error analysis, and a
train -> predict -> score run on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from tiny_classification import THINGS

from reprotune import tasks
from reprotune.core import paths
from reprotune.core.arrow import load_dataset_dir, save_dataset
from reprotune.core.errors import ReprotuneError
from reprotune.evaluation.evaluate import evaluate, load_method_model
from reprotune.modeling.tokenizer import load_tokenizer
from reprotune.sources.hub import rename_splits
from reprotune.sources.splits import make_missing_splits
from reprotune.tasks import validate_task
from reprotune.tasks.classification.analysis import (
    full_against_lora,
    length_buckets,
    write_analysis,
)
from reprotune.tasks.classification.family import FAMILY
from reprotune.tasks.classification.metrics import classification_scores
from reprotune.tasks.classification.params import PRETOKENIZED_INPUT, ClassificationDownloadParams, ClassificationMeta
from reprotune.tasks.classification.preprocess import iter_labels, prepare_meta, tokenize
from reprotune.tasks.classification.sources import (
    SPLIT_GROUP_COLUMN,
    Collected,
    hub_rows,
    load_raw,
    one_source_split_each,
    validate_raw,
)

TINY = {"max_steps": 4, "batch_size": 8, "eval_batch_size": 16, "logging_steps": 1}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def section(model_dir: Path | str, download: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "type": "classification",
        "model": {"name_or_path": str(model_dir)},
        "download": download,
        "tokenize": {"max_length": 32},
        "train_full": {**TINY, "learning_rate": 1e-3},
        "train_lora": {**TINY, "learning_rate": 1e-2, "r": 4, "alpha": 8},
        "evaluate": {"batch_size": 16},
        "error_analysis": {"worst_n": 3},
        **overrides,
    }


def load(download: dict[str, Any]) -> tuple[DatasetDict, dict[str, Any]]:
    task = validate_task("t", section("unused", download))
    return load_raw(task.download)


def download_params(**keys: Any) -> ClassificationDownloadParams:
    return ClassificationDownloadParams.model_validate({"source": "hub", "dataset": "demo", **keys})


# sources ------------------------------------------------------------------------


def test_tsv_with_header_reads_columns_by_name(tmp_path: Path) -> None:
    path = write(tmp_path / "train.tsv", "sentence\tlabel\nA fine day .\tpos\nA grim day .\tneg\n\nOkay day .\tpos\n")
    raw, report = load({"source": "tsv", "path": str(path), "text_fields": ["sentence"]})
    train = raw["train"]
    assert train["text"] == ["A fine day .", "A grim day .", "Okay day ."]
    assert list(iter_labels(train)) == ["pos", "neg", "pos"]
    assert train["id"] == ["train.tsv:2", "train.tsv:3", "train.tsv:5"], "ids are file:line (blank lines counted)"
    assert report["labels"] == ["neg", "pos"] and report["label_order"] == "sorted"


def test_headerless_cola_tsv_columns_by_position_keep_quote_marks(tmp_path: Path) -> None:
    text = 'gj04\t1\t\tThe "sailors" rode the breeze.\ngj04\t0\t*\tThe more you eat the less.\n'
    train = write(tmp_path / "in_domain_train.tsv", text)
    dev_a = write(tmp_path / "in_domain_dev.tsv", "gj04\t0\t*\tHe seem happy.\n")
    dev_b = write(tmp_path / "out_of_domain_dev.tsv", "clc95\t1\t\tSomebody just left.\n")
    raw, report = load(
        {
            "source": "tsv",
            "header": False,
            "text_fields": [3],
            "label_field": 1,
            "files": {"train": str(train), "test": [str(dev_a), str(dev_b)]},
            "label_map": {"0": "unacceptable", "1": "acceptable"},
            "labels": ["unacceptable", "acceptable"],
        }
    )
    assert raw["train"]["text"][0] == 'The "sailors" rode the breeze.'
    assert list(iter_labels(raw["train"])) == ["acceptable", "unacceptable"]
    assert raw["test"]["id"] == ["in_domain_dev.tsv:1", "out_of_domain_dev.tsv:1"], "a list of files per split"
    assert report["labels"] == ["unacceptable", "acceptable"] and report["label_order"] == "download.labels"


def test_headerless_columns_can_be_named(tmp_path: Path) -> None:
    path = write(tmp_path / "d.tsv", "s1\t1\t\tGood .\ns1\t0\t*\tBad .\n")
    raw, _ = load(
        {
            "source": "tsv",
            "path": str(path),
            "header": False,
            "columns": ["source", "label", "mark", "sentence"],
            "text_fields": ["sentence"],
        }
    )
    assert raw["train"]["text"] == ["Good .", "Bad ."]
    with pytest.raises(ReprotuneError, match=r"'sentence' names a column, but .*d\.tsv has no header"):
        load({"source": "tsv", "path": str(path), "header": False, "text_fields": ["sentence"]})


def test_sentence_pairs_from_jsonl_become_two_segments(tmp_path: Path, tiny_model_dir: Path) -> None:
    lines = [
        {"premise": "A man sleeps .", "hypothesis": "A man rests .", "gold": "entailment"},
        {"premise": "A dog runs .", "hypothesis": "A cat sits .", "gold": "contradiction"},
        {"premise": "Kids play .", "hypothesis": "Kids play outside .", "gold": "neutral"},
    ]
    path = write(tmp_path / "pairs.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n")
    task = validate_task(
        "t",
        section(
            tiny_model_dir,
            {
                "source": "jsonl",
                "files": {"train": str(path), "test": str(path)},
                "text_fields": ["premise", "hypothesis"],
                "label_field": "gold",
                "id_field": "premise",
            },
        ),
    )
    raw, report = load_raw(task.download)
    assert raw["test"]["text_pair"] == ["A man rests .", "A cat sits .", "Kids play outside ."]
    meta = prepare_meta(raw, report, task)
    assert meta.pair and meta.labels == ["contradiction", "entailment", "neutral"]
    features, _ = tokenize(
        DatasetDict({"train": raw["train"], "test": raw["test"]}), load_tokenizer(task.model), task, meta
    )
    first = features["test"][0]
    assert 0 in first["token_type_ids"] and 1 in first["token_type_ids"], "premise and hypothesis are two segments"
    assert features["test"]["labels"] == [1, 0, 2]


def test_predict_records_for_a_pair_task_needs_text_pair(tiny_model_dir: Path) -> None:
    task = validate_task("t", section(tiny_model_dir, {"source": "hub", "text_fields": ["premise", "hypothesis"]}))
    meta = ClassificationMeta(
        labels=["entailment", "neutral", "contradiction"],
        labels_missing_from_train=[],
        text_fields=["premise", "hypothesis"],
        pair=True,
    )
    model = FAMILY.build_model(task, meta)
    tokenizer = load_tokenizer(task.model)
    out = FAMILY.predict_records(
        model, tokenizer, [{"text": "A man sleeps .", "text_pair": "A man rests ."}], meta, task
    )
    assert out[0]["text_pair"] == "A man rests ." and out[0]["label"] in meta.labels
    assert sum(out[0]["probs"].values()) == pytest.approx(1, abs=1e-4)
    with pytest.raises(ReprotuneError, match="input record 2 lacks field 'text_pair'"):
        FAMILY.predict_records(model, tokenizer, [{"text": "a", "text_pair": "b"}, {"text": "c"}], meta, task)


def test_folder_per_class_with_title_and_body(tmp_path: Path) -> None:
    root = tmp_path / "news"
    write(root / "sport" / "001.txt", "Team wins cup\n\nThe team won the cup.\nFans cheered.\n")
    write(root / "tech" / "001.txt", "New phone out\n\nA phone was released.\n")
    write(root / "tech" / "notes.md", "not an article")
    write(root / "tech" / "._001.txt", "\x00\x05 macOS resource fork")
    write(root / "tech" / ".draft" / "002.txt", "hidden")
    raw, _ = load({"source": "folders", "path": str(root), "text_fields": ["title", "body"], "pattern": "**/*.txt"})
    train = raw["train"]
    assert train["id"] == ["sport/001.txt", "tech/001.txt"]
    assert train["text"] == ["Team wins cup", "New phone out"]
    assert train["text_pair"][0] == "The team won the cup.\nFans cheered."
    assert list(iter_labels(train)) == ["sport", "tech"]
    whole, _ = load({"source": "folders", "path": str(root)})
    assert whole["train"]["text"][1] == "New phone out\n\nA phone was released."


def test_folder_file_not_utf8_fails_or_is_replaced(tmp_path: Path) -> None:
    root = tmp_path / "news"
    write(root / "a" / "1.txt", "Title\nBody\n")
    (root / "b").mkdir()
    (root / "b" / "2.txt").write_bytes(b"Fee\nA \xa315m signing\n")
    with pytest.raises(ReprotuneError, match=r"2\.txt:2: not valid UTF-8.*invalid_utf8: replace"):
        load({"source": "folders", "path": str(root)})
    raw, report = load({"source": "folders", "path": str(root), "invalid_utf8": "replace"})
    assert "\ufffd15m" in raw["train"]["text"][1] and report["files_not_utf8"]["files"] == ["b/2.txt"]


def test_hf_parquet_export_keeps_classlabel_names_and_drops_no_gold_label(tmp_path: Path) -> None:
    """`Dataset.to_parquet` stores ids plus the ClassLabel names in the schema metadata."""
    names = ["entailment", "neutral", "contradiction"]
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})
    dataset = Dataset.from_dict({"text": ["a", "b", "c", "d"], "label": [2, -1, 0, 2]}, features=features)
    dataset.to_parquet(str(tmp_path / "train.parquet"))
    # Another column of an Arrow type `datasets` has no feature for must not matter.
    table = pq.read_table(tmp_path / "train.parquet")
    extra = pa.array([[("k", 1)]] * 4, type=pa.map_(pa.string(), pa.int64()))
    pq.write_table(
        table.append_column("extra", extra).replace_schema_metadata(table.schema.metadata), tmp_path / "train.parquet"
    )
    raw, report = load({"source": "parquet", "path": str(tmp_path / "train.parquet")})
    assert report["labels"] == names and report["label_order"] == "source ClassLabel"
    assert report["dropped"]["no_gold_label"] == {"train": 1}
    assert [names[i] for i in raw["train"]["label"]] == ["contradiction", "entailment", "contradiction"]


def test_tsv_quoting_csv_reads_pandas_exports(tmp_path: Path) -> None:
    path = write(tmp_path / "d.tsv", 'text\tlabel\n"He said ""hi"""\tpos\n"a\ttab"\tneg\nplain\tpos\n')
    raw, _ = load({"source": "tsv", "path": str(path), "tsv_quoting": "csv"})
    assert raw["train"]["text"] == ['He said "hi"', "a\ttab", "plain"]
    with pytest.raises(ReprotuneError, match=r"d\.tsv:3: expected 2 columns"):
        load({"source": "tsv", "path": str(path)})


def test_json_file_with_a_byte_order_mark_or_json_lines_loads(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]', encoding="utf-8-sig")
    raw, _ = load({"source": "json", "path": str(path)})
    assert raw["train"]["text"] == ["a", "b"]
    exported = write(tmp_path / "e.json", '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    raw, _ = load({"source": "json", "path": str(exported)})  # HF `to_json` writes JSON lines
    assert raw["train"]["text"] == ["a", "b"] and raw["train"]["id"] == ["e.json:1", "e.json:2"]


def test_hub_classlabel_order_kept_and_no_gold_label_rows_dropped() -> None:
    names = ["entailment", "neutral", "contradiction"]
    features = Features({"premise": Value("string"), "hypothesis": Value("string"), "label": ClassLabel(names=names)})
    dataset = Dataset.from_dict(
        {"premise": ["p1", "p2", "p3", "p4"], "hypothesis": ["h1", "h2", "h3", "h4"], "label": [2, -1, 0, -1]},
        features=features,
    )
    collected = Collected()
    rows = hub_rows(dataset, download_params(text_fields=["premise", "hypothesis"]), "train", collected)
    assert [(r["id"], r["text_pair"], r["label"]) for r in rows] == [
        ("train:0", "h1", "contradiction"),
        ("train:2", "h3", "entailment"),
    ]
    assert collected.dropped["no_gold_label"]["train"] == 2
    assert collected.source_order == names, "the ClassLabel order, not sorted"


def test_hub_split_without_gold_labels_is_refused() -> None:
    dataset = Dataset.from_dict(
        {"sentence": ["a", "b"], "label": [-1, -1]},
        features=Features({"sentence": Value("string"), "label": ClassLabel(names=["x", "y"])}),
    )
    with pytest.raises(ReprotuneError, match=r"split 'test' has no gold labels.*test: validation"):
        hub_rows(dataset, download_params(text_fields=["sentence"]), "test", Collected())


def test_glue_test_mapped_to_validation_leaves_validation_to_be_carved() -> None:
    source = DatasetDict(
        {
            name: Dataset.from_dict({"x": list(range(size))})
            for name, size in (("train", 30), ("validation", 5), ("test", 7))
        }
    )
    mapping = {"train": "train", "test": "validation"}
    renamed = one_source_split_each(rename_splits(source, mapping), mapping)
    assert set(renamed) == {"train", "test"} and len(renamed["test"]) == 5
    assert (
        len(
            make_missing_splits(renamed, validate_task("t", section("m", {"source": "hub"})).download.make_splits)[
                "validation"
            ]
        )
        == 3
    )
    both = {"validation": "validation", "test": "validation"}
    with pytest.raises(ReprotuneError, match="maps both"):
        one_source_split_each(rename_splits(source, both), both)


# labels -------------------------------------------------------------------------


def test_label_mapping_stays_the_same_from_train_to_test(tmp_path: Path, tiny_model_dir: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\nten,10\nnine,9\ntwo,2\nnine again,9\n")
    test = write(tmp_path / "test.csv", "text,label\nnine b,9\nten b,10\n")
    task = validate_task(
        "t", section(tiny_model_dir, {"source": "csv", "files": {"train": str(train), "test": str(test)}})
    )
    raw, download_report = load_raw(task.download)
    meta = prepare_meta(raw, download_report, task)
    assert meta.labels == ["2", "9", "10"], "integer labels sort as numbers"
    features, report = tokenize(raw, load_tokenizer(task.model), task, meta)
    assert features["train"]["labels"] == [2, 1, 0, 1]
    assert features["test"]["labels"] == [1, 2], "test rows get the ids fixed from train"
    assert report["test"]["label_counts"] == {"10": 1, "9": 1}
    ordered = task.model_copy(update={"download": task.download.model_copy(update={"labels": ["10", "9", "2"]})})
    raw2, report2 = load_raw(ordered.download)
    assert prepare_meta(raw2, report2, ordered).labels == ["10", "9", "2"]


def test_label_unseen_in_train_names_split_and_row(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\na,x\nb,y\n")
    test = write(tmp_path / "test.csv", "text,label\nc,x\nd,z\n")
    task = validate_task(
        "t",
        section("m", {"source": "csv", "files": {"train": str(train), "validation": str(train), "test": str(test)}}),
    )
    raw, _ = load_raw(task.download)
    with pytest.raises(ReprotuneError, match=r"test row 2 \(id test\.csv:3\): label 'z' does not occur in train"):
        validate_raw(raw, task)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,label\na,0\nb,1\nc,one\nd,0\n", r"bad\.csv:4: label 'one' in column 'label' is not an integer"),
        ("text,label\na,pos\nb,\nc,neg\n", r"bad\.csv:3: empty label in column 'label'"),
        ("text,label\na,pos\nb,neg\nc,meh\n", r"bad\.csv:4: label 'meh' is not in download\.labels"),
    ],
)
def test_bad_label_value_names_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path / "bad.csv", content)
    with pytest.raises(ReprotuneError, match=message):
        load({"source": "csv", "path": str(path), **({"labels": ["neg", "pos"]} if "meh" in content else {})})


def test_bad_label_in_jsonl_and_label_map_miss_name_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n{"text": "c", "label": 3}\n'
    )
    with pytest.raises(ReprotuneError, match=r"d\.jsonl:3: label '3' is not a key of download\.label_map"):
        load({"source": "jsonl", "path": str(path), "label_map": {"0": "no", "1": "yes"}})
    path = write(tmp_path / "e.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": null}\n')
    with pytest.raises(ReprotuneError, match=r"e\.jsonl:2: empty label"):
        load({"source": "jsonl", "path": str(path)})


def test_row_with_wrong_column_count_or_empty_text(tmp_path: Path) -> None:
    path = write(tmp_path / "d.tsv", "a\t1\nb\t0\textra\n")
    with pytest.raises(ReprotuneError, match=r"d\.tsv:2: expected 2 columns.*found 3"):
        load({"source": "tsv", "path": str(path), "header": False, "text_fields": [0], "label_field": 1})
    path = write(tmp_path / "e.tsv", "text\tlabel\na\t1\n \t0\nc\t0\n")
    with pytest.raises(ReprotuneError, match=r"e\.tsv:3: empty text in column 'text'.*empty_text: drop"):
        load({"source": "tsv", "path": str(path)})
    raw, report = load({"source": "tsv", "path": str(path), "empty_text": "drop"})
    assert raw["train"]["text"] == ["a", "c"] and report["dropped"]["empty_text"] == {"train": 1}


def test_params_refuse_three_text_fields_and_columns_with_header() -> None:
    with pytest.raises(ReprotuneError, match=r"tasks\.t\.download\.text_fields"):
        validate_task("t", section("m", {"source": "csv", "text_fields": ["a", "b", "c"]}))
    with pytest.raises(ReprotuneError, match="set header: false"):
        validate_task("t", section("m", {"source": "tsv", "columns": ["a", "b"]}))
    with pytest.raises(ReprotuneError, match=r"unknown key 'tasks\.t\.download\.text_field' \(did you mean"):
        validate_task("t", section("m", {"source": "csv", "text_field": "a"}))


def test_column_positions_with_a_header_that_is_really_data_are_refused(tmp_path: Path) -> None:
    """The raw CoLA file has no header: header: true would silently lose its first row."""
    cola = write(
        tmp_path / "cola.tsv",
        "gj04\t1\t\tOur friends won't buy it.\ngj04\t0\t*\tOne more pseudo.\ngj04\t1\t\tThe more we study.\n",
    )
    with pytest.raises(ReprotuneError, match=r"cola\.tsv:1: download\.header is true.*'1'.*header: false"):
        load({"source": "tsv", "path": str(cola), "text_fields": [3], "label_field": 1})
    named = write(tmp_path / "named.tsv", "sentence\tlabel\nA.\tpos\nB.\tneg\nC.\tpos\n")
    raw, _ = load({"source": "tsv", "path": str(named), "text_fields": [0], "label_field": 1})
    assert raw["train"]["text"] == ["A.", "B.", "C."]
    headerless = write(tmp_path / "h.tsv", "A.\tpos\nB.\tneg\nC.\tpos\n")
    with pytest.raises(ReprotuneError, match=r"h\.tsv:1: .*'pos' looks like a label"):
        load({"source": "tsv", "path": str(headerless), "text_fields": [0], "label_field": 1})


def test_yaml_numbers_in_label_params_are_taken_as_text(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.jsonl",
        "".join(f'{{"text": "t{i}", "label": {label}}}\n' for i, label in enumerate([1, 0, -1, 1, 0])),
    )
    raw, report = load(
        {
            "source": "jsonl",
            "path": str(path),
            "skip_labels": [-1],
            "label_map": {0: "neg", 1: "pos"},
            "labels": ["neg", "pos"],
        }
    )
    assert report["dropped"]["skip_labels"] == {"train": 1}
    assert [report["labels"][i] for i in raw["train"]["label"]] == ["pos", "neg", "pos", "neg"]


# metrics and analysis -----------------------------------------------------------------


def test_mcc_matches_a_hand_computed_case() -> None:
    # TP 3, TN 4, FP 1, FN 2: MCC = (3*4 - 1*2) / sqrt((3+1)(3+2)(4+1)(4+2)) = 10 / sqrt(600)
    gold = ["y"] * 3 + ["n"] * 4 + ["n"] + ["y"] * 2
    pred = ["y"] * 3 + ["n"] * 4 + ["y"] + ["n"] * 2
    scores = classification_scores(gold, pred, ["n", "y"])
    assert scores["mcc"] == pytest.approx(10 / math.sqrt(600), abs=1e-6)
    assert scores["accuracy"] == pytest.approx(0.7)
    assert scores["per_class"]["y"] == {
        "precision": 0.75,
        "recall": 0.6,
        "f1": pytest.approx(2 / 3, abs=1e-6),
        "support": 5,
    }
    # macro-F1: F1(n) = 2*0.667*0.8/(1.467) = 8/11; F1(y) = 2/3
    assert scores["macro_f1"] == pytest.approx((8 / 11 + 2 / 3) / 2, abs=1e-6)


def predictions_frame(gold: list[str], pred: list[str], confidence: list[float]) -> pd.DataFrame:
    texts = ["w " * (i + 1) for i in range(len(gold))]
    return pd.DataFrame(
        {"id": [f"r{i}" for i in range(len(gold))], "text": texts, "gold": gold, "pred": pred, "confidence": confidence}
    )


def test_full_against_lora_counts_who_was_right() -> None:
    gold = ["a", "a", "b", "b", "a"]
    full = predictions_frame(gold, ["a", "b", "b", "a", "b"], [0.9] * 5)
    lora = predictions_frame(gold, ["a", "a", "a", "a", "b"], [0.8] * 5)
    counts, table = full_against_lora(full, lora)
    assert counts == {
        "examples": 5,
        "both_right": 1,
        "only_full_right": 1,
        "only_lora_right": 1,
        "both_wrong": 2,
        "disagree": 2,
        "both_wrong_same_label": 2,
    }
    assert list(zip(table["id"], table["right"])) == [("r1", "lora"), ("r2", "full")]


def test_length_buckets_by_edges_and_quantiles() -> None:
    words = pd.Series([1, 4, 5, 9, 10, 30])
    assert list(length_buckets(words, [5, 10])) == ["0-4", "0-4", "5-9", "5-9", "10+", "10+"]
    assert len(set(length_buckets(words, 2))) == 2


def test_analyse_writes_confusion_csvs_mistakes_and_summary(tmp_path: Path) -> None:
    gold = ["a", "a", "b", "b"]
    full = predictions_frame(gold, ["a", "b", "b", "b"], [0.9, 0.6, 0.7, 0.8])
    lora = predictions_frame(gold, ["a", "b", "a", "b"], [0.5, 0.99, 0.55, 0.7])
    baseline = predictions_frame(gold, ["b", "b", "b", "b"], [0.51] * 4)
    summary = write_analysis(
        {"baseline": baseline, "full": full, "lora": lora}, ["a", "b"], 5, 2, tmp_path / "r", tmp_path / "c"
    )
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["baseline.csv", "full.csv", "lora.csv"]
    assert summary["methods"]["baseline"]["accuracy"] == 0.5
    confusion = pd.read_csv(tmp_path / "c" / "lora.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == 4
    assert summary["methods"]["full"]["accuracy"] == 0.75 and summary["methods"]["lora"]["errors"] == 2
    assert summary["methods"]["lora"]["top_confusions"] == [
        {"actual": "a", "predicted": "b", "count": 1},
        {"actual": "b", "predicted": "a", "count": 1},
    ]
    mistakes = pd.read_csv(tmp_path / "r" / "mistakes.csv")
    assert set(mistakes["method"]) == {"full", "lora"}, "baseline mistakes are noise, not listed"
    assert list(mistakes[mistakes["method"] == "lora"]["confidence"]) == [0.99, 0.55], "most confident first"
    text = (tmp_path / "r" / "summary.md").read_text()
    assert "Full against LoRA" in text and "most confident mistakes (lora)" in text
    matrix = pd.read_csv(tmp_path / "r" / "confusion_matrix_full.csv")
    assert matrix.to_dict("records") == [{"actual": "a", "a": 1, "b": 1}, {"actual": "b", "a": 0, "b": 2}]


# train -> predict -> score on the tiny model ---------------------------------------------


def run_stages(task_name: str, task: Any) -> dict[str, pd.DataFrame]:
    """What the stages do, in the current directory: download, tokenize, train, evaluate."""
    from reprotune.training.train import train

    raw, report = load_raw(task.download)
    raw = make_missing_splits(raw, task.download.make_splits, SPLIT_GROUP_COLUMN)
    validate_raw(raw, task)
    save_dataset(raw, paths.raw_dir(task_name))
    meta = prepare_meta(raw, report, task)
    features, _ = tokenize(raw, load_tokenizer(task.model, pretokenized=PRETOKENIZED_INPUT), task, meta)
    save_dataset(features, paths.tokenized_dir(task_name), {"meta.json": meta.model_dump(mode="json")})
    for method in ("full", "lora"):
        train(task_name, method, task)
    for method in ("baseline", "full", "lora"):
        evaluate(task_name, method, task)
    return {
        method: pd.read_parquet(paths.predictions_file(task_name, method)) for method in ("baseline", "full", "lora")
    }


def test_train_predict_score_on_the_tiny_model(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A learnable toy task (the label is the colour word) through the Trainer, full and LoRA."""
    monkeypatch.chdir(tmp_path)
    colours = {"red": "warm", "orange": "warm", "yellow": "warm", "blue": "cold", "green": "cold", "grey": "cold"}
    things = THINGS
    lines = ["text\tlabel"] + [
        f"the {colour} {thing} is here\t{label}" for thing in things for colour, label in colours.items()
    ]
    write(tmp_path / "toy.tsv", "\n".join(lines) + "\n")
    task = validate_task(
        "toy",
        section(
            tiny_model_dir,
            {"source": "tsv", "path": "toy.tsv", "make_splits": {"validation": 0.1, "test": 0.25, "seed": 3}},
            train_full={
                "max_steps": 80,
                "batch_size": 8,
                "learning_rate": 3e-3,
                "logging_steps": 10,
                "metric_for_best_model": "mcc",
            },
            train_lora={
                "max_steps": 6,
                "batch_size": 8,
                "learning_rate": 1e-2,
                "r": 4,
                "alpha": 8,
                "logging_steps": 10,
            },
        ),
    )
    predictions = run_stages("toy", task)
    test = load_dataset_dir(paths.raw_dir("toy"), "download")["test"]
    raw_test = dict(zip(test["id"], iter_labels(test)))
    for method, frame in predictions.items():
        assert len(frame) == len(raw_test) == 30
        assert dict(zip(frame["id"], frame["gold"])) == raw_test
        probs = frame["probs"].map(list)
        assert all(abs(sum(p) - 1) < 1e-4 and abs(max(p) - c) < 1e-6 for p, c in zip(probs, frame["confidence"]))
        metrics = json.loads(paths.metrics_file("toy", method).read_text())
        assert metrics["accuracy"] == pytest.approx((frame["gold"] == frame["pred"]).mean())
    assert json.loads(paths.metrics_file("toy", "full").read_text())["accuracy"] >= 0.9, "full fine-tuning learns"
    full_cost = json.loads(paths.cost_file("toy", "full").read_text())
    lora_cost = json.loads(paths.cost_file("toy", "lora").read_text())
    assert lora_cost["trainable_params"] < full_cost["trainable_params"]
    meta = tasks.parse_meta("classification", json.loads((paths.tokenized_dir("toy") / "meta.json").read_text()))
    summary = tasks.analysis("classification").analyse(
        predictions, meta, task, tmp_path / "report", tmp_path / "confusion"
    )
    model = load_method_model("toy", "lora", task, FAMILY, meta)
    first = predictions["lora"].iloc[0]
    records = FAMILY.predict_records(model, load_tokenizer(task.model), [{"text": first["text"]}], meta, task)
    assert records[0]["label"] == first["pred"] and records[0]["confidence"] == pytest.approx(first["confidence"])
    assert set(records[0]["probs"]) == set(meta.labels)
    assert summary["full_vs_lora"]["examples"] == 30
    assert (tmp_path / "report" / "summary.md").read_text().startswith("# Classification error analysis")
