"""NER family: CoNLL reading, IOB2 repair, tag alignment, strict entity scores, error classes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from reprotune.core.errors import ReprotuneError
from reprotune.tasks.ner.analysis import classify_errors
from reprotune.tasks.ner.family import word_predictions
from reprotune.tasks.ner.metrics import entities, entity_scores
from reprotune.tasks.ner.preprocess import align_labels, begin_to_inside, tokenize_batch
from reprotune.tasks.ner.sources import check_and_repair, label_list, read_conll

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(tmp_path: Path, text: str, name: str = "data.conll") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_conll_skips_docstart_strips_prefix_and_splits_on_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "-DOCSTART- O\n\nen:Paris\tB-LOC\nen:is\tO\n\t\nen:Bob\tB-PER\n")
    rows = read_conll(path, token_prefix="en:")
    assert [r["tokens"] for r in rows] == [["Paris", "is"], ["Bob"]]
    assert [r["tags"] for r in rows] == [["B-LOC", "O"], ["B-PER"]]


def test_conll_byte_order_marks_opening_a_line_are_dropped(tmp_path: Path) -> None:
    """A BOM starts files saved on Windows and, after `cat`, sits alone on a line."""
    path = write(tmp_path, "\ufeffParis\tB-LOC\nis\tO\n\ufeff\nBob\tB-PER\n\ufeff")
    rows = read_conll(path)
    assert [r["tokens"] for r in rows] == [["Paris", "is"], ["Bob"]]
    assert [r["line"] for r in rows] == [1, 4]


def test_conll_columns_by_index_with_whitespace_separator(tmp_path: Path) -> None:
    path = write(tmp_path, "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    rows = read_conll(path, token_column=0, tag_column=3, separator=None)
    assert rows[0]["tokens"] == ["EU", "rejects"] and rows[0]["tags"] == ["B-ORG", "O"]


def test_conll_wrong_column_count_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "a\tO\nb\tO\n\nc\tO\textra\n")
    with pytest.raises(ReprotuneError, match=r"data\.conll:4: expected 2 columns"):
        read_conll(path)


def test_conll_non_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.conll"
    path.write_bytes(b"a\tO\n\xff\xfe\tO\n")
    with pytest.raises(ReprotuneError, match=r"bad\.conll:2: not valid UTF-8"):
        read_conll(path)


def test_iob_repair_turns_orphan_inside_into_begin() -> None:
    tags, repairs = check_and_repair(["O", "I-PER", "I-PER", "I-LOC"], repair=True, where="x")
    assert tags == ["O", "B-PER", "I-PER", "B-LOC"] and repairs == 2


def test_iob_fail_mode_and_non_iob_tags_raise() -> None:
    with pytest.raises(ReprotuneError, match="follows 'O'"):
        check_and_repair(["O", "I-PER"], repair=False, where="train sentence 3")
    with pytest.raises(ReprotuneError, match="is not IOB2"):
        check_and_repair(["PER"], repair=True, where="x")


def test_label_list_is_stable_and_complete() -> None:
    assert label_list({"B-PER", "O", "I-LOC"}) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_alignment_labels_first_subtoken_only() -> None:
    # words: [New, York] -> sub-tokens [CLS] New Yo ##rk [SEP]
    word_ids = [None, 0, 1, 1, None]
    assert align_labels(word_ids, [1, 2], False, {}) == [-100, 1, 2, -100, -100]


def test_alignment_label_all_tokens_uses_inside_for_begin_words() -> None:
    labels = ["O", "B-LOC", "I-LOC"]
    word_ids = [None, 0, 0, 0, None]
    assert align_labels(word_ids, [1], True, begin_to_inside(labels)) == [-100, 1, 2, 2, -100]


def test_tokenize_batch_counts_words_cut_by_truncation(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    batch = {"tokens": [["Paris", "is", "big", "and", "old"]], "tags": [["B-LOC", "O", "O", "O", "O"]]}
    out = tokenize_batch(batch, tokenizer, ["O", "B-LOC", "I-LOC"], max_length=4, label_all_tokens=False)
    assert out["labels"][0] == [-100, 1, 0, -100]
    assert out["words_cut"] == [3] and out["words_dropped"] == [0]


def test_word_predictions_take_first_subtoken_and_mark_missing_words() -> None:
    assert word_predictions([-1, 0, 0, 2, -1], [9, 1, 5, 3, 9], 3) == [1, None, 3]


def test_strict_entities_ignore_stray_inside_tags() -> None:
    assert entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"]) == {("PER", 0, 2), ("LOC", 4, 5)}


def test_entity_scores_match_hand_computed_values() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-LOC", "O"]]
    # 1 correct of 2 predicted, of 3 gold -> P 0.5, R 1/3, F1 0.4
    scores = entity_scores(gold, pred)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(1 / 3, abs=1e-6)
    assert scores["f1"] == pytest.approx(0.4)
    assert scores["per_type"]["PER"]["f1"] == 1.0 and scores["per_type"]["ORG"]["recall"] == 0.0
    assert scores["token_accuracy"] == pytest.approx(4 / 6)


def test_error_classes_cover_every_kind() -> None:
    gold = {("PER", 0, 2), ("LOC", 3, 4), ("ORG", 5, 7), ("MISC", 8, 9), ("PER", 10, 11)}
    pred = {("PER", 0, 1), ("ORG", 3, 4), ("LOC", 5, 6), ("PER", 12, 13), ("PER", 10, 11)}
    kinds = sorted(e["kind"] for e in classify_errors(gold, pred))
    assert kinds == ["missed", "spurious", "wrong_boundary", "wrong_type", "wrong_type_and_boundary"]


def load_params_task(monkeypatch: pytest.MonkeyPatch, name: str) -> tuple[Any, tuple]:
    """The repo's params.yaml task `name` as the download stage sees it, and its raw data loaded as that stage does."""
    from reprotune.tasks import load_task
    from reprotune.tasks.ner.sources import load_raw

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    task = load_task(name, "download", repo / "params.yaml")
    return task, load_raw(task.download)


@pytest.mark.skipif(not (SHARED / "wikiann-en").exists(), reason="../shared/data not present")
def test_wikiann_local_files_load_through_the_documented_params(monkeypatch: pytest.MonkeyPatch) -> None:
    task, (raw, report) = load_params_task(monkeypatch, "wikiann_local")
    assert {split: len(raw[split]) for split in raw} == {"train": 20000, "validation": 10000, "test": 10000}
    assert raw["train"][0]["tokens"][0] == "R.H." and report["iob_repairs"]["train"] == 0
    sentences = read_conll(SHARED / "wikiann-en" / "dev", token_prefix="en:")
    assert len(sentences) == 10000
    assert not any(token.startswith("en:") for s in sentences[:200] for token in s["tokens"])
    assert {t for s in sentences for t in s["tags"]} == {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"}
    assert task.download.token_prefix == "en:"


@pytest.mark.skipif(not (SHARED / "wnut17").exists(), reason="../shared/data not present")
def test_wnut17_local_files_load_through_the_documented_params(monkeypatch: pytest.MonkeyPatch) -> None:
    """The original WNUT-17 dev file ends in a lone byte-order mark."""
    _, (raw, _) = load_params_task(monkeypatch, "wnut17_local")
    assert {split: len(raw[split]) for split in raw} == {"train": 3394, "validation": 1009, "test": 1287}
    types = {tag.split("-", 1)[1] for split in raw.values() for s in split for tag in s["tags"] if tag != "O"}
    assert types == {"person", "location", "corporation", "product", "creative-work", "group"}


def test_free_text_words_keep_character_offsets() -> None:
    from reprotune.tasks.ner.family import entity_spans, split_words

    text = "Obama visited  New-York, today."
    words = split_words(text)
    assert [w for w, _, _ in words] == ["Obama", "visited", "New-York", ",", "today", "."]
    assert all(text[start:end] == word for word, start, end in words)
    tags = ["B-PER", "O", "B-LOC", "O", "O", "O"]
    spans = entity_spans(text, words, tags, [0.9, 0.1, 0.8, 0.1, 0.1, 0.1])
    assert spans == [
        {"text": "Obama", "type": "PER", "start": 0, "end": 5, "score": 0.9},
        {"text": "New-York", "type": "LOC", "start": 15, "end": 23, "score": 0.8},
    ]


def test_html_rendering_highlights_entities_and_escapes_text() -> None:
    from reprotune.commands.predict_html import render_html

    page = render_html(
        [{"text": "<b>Bob</b> x", "entities": [{"text": "Bob", "type": "PER", "start": 3, "end": 6, "score": 0.5}]}]
    )
    assert "&lt;b&gt;<mark" in page and "Bob<sub>PER</sub></mark>&lt;/b&gt; x" in page


def test_confusion_pairs_do_not_depend_on_the_hash_seed() -> None:
    """The committed confusion CSVs must not change between identical runs: Python's
    string hashing (and so set order) differs per process unless PYTHONHASHSEED is fixed."""
    import subprocess
    import sys

    script = (
        "import pandas as pd\n"
        "from reprotune.tasks.ner.analysis import error_table\n"
        "tags = ['B-person', 'O', 'B-geo-loc', 'I-geo-loc', 'B-company', 'O', 'B-product', 'B-movie']\n"
        "frame = pd.DataFrame([{'id': 's1', 'tokens': list('abcdefgh'), 'gold': tags, 'pred': tags}])\n"
        "print(error_table(frame, 'full')[2])\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for seed in range(3)
    }
    assert len(outputs) == 1, outputs
    assert outputs.pop().startswith("[{'actual': 'person'")


# --- loader robustness: column indices, separators, cell types, integer tags, file names --------------------------


def load_ner(**download: object) -> tuple:
    """Load through the NER family with `download` params validated as in params.yaml."""
    from reprotune.tasks.ner.params import NerDownloadParams
    from reprotune.tasks.ner.sources import load_raw

    return load_raw(NerDownloadParams.model_validate(download))


def write_jsonl(tmp_path: Path, rows: list[dict], name: str = "d.jsonl") -> Path:
    import json

    return write(tmp_path, "".join(json.dumps(row) + "\n" for row in rows), name)


@pytest.mark.parametrize(
    "columns,key",
    [
        ({"tag_column": -5}, "download.tag_column"),
        ({"token_column": 5}, "download.token_column"),
        ({"token_column": -4, "tag_column": 4}, "download.tag_column"),
    ],
)
def test_conll_column_index_beyond_the_line_names_key_and_column_count(tmp_path: Path, columns: dict, key: str) -> None:
    path = write(tmp_path, "EU\tNNP\tB-NP\tB-ORG\nrejects\tVBZ\tB-VP\tO\n")
    with pytest.raises(ReprotuneError, match=rf"data\.conll:1: .*{key}.*4 columns"):
        read_conll(path, **columns)
    assert read_conll(path, token_column=-4, tag_column=-1)[0]["tokens"] == ["EU", "rejects"]


def test_conll_token_and_tag_in_the_same_column_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "EU\tNNP\tB-ORG\n")
    with pytest.raises(ReprotuneError, match=r"data\.conll:1: download\.token_column .*same column"):
        read_conll(path, token_column=2, tag_column=-1)


def test_conll_errors_say_white_space_and_point_at_the_separator(tmp_path: Path) -> None:
    path = write(tmp_path, "a O\nb  c O\n")
    with pytest.raises(ReprotuneError, match=r"data\.conll:2: expected 2 columns separated by white space"):
        read_conll(path, separator=None)
    path = write(tmp_path, "EU NNP B-NP B-ORG\n", "spaces.conll")
    with pytest.raises(ReprotuneError, match=r"spaces\.conll:1: .*1 column.*download\.separator"):
        read_conll(path)


def test_conll_empty_tag_names_line_and_tag_column(tmp_path: Path) -> None:
    path = write(tmp_path, "Paris\tB-LOC\t\nis\tO\t\n")
    with pytest.raises(ReprotuneError, match=r"data\.conll:1: .*empty.*download\.tag_column"):
        read_conll(path)


@pytest.mark.parametrize(
    "row,key",
    [
        ({"tokens": "ab", "ner_tags": ["O", "O"]}, "download.tokens_field"),
        ({"tokens": ["a", "b"], "ner_tags": "OO"}, "download.tags_field"),
    ],
)
def test_a_string_cell_is_refused_not_split_into_characters(tmp_path: Path, row: dict, key: str) -> None:
    path = write_jsonl(tmp_path, [{"tokens": ["x"], "ner_tags": ["O"]}, row])
    with pytest.raises(ReprotuneError, match=rf"d\.jsonl:2: .*\({key}\) is a string, not a list.*list of tokens"):
        load_ner(source="jsonl", path=str(path))


def test_csv_is_not_a_ner_source() -> None:
    """CSV cells cannot hold the lists of tokens and tags a sentence needs."""
    from reprotune.tasks import validate_task

    section = {
        "type": "ner",
        "model": {"name_or_path": "m"},
        "download": {"source": "csv", "path": "x.csv"},
        "tokenize": {},
        "train_full": {},
        "train_lora": {},
        "evaluate": {},
        "error_analysis": {},
    }
    with pytest.raises(ReprotuneError, match=r"tasks\.t\.download\.source.*jsonl"):
        validate_task("t", section)


CONLL2003_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def test_integer_tags_map_through_download_labels(tmp_path: Path) -> None:
    """What `Dataset.to_json` writes for conll2003: class ids, one JSON object per line."""
    path = write_jsonl(
        tmp_path, [{"id": "0", "tokens": ["EU", "rejects", "German"], "ner_tags": [3, 0, 7]}], "conll2003.json"
    )
    raw, _ = load_ner(source="json", path=str(path), labels=CONLL2003_LABELS)
    assert raw["train"][0]["tags"] == ["B-ORG", "O", "B-MISC"]
    with pytest.raises(ReprotuneError, match=r"conll2003\.json:1: .*class ids.*download\.labels"):
        load_ner(source="json", path=str(path))
    with pytest.raises(ReprotuneError, match=r"conll2003\.json:1: tag 3 \(word 1\) .*download\.labels \(3 names"):
        load_ner(source="json", path=str(path), labels=["O", "B-X", "I-X"])


def test_class_label_names_from_the_hub_or_parquet_are_used(tmp_path: Path) -> None:
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    from reprotune.tasks.ner.params import NerDownloadParams
    from reprotune.tasks.ner.sources import rows_from_dataset

    features = Features(
        {"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=["O", "B-PER", "I-PER"]))}
    )
    dataset = Dataset.from_dict({"tokens": [["Bob", "Dylan", "sang"]], "ner_tags": [[1, 2, 0]]}, features=features)
    rows = rows_from_dataset(dataset, NerDownloadParams(source="hub", dataset="x"), "train")
    assert rows[0]["tags"] == ["B-PER", "I-PER", "O"]
    dataset.to_parquet(str(tmp_path / "d.parquet"))
    raw, _ = load_ner(source="parquet", path=str(tmp_path / "d.parquet"))
    assert raw["train"][0]["tags"] == ["B-PER", "I-PER", "O"]


def test_bad_jsonl_line_and_bad_row_name_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["b"], \n', "d.jsonl")
    with pytest.raises(ReprotuneError, match=r"d\.jsonl:2: not valid JSON"):
        load_ner(source="jsonl", path=str(path))
    path = write_jsonl(tmp_path, [{"tokens": ["a"], "ner_tags": ["O"]}, {"tokens": ["b"], "ner_tags": ["PER"]}])
    with pytest.raises(ReprotuneError, match=r"d\.jsonl:2: train sentence train:1: tag 'PER'"):
        load_ner(source="jsonl", path=str(path))
    path = write_jsonl(tmp_path, [{"tokens": ["a"], "tags": ["O"]}])
    with pytest.raises(ReprotuneError, match=r"d\.jsonl:1: no field 'ner_tags' .*download\.tags_field"):
        load_ner(source="jsonl", path=str(path))


def test_json_array_with_a_byte_order_mark_loads_and_names_rows(tmp_path: Path) -> None:
    import json

    rows = [{"tokens": ["Paris"], "ner_tags": ["B-LOC"]}, {"tokens": ["is", "big"], "ner_tags": ["O"]}]
    path = tmp_path / "d.json"
    path.write_text("\ufeff" + json.dumps(rows[:1], indent=1), encoding="utf-8")
    raw, _ = load_ner(source="json", path=str(path))
    assert raw["train"][0]["tokens"] == ["Paris"] and raw["train"][0]["tags"] == ["B-LOC"]
    path.write_text(json.dumps(rows), encoding="utf-8")
    with pytest.raises(ReprotuneError, match=r"d\.json row 2: train sentence train:1: 2 tokens but 1 tags"):
        load_ner(source="json", path=str(path))


# --- stage interface: labels through the download report, word-level validation scores ----------------------------


def test_download_report_holds_the_label_order_that_meta_takes(tmp_path: Path) -> None:
    from datasets import DatasetDict

    from reprotune.tasks.ner.preprocess import prepare_meta

    path = write(tmp_path, "Paris\tB-LOC\nis\tO\n\nBob\tI-PER\n")
    raw, report = load_ner(source="conll", path=str(path))
    assert report == {"iob_repairs": {"train": 1}, "labels": ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]}
    _, fixed = load_ner(source="conll", path=str(path), labels=CONLL2003_LABELS)
    assert fixed["labels"] == CONLL2003_LABELS
    splits = DatasetDict({"train": raw["train"].select([0]), "test": raw["train"].select([1])})
    meta = prepare_meta(splits, report, None)
    assert meta.model_dump(mode="json") == {"labels": report["labels"], "types_missing_from_train": ["PER"]}


def test_validation_scores_count_words_cut_by_truncation_as_predicted_O() -> None:
    """The checkpoint is chosen by the test's metric: a gold entity on a word truncation cut
    is missed (today's sub-token scoring never saw it and reported F1 1.0)."""
    import numpy as np
    from datasets import Dataset
    from transformers import EvalPrediction

    from reprotune.tasks.ner.family import FAMILY
    from reprotune.tasks.ner.params import NerMeta

    labels = ["O", "B-LOC", "B-PER"]
    raw = Dataset.from_dict({"tokens": [["Paris", "is", "Bob"]], "tags": [["B-LOC", "O", "B-PER"]]})
    # [CLS] Par ##is is [SEP]: "Bob" was cut; padding past the row's length must be ignored
    features = Dataset.from_dict({"word_ids": [[-1, 0, 0, 1, -1]]})
    logits = np.full((1, 7, 3), -100.0)
    logits[0, :5] = np.eye(3)[[0, 1, 2, 0, 0]]
    compute = FAMILY.train_metrics(NerMeta(labels=labels, types_missing_from_train=[]), None, raw, features)
    scores = compute(EvalPrediction(predictions=logits, label_ids=np.array([[-100, 1, -100, 0, -100, -100, -100]])))
    assert scores["precision"] == 1.0 and scores["recall"] == 0.5
    assert scores["f1"] == pytest.approx(2 / 3, abs=1e-6) and scores["token_accuracy"] == pytest.approx(2 / 3, abs=1e-6)
