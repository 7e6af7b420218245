"""Carved splits never put one text on two sides; overlaps of given splits are counted, not removed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from datasets import Dataset, DatasetDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reprotune.core.arrow import load_dataset_dir
from reprotune.core.errors import ReprotuneError
from reprotune.core.params import DownloadParams, MakeSplits, NearDuplicates
from reprotune.sources.near_duplicates import fold
from reprotune.sources.overlap import normalise, overlap_report, text_keys
from reprotune.sources.splits import carve_missing_splits, limit_samples, make_missing_splits

SPLITS = ("train", "validation", "test")


def dataset(texts: list[Any], **columns: list[Any]) -> Dataset:
    return Dataset.from_dict({"id": list(range(len(texts))), "text": texts, **columns})


def owners(raw: DatasetDict, fields: tuple[str, ...], column: str | None = None) -> dict[Any, set[str]]:
    """Normalised text (or `column` value) -> the splits holding it."""
    held: dict[Any, set[str]] = {}
    for split in SPLITS:
        values = text_keys(raw[split], fields) if column is None else raw[split][column]
        for value in values:
            held.setdefault(value, set()).add(split)
    return held


def ids(raw: DatasetDict) -> dict[str, list[int]]:
    return {split: list(raw[split]["id"]) for split in SPLITS}


# One text, spelt in ways that normalise alike, so duplicates are rarely byte-identical.
VARIANTS = st.sampled_from(["{}", "{} ", " {}", "{}\n", "\t{}"])
TEXTS = st.integers(0, 11).flatmap(
    lambda n: st.tuples(VARIANTS, st.booleans()).map(
        lambda v: v[0].format(f"Text  number {n}".upper() if v[1] else f"text number {n}")
    )
)


@st.composite
def carving_cases(draw: st.DrawFn) -> tuple[Dataset, MakeSplits, str | None]:
    texts = draw(st.lists(TEXTS, min_size=6, max_size=40))
    with_groups = draw(st.booleans())
    columns = {}
    if with_groups:
        columns["group"] = draw(st.lists(st.sampled_from("abcdefgh"), min_size=len(texts), max_size=len(texts)))
    sizes = MakeSplits(
        validation=draw(st.sampled_from([0.1, 0.2, 0.3])),
        test=draw(st.sampled_from([0.1, 0.25])),
        seed=draw(st.integers(0, 2**16)),
    )
    return dataset(texts, **columns), sizes, "group" if with_groups else None


def groups(train: Dataset, column: str | None) -> int:
    """Rows joined by equal text (and equal `column`), counted naively."""
    links = [text_keys(train, ("text",))] + ([train[column]] if column else [])
    sets = [{row} for row in range(len(train))]
    for values in links:
        for value in set(values):
            rows = {row for row, other in enumerate(values) if other == value}
            touching = [group for group in sets if group & rows]
            sets = [group for group in sets if not group & rows] + [set().union(*touching)]
    return len(sets)


@settings(
    max_examples=100, derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(carving_cases())
def test_group_never_puts_one_text_on_two_sides(case: tuple[Dataset, MakeSplits, str | None]) -> None:
    train, sizes, column = case
    fields = ("text",)
    if groups(train, column) < 3:  # test takes one group at least, validation needs two more
        with pytest.raises(ReprotuneError, match="download.make_splits"):
            carve_missing_splits(DatasetDict({"train": train}), sizes, column, fields, "group")
        return
    raw, report = carve_missing_splits(DatasetDict({"train": train}), sizes, column, fields, "group")
    assert report["groups_in_train"]["test"] == groups(train, column)
    assert all(len(splits) == 1 for splits in owners(raw, fields).values()), "a text straddles splits"
    if column:
        assert all(len(splits) == 1 for splits in owners(raw, fields, column).values()), "a group straddles splits"
    assert sorted(sum(ids(raw).values(), [])) == list(range(len(train))), "rows lost or repeated"
    assert all(entry["with_text_in_train"] == 0 for entry in overlap_report(raw, fields, report["carved"]).values())
    # seeded subsets of disjoint splits stay disjoint
    limited = limit_samples(raw, {"train": 5, "test": 2}, sizes.seed)
    assert all(len(splits) == 1 for splits in owners(limited, fields).values())


@settings(max_examples=60, derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(carving_cases())
def test_drop_from_eval_leaves_no_train_text_in_eval_and_counts_the_drops(
    case: tuple[Dataset, MakeSplits, str | None],
) -> None:
    train, sizes, column = case
    fields = ("text",)
    source = DatasetDict({"train": train})
    kept = make_missing_splits(source, sizes, column, fields, "keep")
    raw, report = carve_missing_splits(source, sizes, column, fields, "drop_from_eval")
    assert list(raw["train"]["id"]) == list(kept["train"]["id"]), "drop_from_eval carves train as keep does"
    in_train = set(text_keys(kept["train"], fields))
    for split in ("validation", "test"):
        expected = [
            i
            for i, key in zip(list(kept[split]["id"]), text_keys(kept[split], fields), strict=True)
            if key not in in_train
        ]
        assert list(raw[split]["id"]) == expected
        assert report["dropped_from_eval"][split] == len(kept[split]) - len(expected)


def test_normalised_text_folds_case_and_white_space_and_joins_lists() -> None:
    assert normalise("  The\tCat\n sat ") == "the cat sat"
    assert normalise(["The", " cat", "SAT"]) == normalise("the cat sat")
    assert normalise(None) == ""
    # fields are compared one by one: a pair never matches the same words split differently
    a = Dataset.from_dict({"text": ["a b"], "text_pair": ["c"]})
    b = Dataset.from_dict({"text": ["a"], "text_pair": ["b c"]})
    assert text_keys(a, ("text", "text_pair")) != text_keys(b, ("text", "text_pair"))


def test_overlap_counts_on_a_hand_made_case() -> None:
    raw = DatasetDict(
        {
            "train": Dataset.from_dict({"tokens": [["Hello", "world"], ["Good", "morning"], ["a"], ["a"]]}),
            "validation": Dataset.from_dict({"tokens": [["hello", "WORLD"], ["new"], ["Good  morning"]]}),
            "test": Dataset.from_dict({"tokens": [["A"], ["a"], ["other"], ["hello", "world", "!"]]}),
        }
    )
    report = overlap_report(raw, ("tokens",), carved=["validation"])
    assert report == {
        "validation": {"examples": 3, "distinct_texts": 3, "with_text_in_train": 2, "split_from": "train"},
        "test": {"examples": 4, "distinct_texts": 3, "with_text_in_train": 2, "split_from": "source"},
    }
    # near-duplicates on: "hello world !" folds to train's "Hello world" (punctuation dropped)
    near = overlap_report(raw, ("tokens",), carved=["validation"], near=NearDuplicates())
    assert near["validation"] == {
        **report["validation"],
        "with_near_duplicate_in_train": 2,
        "near_duplicate_clusters": 3,
    }
    assert near["test"] == {**report["test"], "with_near_duplicate_in_train": 3, "near_duplicate_clusters": 3}
    assert overlap_report(raw, ("tokens",), carved=["validation"], near=NearDuplicates(threshold=None)) == report
    assert [len(raw[s]) for s in SPLITS] == [4, 3, 4], "counting removes nothing"


def test_given_splits_are_never_changed_and_duplicates_mode_only_affects_carving() -> None:
    given_splits = DatasetDict(
        {"train": dataset(["x", "y", "z"]), "validation": dataset(["X"]), "test": dataset(["y "])}
    )
    for mode in ("group", "drop_from_eval", "keep"):
        raw, report = carve_missing_splits(given_splits, MakeSplits(), None, ("text",), mode)
        assert ids(raw) == ids(given_splits) and report == {"carved": []}


def test_drop_from_eval_counts_on_a_hand_made_case() -> None:
    # every text twice: with keep, each held-out row's twin is likely in train
    texts = [f"sentence {i % 10}" for i in range(40)]
    source = DatasetDict({"train": dataset(texts)})
    sizes = MakeSplits(validation=0.2, test=0.2, seed=7)
    kept = make_missing_splits(source, sizes, None, ("text",), "keep")
    raw, report = carve_missing_splits(source, sizes, None, ("text",), "drop_from_eval")
    train_texts = set(list(kept["train"]["text"]))
    leaked = {split: sum(text in train_texts for text in list(kept[split]["text"])) for split in ("validation", "test")}
    assert leaked["test"] > 0
    assert report["dropped_from_eval"] == leaked
    assert {split: len(raw[split]) for split in SPLITS} == {
        "train": len(kept["train"]),
        "validation": len(kept["validation"]) - leaked["validation"],
        "test": len(kept["test"]) - leaked["test"],
    }
    assert report["train_examples"] == 40 and report["distinct_texts"] == 10 and report["examples_sharing_text"] == 40


def test_group_fractions_count_groups_and_duplicates_move_together() -> None:
    texts = ["dup"] * 5 + [f"unique {i}" for i in range(15)]  # 16 groups
    raw, report = carve_missing_splits(
        DatasetDict({"train": dataset(texts)}), MakeSplits(validation=0.25, test=0.25, seed=1), None, ("text",), "group"
    )
    assert report["groups_in_train"]["test"] == 16
    test_groups = len(set(text_keys(raw["test"], ("text",))))
    assert test_groups == 4  # ceil(0.25 * 16) groups, however many rows they hold
    assert sum("dup" in list(raw[split]["text"]) for split in SPLITS) == 1
    assert list(raw[next(s for s in SPLITS if "dup" in list(raw[s]["text"]))]["text"]).count("dup") == 5


@pytest.mark.parametrize("column", [None, "group"])
def test_group_without_duplicates_carves_exactly_what_keep_does(column: str | None) -> None:
    texts = [f"text {i}" for i in range(50)]
    columns = {"group": [f"g{i % 9}" for i in range(50)]} if column else {}
    source = DatasetDict({"train": dataset(texts, **columns)})
    sizes = MakeSplits(validation=0.1, test=0.2, seed=42)
    grouped = make_missing_splits(source, sizes, column, ("text",), "group")
    assert ids(grouped) == ids(make_missing_splits(source, sizes, column, ("text",), "keep"))
    assert ids(grouped) == ids(make_missing_splits(source, sizes, column))  # no text fields: the old carving
    if column is None:  # rows, in the order Dataset.train_test_split gives them
        first = source["train"].train_test_split(test_size=0.2, seed=42)
        second = first["train"].train_test_split(test_size=0.1, seed=42)
        assert list(grouped["test"]["id"]) == list(first["test"]["id"])
        assert list(grouped["validation"]["id"]) == list(second["test"]["id"])
        assert list(grouped["train"]["id"]) == list(second["train"]["id"])


@pytest.mark.parametrize("mode", ["group", "drop_from_eval", "keep"])
def test_carving_is_deterministic_for_a_seed(mode: str) -> None:
    texts = [f"text {i % 23}" for i in range(80)]
    source = DatasetDict({"train": dataset(texts)})
    runs = [ids(make_missing_splits(source, MakeSplits(seed=seed), None, ("text",), mode)) for seed in (5, 5, 6)]  # type: ignore[arg-type]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_qa_group_column_and_duplicate_texts_combine() -> None:
    # articles a..j; the same question+context sits in articles a and b, and in c and d:
    # a+b and c+d must each stay on one side, as must every article.
    groups = [g for g in "abcdefghij" for _ in range(3)]
    questions = [f"q{i}" for i in range(len(groups))]
    contexts = [f"context of {g}" for g in groups]
    questions[3], contexts[3] = questions[0], contexts[0]  # b's first question is a's first
    questions[9], contexts[9] = " Q6", "CONTEXT  of c"  # d's first repeats c's first, respelt
    train = Dataset.from_dict(
        {"id": list(range(len(groups))), "group": groups, "question": questions, "context": contexts}
    )
    fields = ("question", "context")
    for seed in range(12):
        raw, report = carve_missing_splits(
            DatasetDict({"train": train}), MakeSplits(validation=0.2, test=0.2, seed=seed), "group", fields, "group"
        )
        article_sides = owners(raw, fields, "group")
        assert all(len(sides) == 1 for sides in article_sides.values())
        assert article_sides["a"] == article_sides["b"] and article_sides["c"] == article_sides["d"]
        assert all(len(sides) == 1 for sides in owners(raw, fields).values())
        assert report["groups_in_train"]["test"] == 8  # ten articles, two pairs joined
    # without text grouping the joined articles may part (and do for some seed)
    parted = [
        owners(
            make_missing_splits(
                DatasetDict({"train": train}), MakeSplits(validation=0.2, test=0.2, seed=seed), "group", fields, "keep"
            ),
            fields,
            "group",
        )
        for seed in range(12)
    ]
    assert any(sides["a"] != sides["b"] or sides["c"] != sides["d"] for sides in parted)


def test_too_few_distinct_texts_to_carve_names_the_key() -> None:
    with pytest.raises(ReprotuneError, match=r"distinct text.*download\.duplicates"):
        make_missing_splits(DatasetDict({"train": dataset(["same", "SAME", " same"])}), MakeSplits(), None, ("text",))


def test_duplicates_param_is_validated() -> None:
    assert DownloadParams(source="x").duplicates == "group"
    with pytest.raises(ValueError, match="group"):
        DownloadParams(source="x", duplicates="dedupe")


def load_csv_train(root: Path) -> list[str]:
    return [line.rsplit(",", 1)[0] for line in (root / "train.csv").read_text(encoding="utf-8").splitlines()[1:]]


def test_download_stage_reports_carving_and_overlap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stages.download import main

    train = "text,label\n" + "".join(f"article {i % 30},{'ab'[i % 2]}\n" for i in range(60))
    (tmp_path / "train.csv").write_text(train, encoding="utf-8")
    test = "text,label\n" + "".join(f"ARTICLE  {i},{'ab'[i % 2]}\n" for i in range(30)) + "fresh one,a\nfresh two,b\n"
    # a punctuated copy of a train article and of a test row: near-duplicates, not exact ones
    test += "Article 7!,b\nFresh one.,a\n"
    (tmp_path / "test.csv").write_text(test, encoding="utf-8")
    tiny = {"epochs": 1, "batch_size": 2}
    params = {
        "pipeline": {"tasks": {"t": "classification"}},
        "tasks": {
            "t": {
                "type": "classification",
                "model": {"name_or_path": "unused"},
                "download": {
                    "source": "csv",
                    "files": {"train": "train.csv", "test": "test.csv"},
                    "make_splits": {"validation": 0.2, "seed": 3},
                    "max_samples": {"train": 40},
                },
                "tokenize": {},
                "train_full": tiny,
                "train_lora": tiny,
                "evaluate": {},
                "error_analysis": {},
            }
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    main(["t"])
    report = json.loads((tmp_path / "data" / "t" / "raw" / "download_report.json").read_text(encoding="utf-8"))
    carving = report["carving"]
    assert carving["carved"] == ["validation"] and carving["duplicates"] == "group"
    assert carving["distinct_texts"] == 30 and carving["examples_sharing_text"] == 60
    assert carving["near_duplicate_threshold"] == 0.9 and carving["near_duplicate_pairs"] == 0
    assert report["overlap"]["validation"] == {
        "examples": 12,  # 6 texts of two rows each
        "distinct_texts": 6,
        "with_text_in_train": 0,
        "with_near_duplicate_in_train": 0,
        "near_duplicate_clusters": 6,
        "split_from": "train",
    }
    # the given test keeps its overlap: every article but those carved into validation
    # (ceil(0.2 * 30) = 6 texts) is in train, and in the 40-row subset of train those it kept
    raw = load_dataset_dir(tmp_path / "data" / "t" / "raw", "download")
    assert len(raw["test"]) == report["examples"]["test"] == 34
    before = report["overlap_before_max_samples"]["test"]
    assert before["examples"] == 34 and before["distinct_texts"] == 34 and before["with_text_in_train"] == 24
    article_7_in_train = "article 7" in {normalise(text) for text in list(load_csv_train(tmp_path))} - {
        normalise(text) for text in list(raw["validation"]["text"])
    }
    assert before["with_near_duplicate_in_train"] == 24 + article_7_in_train
    # "ARTICLE  7" and "Article 7!" are one cluster, "fresh one" and "Fresh one." another
    assert before["near_duplicate_clusters"] == 32
    saved_train = {normalise(text) for text in list(raw["train"]["text"])}
    in_saved_train = sum(normalise(text) in saved_train for text in list(raw["test"]["text"]))
    folded_train = {fold(text) for text in list(raw["train"]["text"])}
    near_saved_train = sum(fold(text) in folded_train for text in list(raw["test"]["text"]))
    assert near_saved_train > in_saved_train or "article 7" not in saved_train
    assert report["overlap"]["test"] == {
        "examples": 34,
        "distinct_texts": 34,
        "with_text_in_train": in_saved_train,
        "with_near_duplicate_in_train": near_saved_train,
        "near_duplicate_clusters": 32,
        "split_from": "source",
    }
    # each saved evaluation row's cluster: its first row of one (near-)duplicate text
    clusters = json.loads((tmp_path / "data" / "t" / "raw" / "clusters.json").read_text(encoding="utf-8"))
    assert clusters["test"] == [*range(32), 7, 30]
    texts = [normalise(text) for text in list(raw["validation"]["text"])]
    assert clusters["validation"] == [texts.index(text) for text in texts]
