"""QA family: sources and record checks, windows and labels, n-best post-processing,
official EM/F1, SQuAD v2 null answers, analysis, and a tiny train -> predict -> score
run through the generic training and evaluation code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset
from tiny_qa import tiny_task, write_squad

from reprotune.core.errors import ReprotuneError
from reprotune.core.params import MakeSplits
from reprotune.sources.splits import make_missing_splits
from reprotune.tasks import validate_task
from reprotune.tasks.qa import preprocess, sources
from reprotune.tasks.qa.analysis import analyse, bucket, question_word
from reprotune.tasks.qa.family import FAMILY, Settings, Window, best_answer
from reprotune.tasks.qa.metrics import (
    aggregate,
    exact_match,
    f1_score,
    normalize_answer,
    score,
    score_one,
)
from reprotune.tasks.qa.params import QaDownloadParams, QaEvaluateParams, QaMeta, WindowSettings
from reprotune.tasks.qa.preprocess import (
    answer_chars,
    check_settings,
    cut_questions,
    token_span,
    tokenize_batch,
)
from reprotune.tasks.qa.sources import SPLIT_GROUP_COLUMN, choose_split_by, load_records

FILLER = "Some words fill the page here. " * 12


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def batch(*records: dict) -> dict[str, list]:
    return {key: [r[key] for r in records] for key in ("id", "question", "context", "answers")}


def record(rid: str, question: str, context: str, answer: str | None, start: int | None = None) -> dict:
    if answer is None:
        return {"id": rid, "question": question, "context": context, "answers": {"text": [], "answer_start": []}}
    start = context.index(answer) if start is None else start
    return {"id": rid, "question": question, "context": context, "answers": {"text": [answer], "answer_start": [start]}}


def squad_file(
    tmp_path: Path, qas: list[dict], context: str = "Paris is the capital of France.", name: str = "d.json"
) -> Path:
    path = tmp_path / name
    path.write_text(
        json.dumps({"data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}), encoding="utf-8"
    )
    return path


SMALL = WindowSettings(max_length=40, doc_stride=8, max_question_length=10)
META = QaMeta(version_2_with_negative=False, window=SMALL)


# windows and labels ---------------------------------------------------------
def test_answer_past_the_first_window_is_labelled_and_found_through_the_stride(tokenizer) -> None:
    context = FILLER + "The treasure is buried under the old oak tree."
    out = tokenize_batch(
        batch(record("q1", "Where is the treasure?", context, "under the old oak tree")),
        tokenizer,
        SMALL,
        keep_offsets=True,
    )
    windows = len(out["input_ids"])
    assert windows > 3 and out["window"] == list(range(windows)) and set(out["example_id"]) == {"q1"}
    assert out["answer_in_window"][0] is False and out["start_positions"][0] == out["cls_index"][0] == 0
    hits = [i for i in range(windows) if out["answer_in_window"][i]]
    assert hits and hits[0] > 0
    for i in hits:
        s, e = out["start_positions"][i], out["end_positions"][i]
        offsets = out["offset_mapping"][i]
        assert context[offsets[s][0] : offsets[e][1]] == "under the old oak tree"
    # Every context character is covered by some window: nothing is lost to truncation.
    covered = set()
    for offsets in out["offset_mapping"]:
        for span in offsets:
            if span is not None:
                covered.update(range(span[0], span[1]))
    assert all(i in covered for i, ch in enumerate(context) if not ch.isspace())
    # Post-processing over all windows finds the answer sitting in a later window.
    i = hits[0]
    start_logits = [np.zeros(len(ids)) for ids in out["input_ids"]]
    end_logits = [np.zeros(len(ids)) for ids in out["input_ids"]]
    start_logits[i][out["start_positions"][i]] = 5.0
    end_logits[i][out["end_positions"][i]] = 5.0
    answer = best_answer(
        context, [Window(s, e, o) for s, e, o in zip(start_logits, end_logits, out["offset_mapping"])], Settings()
    )
    assert answer.text == "under the old oak tree" and answer.window == i
    assert answer.start == context.index("under the old oak tree")


def test_offsets_are_none_on_special_and_question_tokens(tokenizer) -> None:
    out = tokenize_batch(batch(record("q", "Who?", "Ann met Bob.", "Bob")), tokenizer, SMALL, keep_offsets=True)
    tokens = tokenizer.convert_ids_to_tokens(out["input_ids"][0])
    offsets = out["offset_mapping"][0]
    assert tokens[0] == "[CLS]" and offsets[0] is None
    assert [offsets[i] for i, t in enumerate(tokens) if t in ("[SEP]", "who", "?")] == [None] * 4
    assert [tuple(o) for o in offsets if o is not None] == [(0, 3), (4, 7), (8, 11), (11, 12)]
    s, e = out["start_positions"][0], out["end_positions"][0]
    assert tokens[s : e + 1] == ["bob"]


def test_white_space_around_the_answer_is_trimmed_before_labelling(tokenizer) -> None:
    context = "It rained in  Paris , then stopped."
    assert answer_chars(context, "  Paris ", context.index("  Paris ")) == (14, 19)
    out = tokenize_batch(
        batch(record("q", "Where?", context, " Paris ", context.index(" Paris "))), tokenizer, SMALL, keep_offsets=False
    )
    tokens = tokenizer.convert_ids_to_tokens(out["input_ids"][0])
    assert tokens[out["start_positions"][0] : out["end_positions"][0] + 1] == ["paris"]
    assert "offset_mapping" not in out


def test_answer_straddling_a_window_edge_is_not_labelled_in_that_window() -> None:
    offsets = [None, (0, 4), (5, 9), (10, 14), None]
    assert token_span(offsets, 5, 14) == (2, 3)
    assert token_span(offsets, 10, 20) is None
    assert token_span(offsets, 6, 8) == (2, 2)


def test_unanswerable_windows_all_point_at_cls(tokenizer) -> None:
    out = tokenize_batch(batch(record("q", "Why?", FILLER, None)), tokenizer, SMALL, keep_offsets=True)
    assert len(out["input_ids"]) > 1
    assert set(out["start_positions"]) == set(out["end_positions"]) == {0}
    assert not any(out["answer_in_window"])


def test_decomposed_accent_ending_the_context_is_labelled(tokenizer) -> None:
    """Uncased tokenizers strip accents: the token of NFD "café" ends before its U+0301."""
    context = "Le cafe\u0301"
    assert answer_chars(context, "cafe\u0301", 3) == (3, 7)
    assert answer_chars("Le caf\u00e9", "caf\u00e9", 3) == (3, 7)
    out = tokenize_batch(batch(record("q", "Where?", context, "cafe\u0301")), tokenizer, SMALL, keep_offsets=True)
    tokens = tokenizer.convert_ids_to_tokens(out["input_ids"][0])
    assert out["answer_in_window"] == [True]
    assert tokens[out["start_positions"][0] : out["end_positions"][0] + 1] == ["cafe"]


def test_long_questions_are_cut_and_settings_checked(tokenizer) -> None:
    questions, cut = cut_questions(["  one two three four five six", "short"], tokenizer, 3)
    assert questions == ["one two three", "short"] and cut == [True, False]
    with pytest.raises(ReprotuneError, match="doc_stride 30 must be below"):
        check_settings(tokenizer, WindowSettings(max_length=40, doc_stride=30, max_question_length=10))
    with pytest.raises(ReprotuneError, match="exceeds the model's maximum length 512"):
        check_settings(tokenizer, WindowSettings(max_length=1024, doc_stride=128, max_question_length=64))


# post-processing ------------------------------------------------------------
def window(start: list[float], end: list[float], offsets: list) -> Window:
    return Window(np.array(start), np.array(end), offsets)


OFFSETS = [None, None, (0, 5), (6, 8), (9, 12), (13, 20), None]
CONTEXT = "Paris is the capital"


def test_spans_outside_the_context_and_too_long_are_skipped() -> None:
    w = window([9, 9, 1, 0, 0, 0, 9], [9, 9, 0, 0, 0, 2, 9], OFFSETS)
    assert best_answer(CONTEXT, [w], Settings()).text == "Paris is the capital"
    assert best_answer(CONTEXT, [w], Settings(max_answer_length=1)).text in ("Paris", "capital")
    w_back = window([0, 0, 0, 0, 0, 3, 0], [0, 0, 3, 0, 0, 0, 0], OFFSETS)
    assert best_answer(CONTEXT, [w_back], Settings(n_best_size=1)).text == ""


def test_best_span_is_chosen_over_all_windows() -> None:
    low = window([0, 0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0], OFFSETS)
    high = window([0, 0, 0, 0, 0, 4, 0], [0, 0, 0, 0, 0, 4, 0], OFFSETS)
    answer = best_answer(CONTEXT, [low, high], Settings())
    assert (answer.text, answer.window, answer.start, answer.score) == ("capital", 1, 13, 8.0)


def test_null_answer_depends_on_version_2_and_threshold() -> None:
    w = window([6, 0, 2, 0, 0, 0, 0], [6, 0, 2, 0, 0, 0, 0], OFFSETS)  # null 12 against span 4
    assert best_answer(CONTEXT, [w], Settings()).text == "Paris"
    null = best_answer(CONTEXT, [w], Settings(allow_null=True))
    assert (null.text, null.start, null.null_score, null.score) == ("", -1, 12.0, 4.0)
    assert best_answer(CONTEXT, [w], Settings(allow_null=True, null_score_threshold=8.5)).text == "Paris"


def prefers_null(examples: list[tuple[str, str | None, float]]) -> tuple[Dataset, dict[str, list]]:
    """Raw examples over CONTEXT and hand-made logits of a model that always prefers no answer:
    each (id, gold or None, margin) gets "Paris" as its best span and a null score `margin` above it."""
    raw = Dataset.from_list([record(rid, "Which city?", CONTEXT, gold) | {"title": "T"} for rid, gold, _ in examples])
    features: dict[str, list] = {key: [] for key in ("example_id", "offset_mapping", "window", "answer_in_window")}
    features |= {"cls_index": [], "start": [], "end": []}
    for rid, gold, margin in examples:
        span = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        null = [1.0 + margin / 2, *span[1:]]  # start + end: null 2 + margin, span "Paris" 2
        features["example_id"].append(rid)
        features["offset_mapping"].append(OFFSETS)
        features["window"].append(0)
        features["answer_in_window"].append(gold is not None)
        features["cls_index"].append(0)
        features["start"].append(np.array(null))
        features["end"].append(np.array(null))
    return raw, features


def decided(raw: Dataset, features: dict[str, list], threshold: float) -> list[str]:
    from reprotune.tasks.qa.family import answer_table

    settings = Settings(allow_null=True, null_score_threshold=threshold)
    return list(answer_table(raw, features, features["start"], features["end"], settings)["pred_text"])


def test_null_threshold_chosen_on_validation_answers_close_spans_on_test() -> None:
    from reprotune.tasks.qa.family import choose_threshold, example_spans

    validation = prefers_null([("v1", "Paris", 1.0), ("v2", "Paris", 2.0), ("v3", None, 5.0), ("v4", None, 6.0)])
    found = example_spans(*validation, validation[1]["start"], validation[1]["end"], Settings(allow_null=True))
    choice = choose_threshold(validation[0], found)
    # Answering the two close spans and withholding the two far ones is the only cut with F1 1.
    assert (choice.threshold, choice.f1, choice.f1_at_zero) == (3.5, 1.0, 0.5)
    test = prefers_null([("t1", "Paris", 1.5), ("t2", "Paris", 4.0), ("t3", None, 7.0), ("t4", None, 0.5)])
    assert decided(*test, 0.0) == ["", "", "", ""], "at a margin of 0 this model answers nothing"
    assert decided(*test, choice.threshold) == ["Paris", "", "", "Paris"]


def test_null_threshold_choice_by_hand() -> None:
    from reprotune.tasks.qa.metrics import choose_null_threshold

    # Every question answerable and answered right: answering all wins, one logit past the last margin.
    assert choose_null_threshold([-1.0, 2.0], [1.0, 1.0], [0.0, 0.0]).threshold == 3.0
    # Nothing answerable: abstaining everywhere wins, one logit below the smallest margin.
    assert choose_null_threshold([-3.0, 2.0], [0.0, 0.0], [1.0, 1.0]).threshold == -4.0
    # A span at F1 0.5 on an answerable question gains 0.5; the unanswerable one beside it costs 1.
    choice = choose_null_threshold([1.0, 1.0, 4.0], [0.5, 0.0, 1.0], [0.0, 1.0, 0.0])
    assert (choice.threshold, choice.f1) == (5.0, pytest.approx(1.5 / 3, abs=1e-6))
    # Equal F1 over a plateau: the margin nearest the default 0 (a None margin never changes).
    choice = choose_null_threshold([-2.0, 2.0, None], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    assert (choice.threshold, choice.f1, choice.f1_at_zero) == (0.0, pytest.approx(2 / 3, abs=1e-6), choice.f1)
    assert choose_null_threshold([], [], []).threshold == 0.0


def test_predicted_span_keeps_the_decomposed_accent_after_its_last_token(tokenizer) -> None:
    context = "Son re\u0301sume\u0301 est ici."
    out = tokenize_batch(
        batch(record("q", "What?", context, "re\u0301sume\u0301")), tokenizer, SMALL, keep_offsets=True
    )
    s, e = out["start_positions"][0], out["end_positions"][0]
    start, end = np.zeros(len(out["input_ids"][0])), np.zeros(len(out["input_ids"][0]))
    start[s], end[e] = 5.0, 5.0
    answer = best_answer(context, [Window(start, end, out["offset_mapping"][0])], Settings())
    assert (answer.text, answer.start) == ("re\u0301sume\u0301", 4)
    assert exact_match(answer.text, "re\u0301sume\u0301") == 1.0


# metrics --------------------------------------------------------------------
def test_official_normalisation_and_scores_by_hand() -> None:
    assert normalize_answer("The  Quick, brown FOX!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert exact_match("U.S.", "us") == 1.0 and exact_match("the Denver Broncos", "Denver Broncos.") == 1.0
    # pred {cat, sat} against gold {cat, sat, down}: precision 1, recall 2/3, F1 0.8
    assert f1_score("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert f1_score("cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert f1_score("dog", "cat") == 0.0
    assert score_one("Denver", ["Denver Broncos", "Denver"]) == (1.0, 1.0)
    assert score_one("Broncos", ["Denver Broncos", "the Broncos team"]) == (0.0, pytest.approx(2 / 3))


def test_unanswerable_scoring_matches_squad_v2() -> None:
    assert score_one("", []) == (1.0, 1.0)
    assert score_one("something", []) == (0.0, 0.0)
    assert score_one("", ["Paris"]) == (0.0, 0.0)
    scores = aggregate(["", "Paris", "x"], [[], ["Paris"], []], with_negative=True)
    assert scores["exact_match"] == pytest.approx(2 / 3, abs=1e-6)
    assert scores["has_answer_exact_match"] == 1.0 and scores["has_answer_examples"] == 1
    assert scores["no_answer_accuracy"] == 0.5 and scores["no_answer_examples"] == 2
    assert "no_answer_accuracy" not in aggregate(["Paris"], [["Paris"]], with_negative=False)


# sources --------------------------------------------------------------------
def test_malformed_answer_start_names_the_record(tmp_path: Path) -> None:
    path = squad_file(
        tmp_path,
        [
            {"id": "good-1", "question": "What?", "answers": [{"text": "Paris", "answer_start": 0}]},
            {"id": "bad-7", "question": "What?", "answers": [{"text": "France", "answer_start": 3}]},
        ],
    )
    with pytest.raises(
        ReprotuneError,
        match=r"d\.json: record 'bad-7': answer_start 3 does not point at the answer "
        r"'France' \(the context has 'is is ' there\)",
    ):
        load_records(QaDownloadParams(source="json", path=str(path)))


def test_malformed_jsonl_record_and_bad_line_are_named(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    good = {
        "id": "a",
        "title": "T",
        "context": "Ann met Bob.",
        "question": "Who?",
        "answers": {"text": ["Bob"], "answer_start": [8]},
    }
    path.write_text(
        json.dumps(good)
        + "\n"
        + json.dumps(good | {"id": "b", "answers": {"text": ["Bob"], "answer_start": [-1]}})
        + "\n"
    )
    with pytest.raises(ReprotuneError, match="record 'b': answer_start must be a non-negative integer"):
        load_records(QaDownloadParams(source="jsonl", path=str(path)))
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ReprotuneError, match=r"d\.jsonl:2: not valid JSON"):
        load_records(QaDownloadParams(source="jsonl", path=str(path)))
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(ReprotuneError, match="record id 'a' occurs twice"):
        load_records(QaDownloadParams(source="jsonl", path=str(path)))


def test_unanswerable_needs_version_2_flag(tmp_path: Path) -> None:
    path = squad_file(
        tmp_path,
        [
            {"id": "v2-1", "question": "Who?", "answers": [], "is_impossible": True},
            {"id": "v2-2", "question": "What?", "answers": [{"text": "Paris", "answer_start": 0}]},
        ],
    )
    with pytest.raises(ReprotuneError, match="record 'v2-1' has no answer.*version_2_with_negative: true"):
        load_records(QaDownloadParams(source="json", path=str(path)))
    raw, report = load_records(QaDownloadParams(source="json", path=str(path), version_2_with_negative=True))
    assert raw["train"][0]["answers"] == {"text": [], "answer_start": []} and report["unanswerable"] == {"train": 1}


def test_question_without_answers_key_is_an_error_not_unanswerable(tmp_path: Path) -> None:
    path = squad_file(
        tmp_path,
        [
            {"id": "ok", "question": "What?", "answers": [{"text": "Paris", "answer_start": 0}]},
            {"id": "q-9", "question": "What?", "answer": [{"text": "Paris", "answer_start": 0}]},
        ],
    )
    for v2 in (False, True):
        with pytest.raises(
            ReprotuneError,
            match=r"d\.json: data\[0\]\.paragraphs\[0\]\.qas\[1\]: record 'q-9' "
            r"has no 'answers' \(it has id, question, answer\); give it answers",
        ):
            load_records(QaDownloadParams(source="json", path=str(path), version_2_with_negative=v2))
    impossible = squad_file(tmp_path, [{"id": "n", "question": "Who?", "is_impossible": True}], name="v2.json")
    raw, _ = load_records(QaDownloadParams(source="json", path=str(impossible), version_2_with_negative=True))
    assert raw["train"][0]["answers"] == {"text": [], "answer_start": []}
    flat = tmp_path / "d.jsonl"
    flat.write_text(json.dumps({"id": "q-9", "context": "Paris.", "question": "What?", "answer": []}) + "\n")
    with pytest.raises(
        ReprotuneError,
        match=r"d\.jsonl:1: record 'q-9' has no 'answers'.*answers: \[\] for an "
        r"unanswerable question",
    ):
        load_records(QaDownloadParams(source="jsonl", path=str(flat), version_2_with_negative=True))
    flat.write_text(json.dumps({"id": "q-9", "context": "Paris.", "question": "What?", "is_impossible": True}) + "\n")
    raw, _ = load_records(QaDownloadParams(source="jsonl", path=str(flat), version_2_with_negative=True))
    assert raw["train"][0]["answers"] == {"text": [], "answer_start": []}


def test_squad_json_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = squad_file(tmp_path, [{"id": "a", "question": "What?", "answers": [{"text": "Paris", "answer_start": 0}]}])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    raw, _ = load_records(QaDownloadParams(source="json", path=str(path)))
    assert raw["train"]["id"] == ["a"]
    path.write_bytes(b'\xef\xbb\xbf{\n"data": [}')
    with pytest.raises(ReprotuneError, match=r"d\.json:2: not valid JSON"):
        load_records(QaDownloadParams(source="json", path=str(path)))
    path.write_text('{"id": "a", "context": "c"}\n{"id": "b", "context": "c"}\n', encoding="utf-8")
    with pytest.raises(ReprotuneError, match=r"d\.json: holds one JSON object per line.*source: jsonl"):
        load_records(QaDownloadParams(source="json", path=str(path)))


def test_lone_surrogate_is_replaced_in_place_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [
        {
            "id": 0,
            "context": "Paris \ud83c is big.",
            "question": "Which \udf0d?",
            "answers": {"text": ["big"], "answer_start": [11]},
        },
        {"id": 1, "context": "Ann met Bob.", "question": "Who?", "answers": {"text": ["Bob"], "answer_start": [8]}},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    raw, report = load_records(QaDownloadParams(source="jsonl", path=str(path)))
    first = raw["train"][0]
    assert first["context"] == "Paris \ufffd is big." and first["question"] == "Which \ufffd?"
    assert first["context"][11:14] == "big" and report["lone_surrogates_replaced"] == {"train": 1}


def test_integer_id_zero_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    row = {"context": "Ann met Bob.", "question": "Who?", "answers": {"text": ["Bob"], "answer_start": [8]}}
    path.write_text(json.dumps(row | {"id": 0}) + "\n" + json.dumps(row | {"id": 1}) + "\n" + json.dumps(row) + "\n")
    raw, _ = load_records(QaDownloadParams(source="jsonl", path=str(path)))
    assert raw["train"]["id"] == ["0", "1", "d.jsonl:3"]
    nested = squad_file(tmp_path, [{"id": 0, "question": "What?", "answers": [{"text": "Paris", "answer_start": 0}]}])
    assert load_records(QaDownloadParams(source="json", path=str(nested)))[0]["train"]["id"] == ["0"]


def test_too_few_groups_to_carve_splits_names_the_keys(tmp_path: Path) -> None:
    one = squad_file(tmp_path, [{"id": "a", "question": "What?", "answers": [{"text": "Paris", "answer_start": 0}]}])
    with pytest.raises(
        ReprotuneError,
        match=r"d\.json: download\.make_splits cannot carve validation and test out "
        r"of train: download\.split_by \(auto -> context\) keeps each paragraph "
        r"\(context\) whole and train has only 1 of them \(3 needed\); give them "
        r"their own files with download\.files\.validation / "
        r"download\.files\.test",
    ):
        sources.load_raw(QaDownloadParams(source="json", path=str(one)))
    article = tmp_path / "article.json"
    qa = {"question": "Who?", "answers": [{"text": "Ann", "answer_start": 0}]}
    article.write_text(
        json.dumps(
            {
                "data": [
                    {
                        "title": "T",
                        "paragraphs": [
                            {"context": "Ann met Bob.", "qas": [qa | {"id": "p1"}]},
                            {"context": "Ann left.", "qas": [qa | {"id": "p2"}]},
                        ],
                    }
                ]
            }
        )
    )
    with pytest.raises(
        ReprotuneError,
        match=r"article\.json: .*cannot carve validation out of train: "
        r"download\.split_by \(title\) keeps each article \(title\) whole and "
        r"train has only 1 of them "
        r"\(2 needed\); set download\.split_by: context to split by paragraph, or "
        r"give them their own files with download\.files\.validation$",
    ):
        sources.load_raw(
            QaDownloadParams(source="json", split_by="title", files={"train": str(article), "test": str(one)})
        )
    assert (
        sources.load_raw(
            QaDownloadParams(source="json", split_by="context", files={"train": str(article), "test": str(one)})
        )[1]["groups"]["train"]
        == 2
    )
    raw, _ = sources.load_raw(QaDownloadParams(source="json", path=str(write_squad(tmp_path / "s.json"))))
    assert len(raw["train"]) == 36


def test_squad_json_and_flat_jsonl_give_the_same_records(tmp_path: Path) -> None:
    nested, _ = load_records(QaDownloadParams(source="json", path=str(write_squad(tmp_path / "s.json"))))
    flat = tmp_path / "s.jsonl"
    flat.write_text(
        "".join(
            json.dumps({k: r[k] for k in ("id", "title", "context", "question", "answers")}) + "\n"
            for r in nested["train"]
        )
    )
    again, _ = load_records(QaDownloadParams(source="jsonl", path=str(flat)))
    assert again["train"].to_list() == nested["train"].to_list()
    assert len(nested["train"]) == 36


def test_split_by_article_or_paragraph_keeps_groups_whole(tmp_path: Path) -> None:
    path = write_squad(tmp_path / "s.json")
    few_titles = [{"title": "only-one"}] * 5
    assert choose_split_by(few_titles, "auto") == "context"
    assert choose_split_by([{"title": f"t{i}"} for i in range(10)], "auto") == "title"
    with pytest.raises(ReprotuneError, match="record 'x' has no title"):
        choose_split_by([{"title": "", "id": "x"}], "title")
    for split_by, key in (("title", "title"), ("context", "context")):
        raw, report = load_records(QaDownloadParams(source="json", path=str(path), split_by=split_by))
        assert report["split_by"] == split_by
        splits = make_missing_splits(raw, MakeSplits(validation=0.2, test=0.2, seed=3), sources.SPLIT_GROUP_COLUMN)
        owners: dict[str, set[str]] = {}
        for name, data in splits.items():
            for value in data[key]:
                owners.setdefault(value, set()).add(name)
        assert all(len(names) == 1 for names in owners.values()), f"a {key} straddles splits"
        assert all(len(splits[name]) > 0 for name in splits)
    assert SPLIT_GROUP_COLUMN in raw["train"].column_names


def test_params_refuse_a_stride_without_room(tmp_path: Path, tiny_model_dir: Path) -> None:
    task = tiny_task(tmp_path, tiny_model_dir)
    task["tokenize"] = {"max_length": 64, "doc_stride": 48, "max_question_length": 16}
    with pytest.raises(ReprotuneError, match="tasks.t.tokenize.*max_question_length \\+ doc_stride"):
        validate_task("t", task)
    assert validate_task("t", tiny_task(tmp_path, tiny_model_dir)).type == "qa"


# analysis -------------------------------------------------------------------
def test_null_threshold_is_auto_or_a_finite_number(tmp_path: Path, tiny_model_dir: Path) -> None:
    task = tiny_task(tmp_path, tiny_model_dir, unanswerable=True)
    assert validate_task("t", task).evaluate.null_threshold == "auto"
    for bad in ("high", float("nan"), True):
        task["evaluate"]["null_threshold"] = bad
        with pytest.raises(ReprotuneError, match="tasks.t.evaluate.null_threshold': .*auto or a finite number"):
            validate_task("t", task)
    task["evaluate"]["null_threshold"] = -1.5
    assert validate_task("t", task).evaluate.null_threshold == -1.5


def test_question_words_and_buckets() -> None:
    assert question_word("In what year did it open?") == "what"
    assert question_word("Whose idea was it?") == "who"
    assert question_word("How many people live there?") == "how"
    assert question_word("Name the river.") == "other"
    assert [bucket(v, (1, 2, 3, 4, 6, 11)) for v in (1, 3, 5, 10, 11)] == ["1", "3", "4-5", "6-10", "11+"]


def test_analysis_writes_confusion_summary_and_compares_methods(tmp_path: Path, tiny_model_dir: Path) -> None:
    task = validate_task("t", tiny_task(tmp_path, tiny_model_dir) | {"error_analysis": {"worst_n": 2}})

    def frame(preds: list[str]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "id": ["a", "b", "c"],
                "title": ["T"] * 3,
                "context": ["Ann met Bob in Paris."] * 3,
                "question": ["Who met Bob?", "Where did they meet?", "Why?"],
                "gold_texts": [["Ann"], ["in Paris"], []],
                "pred_text": preds,
                "score": [1.0, 2.0, None],
                "answer_window": [0, 1, -1],
                "windows": [1, 2, 2],
            }
        )

    summary = analyse(
        {
            "baseline": frame(["met", "met", "met"]),
            "full": frame(["Ann", "Paris", ""]),
            "lora": frame(["Bob", "in Paris", "Bob"]),
        },
        META,
        task,
        tmp_path / "report",
        tmp_path / "confusion",
    )
    assert summary["baseline"]["outcomes"] == {"exact": 0, "partial": 0, "wrong": 3}
    assert sorted(p.name for p in (tmp_path / "confusion").iterdir()) == ["full.csv", "lora.csv"]
    assert summary["full"]["outcomes"] == {"exact": 2, "partial": 1, "wrong": 0}
    assert summary["lora"]["outcomes"] == {"exact": 1, "partial": 0, "wrong": 2}
    assert summary["full_vs_lora"]["only_full_exact"] == 2 and summary["full_vs_lora"]["only_lora_exact"] == 1
    assert summary["full"]["by_answer_window"]["later_window"]["f1"] == pytest.approx(2 / 3, abs=1e-4)
    confusion = pd.read_csv(tmp_path / "confusion" / "lora.csv")
    assert list(confusion.columns) == ["actual", "predicted"]
    assert confusion.values.tolist() == [["who", "wrong"], ["where", "exact"], ["why", "wrong"]]
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "## By question word" in text and "worst examples (lora)" in text and "Full against LoRA" in text


def test_analysis_names_a_model_that_always_abstains(tmp_path: Path, tiny_model_dir: Path) -> None:
    from reprotune.tasks.qa.analysis import answering_line

    task = validate_task("t", tiny_task(tmp_path, tiny_model_dir, unanswerable=True))
    gold = [["Ann"], ["Paris"], []]
    frames = {
        method: pd.DataFrame(
            {
                "id": ["a", "b", "c"],
                "title": ["T"] * 3,
                "context": ["Ann met Bob in Paris."] * 3,
                "question": ["Who met Bob?", "Where?", "Why?"],
                "gold_texts": gold,
                "pred_text": preds,
                "score": [1.0, 2.0, 0.5],
                "answer_window": [0, 0, -1],
                "windows": [1, 1, 1],
            }
        )
        for method, preds in (("baseline", ["met", "met", "met"]), ("full", ["", "", ""]), ("lora", ["Ann", "", ""]))
    }
    assert answering_line("full", frames["full"]) == (
        "- full: answers 0 of 3 questions (0.0%); 2 (66.7%) are answerable: it always abstains."
    )
    assert answering_line("baseline", frames["baseline"]).endswith("it always answers.")
    assert answering_line("lora", frames["lora"]).endswith("it answers less often than questions are answerable.")
    v2 = QaMeta(version_2_with_negative=True, window=SMALL)
    summary = analyse(frames, v2, task, tmp_path / "report", tmp_path / "confusion")
    assert [summary[m]["answered"] for m in ("baseline", "full", "lora")] == [1.0, 0.0, pytest.approx(1 / 3, abs=1e-6)]
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "## Answered against answerable" in text and "it always abstains" in text


# train -> predict -> score ---------------------------------------------------
def test_tiny_train_predict_score_through_the_generic_flow(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation EM/F1 during training (evaluated in dataset order although training groups
    by length) must equal predict + score of the saved best model on the same validation split."""
    from reprotune.core import paths
    from reprotune.core.arrow import save_dataset
    from reprotune.evaluation.evaluate import evaluate
    from reprotune.modeling.tokenizer import load_tokenizer
    from reprotune.sources.splits import limit_samples
    from reprotune.tasks import load_task
    from reprotune.training.train import train

    section = tiny_task(tmp_path / "data-src", tiny_model_dir)
    section["train_full"] |= {"eval_batch_size": 3, "max_steps": 6, "epochs": 1, "seed": 5}
    task = validate_task("tiny_qa", section)
    monkeypatch.chdir(tmp_path)
    # Train and evaluate see only their own sections, as in the stages.
    (tmp_path / "params.yaml").write_text(
        json.dumps({"pipeline": {"tasks": {"tiny_qa": "qa"}}, "tasks": {"tiny_qa": section}}), encoding="utf-8"
    )
    raw, report = sources.load_raw(task.download)
    raw = limit_samples(make_missing_splits(raw, task.download.make_splits, sources.SPLIT_GROUP_COLUMN), None, 0)
    sources.validate_raw(raw, task)
    save_dataset(raw, paths.raw_dir("tiny_qa"), {"download_report.json": report})
    tokenizer = load_tokenizer(task.model)
    meta = preprocess.prepare_meta(raw, report, task)
    assert meta.window == WindowSettings(max_length=64, doc_stride=16, max_question_length=16)
    features, tokenize_report = preprocess.tokenize(raw, tokenizer, task, meta)
    assert tokenize_report["validation"]["answer_only_in_later_window"] > 0
    save_dataset(features, paths.tokenized_dir("tiny_qa"), {"meta.json": meta.model_dump(mode="json")})

    info = train("tiny_qa", "full", load_task("tiny_qa", "train-full"))
    model = FAMILY.build_model(task, meta, source=str(paths.model_dir("tiny_qa", "full")))
    validation = FAMILY.predict(model, tokenizer, raw["validation"], features["validation"], meta, task)
    scores = score(validation, meta, task)
    assert info["best_checkpoint_metric"] == pytest.approx(scores["f1"], abs=1e-6)
    assert len(validation) == len(raw["validation"]) and set(validation["id"]) == set(raw["validation"]["id"])

    context = raw["test"][0]["context"]
    [result] = FAMILY.predict_records(model, tokenizer, [{"question": "Who?", "context": context}], meta, task)
    assert context[result["start"] : result["end"]] == result["answer"] != "" and isinstance(result["score"], float)
    with pytest.raises(ReprotuneError, match="input record 1: 'context' must be a non-empty string"):
        FAMILY.predict_records(model, tokenizer, [{"question": "Who?", "context": " "}], meta, task)

    for method, stage in (("baseline", "baseline"), ("full", "evaluate-full")):
        metrics = evaluate("tiny_qa", method, load_task("tiny_qa", stage))
        table = pd.read_parquet(paths.predictions_file("tiny_qa", method))
        scores = score(table, meta, task)
        assert {key: metrics[key] for key in scores} == scores and metrics["examples"] == len(raw["test"])
        assert set(metrics) - set(scores) == {
            "exact_match_ci_low",
            "exact_match_ci_high",
            "f1_ci_low",
            "f1_ci_high",
            "eval_precision",
            "eval_device",
            "cpu_bf16",
        }
        answered = table[table["pred_text"] != ""]
        assert all(
            row.context[row.pred_start : row.pred_start + len(row.pred_text)] == row.pred_text
            for row in answered.itertuples()
        )


def test_evaluate_chooses_the_null_threshold_on_validation_and_predict_applies_it(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQuAD 2.0: the evaluate stage picks the margin on validation answers only (test answers
    changed -> same margin, same predictions), applies it to test, records it in the metrics,
    and predict post-processes with the recorded margin."""
    from reprotune.core import paths
    from reprotune.core.arrow import load_dataset_dir, save_dataset
    from reprotune.evaluation.evaluate import evaluate, load_method_model, tuned_task
    from reprotune.modeling.tokenizer import load_tokenizer
    from reprotune.tasks import load_task
    from reprotune.tasks.qa import family as family_module

    section = tiny_task(tmp_path / "data-src", tiny_model_dir, unanswerable=True)
    task = validate_task("tiny_qa", section)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(
        json.dumps({"pipeline": {"tasks": {"tiny_qa": "qa"}}, "tasks": {"tiny_qa": section}}), encoding="utf-8"
    )
    raw, report = sources.load_raw(task.download)
    raw = make_missing_splits(raw, task.download.make_splits, sources.SPLIT_GROUP_COLUMN)
    sources.validate_raw(raw, task)
    save_dataset(raw, paths.raw_dir("tiny_qa"), {"download_report.json": report})
    tokenizer = load_tokenizer(task.model)
    meta = preprocess.prepare_meta(raw, report, task)
    assert meta.version_2_with_negative
    features, _ = preprocess.tokenize(raw, tokenizer, task, meta)
    save_dataset(features, paths.tokenized_dir("tiny_qa"), {"meta.json": meta.model_dump(mode="json")})
    assert 0 < sum(not a["text"] for a in raw["test"]["answers"]) < len(raw["test"])

    chosen_on: list[set[str]] = []
    choose = family_module.choose_threshold
    monkeypatch.setattr(
        family_module,
        "choose_threshold",
        lambda raw_v, found: chosen_on.append(set(raw_v["id"])) or choose(raw_v, found),
    )
    metrics = evaluate("tiny_qa", "baseline", load_task("tiny_qa", "baseline"))
    assert chosen_on == [set(raw["validation"]["id"])] and not chosen_on[0] & set(raw["test"]["id"])
    assert metrics["null_threshold_source"] == "validation"
    assert {"has_answer_f1", "no_answer_accuracy", "null_threshold_validation_f1"} <= set(metrics)
    table = pd.read_parquet(paths.predictions_file("tiny_qa", "baseline"))
    margin = table["null_score"] - table["score"]
    clear = (margin - metrics["null_threshold"]).abs() > 1e-4
    assert ((table["pred_text"] != "") == (margin <= metrics["null_threshold"]))[clear].all()

    # Per-epoch validation during training scores at its own validation-chosen margin.
    plain = load_task("tiny_qa")
    model = load_method_model("tiny_qa", "baseline", plain, FAMILY, meta)
    starts, ends = FAMILY.logits(model, tokenizer, features["validation"], meta, plain)
    width = max(len(row) for row in starts)

    def padded(rows: list[np.ndarray]) -> np.ndarray:
        return np.stack([np.pad(row, (0, width - len(row)), constant_values=-100.0) for row in rows])

    labels = (np.array(features["validation"]["start_positions"]), np.array(features["validation"]["end_positions"]))
    prediction = type("Prediction", (), {"predictions": (padded(starts), padded(ends)), "label_ids": labels})
    compute = FAMILY.train_metrics(meta, plain, raw["validation"], features["validation"])
    assert compute is not None
    per_epoch = compute(prediction)
    # (training reads no evaluate key: default post-processing, here a longer max_answer_length)
    defaults = plain.model_copy(update={"evaluate": QaEvaluateParams.model_validate({})})
    choice = FAMILY.null_choice(model, tokenizer, raw["validation"], features["validation"], meta, defaults)
    assert (per_epoch["null_threshold"], per_epoch["f1"]) == (choice.threshold, choice.f1)

    # Other test answers (all made unanswerable): the same margin and the same predictions.
    saved = load_dataset_dir(paths.raw_dir("tiny_qa"), "download")
    blank = saved["test"].map(lambda r: {"answers": {"text": [], "answer_start": []}})
    save_dataset(type(saved)({**saved, "test": blank}), paths.raw_dir("tiny_qa"), {"download_report.json": report})
    again = evaluate("tiny_qa", "baseline", load_task("tiny_qa", "baseline"))
    assert again["null_threshold"] == metrics["null_threshold"] and again["f1"] != metrics["f1"]
    assert list(pd.read_parquet(paths.predictions_file("tiny_qa", "baseline"))["pred_text"]) == list(table["pred_text"])

    # predict: the recorded margin, the same answers as the test table; auto alone is refused.
    tuned = tuned_task("tiny_qa", "baseline", plain, FAMILY)
    assert tuned.evaluate.null_threshold == metrics["null_threshold"]
    records = [{"question": q, "context": c} for q, c in zip(table["question"], table["context"])]
    answers = FAMILY.predict_records(model, tokenizer, records, meta, tuned)
    assert [a["answer"] for a in answers] == list(table["pred_text"])
    with pytest.raises(ReprotuneError, match="evaluate.null_threshold is auto"):
        FAMILY.predict_records(model, tokenizer, records[:1], meta, plain)

    # A number in params is used as it is, and recorded as such.
    section["evaluate"] |= {"null_threshold": 0.0}
    (tmp_path / "params.yaml").write_text(
        json.dumps({"pipeline": {"tasks": {"tiny_qa": "qa"}}, "tasks": {"tiny_qa": section}}), encoding="utf-8"
    )
    calls = len(chosen_on)
    fixed = evaluate("tiny_qa", "baseline", load_task("tiny_qa", "baseline"))
    assert (fixed["null_threshold"], fixed["null_threshold_source"]) == (0.0, "params") and len(chosen_on) == calls


def test_bench_v2_set_moves_questions_to_another_article_without_answers(tmp_path: Path) -> None:
    """bench/qa_null.py's SQuAD 2.0-style set loads as version_2_with_negative data."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("qa_null", Path(__file__).parents[1] / "bench" / "qa_null.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    source = json.loads(write_squad(tmp_path / "v1.json").read_text(encoding="utf-8"))
    data, moved = bench.make_unanswerable(source, 0.5, seed=3)
    questions = {
        qa["id"]: (article["title"], qa)
        for article in data["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    }
    home = {qa["id"]: a["title"] for a in source["data"] for p in a["paragraphs"] for qa in p["qas"]}
    assert len(questions) == len(home) == 36 and 0 < moved < 36
    unanswerable = [qid for qid, (_, qa) in questions.items() if qa["is_impossible"]]
    assert len(unanswerable) == moved and all(not questions[q][1]["answers"] for q in unanswerable)
    assert all(questions[q][0] != home[q] for q in unanswerable)
    assert data == bench.make_unanswerable(source, 0.5, seed=3)[0]
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    raw, _ = load_records(QaDownloadParams(source="json", path=str(path), version_2_with_negative=True))
    assert sum(not a["text"] for split in raw.values() for a in split["answers"]) == moved


def test_hub_split_mapped_to_test_is_not_also_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    from reprotune.sources.hub import rename_splits

    rows = {
        "id": ["a", "b"],
        "title": ["T", "U"],
        "context": ["Ann met Bob."] * 2,
        "question": ["Who?"] * 2,
        "answers": [{"text": ["Bob"], "answer_start": [8]}] * 2,
    }
    source = {"train": Dataset.from_dict(rows), "validation": Dataset.from_dict(rows | {"id": ["c", "d"]})}
    monkeypatch.setattr(sources, "load_hub", lambda params: rename_splits(source, params.splits))
    raw, _ = load_records(QaDownloadParams(source="hub", dataset="squad", splits={"test": "validation"}))
    assert sorted(raw) == ["test", "train"] and raw["test"]["id"] == ["c", "d"]
    raw, _ = load_records(QaDownloadParams(source="hub", dataset="squad"))
    assert sorted(raw) == ["train", "validation"]


def test_lora_qa_model_reads_token_type_ids(tiny_model_dir: Path) -> None:
    """peft's QUESTION_ANS wrapper drops token_type_ids; the family must not use it."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    from reprotune.core.params import LoraTrainParams
    from reprotune.training.lora import apply_lora

    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(str(tiny_model_dir))
    peft_model = apply_lora(model, LoraTrainParams(r=2, alpha=4), FAMILY.peft_task_type, FAMILY.head_modules).eval()
    ids = torch.tensor([[101, 2054, 102, 2003, 2009, 102]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        zeros = peft_model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).start_logits
        segments = peft_model(
            input_ids=ids, attention_mask=mask, token_type_ids=torch.tensor([[0, 0, 0, 1, 1, 1]])
        ).start_logits
        merged = peft_model.merge_and_unload()(
            input_ids=ids, attention_mask=mask, token_type_ids=torch.tensor([[0, 0, 0, 1, 1, 1]])
        ).start_logits
    assert not torch.allclose(zeros, segments), "segment ids must reach the encoder"
    assert torch.allclose(segments, merged, atol=1e-5)
