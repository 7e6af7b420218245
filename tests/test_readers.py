"""The shared reader layer: every local format as `Row`s that say where they came from."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from reprotune.core.errors import ReprotuneError
from reprotune.core.params import DownloadParams
from reprotune.sources.readers import (
    first_repeat,
    local_files,
    one_source_split_each,
    read_column_lines,
    read_delimited,
    read_lines_or_repair,
    read_objects,
    split_paths,
)


def test_rows_name_file_and_line_or_row(tmp_path: Path) -> None:
    csv_file = tmp_path / "d.csv"
    csv_file.write_text('text,label\n"two\nlines",a\n\nb,c\n', encoding="utf-8")
    names, rows = read_delimited(csv_file, "csv")
    assert names == ["text", "label"]
    assert [(r.where, r.line, r.number, r.values) for r in rows] == [
        (f"{csv_file}:2", 2, 1, ["two\nlines", "a"]),
        (f"{csv_file}:5", 5, 2, ["b", "c"]),
    ]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"a": 1}\n\n{"b": 2}\n', encoding="utf-8")
    names, rows = read_objects(jsonl, "jsonl")
    assert names == ["a", "b"] and [r.where for r in rows] == [f"{jsonl}:1", f"{jsonl}:3"]
    listed = tmp_path / "d.json"
    listed.write_text('[{"a": 1}, {"a": 2}]', encoding="utf-8")
    assert [(r.where, r.line, r.number) for r in read_objects(listed, "json")[1]] == [
        (f"{listed} row 1", None, 1),
        (f"{listed} row 2", None, 2),
    ]


def test_delimited_rows_keep_one_width_and_a_one_column_empty_cell(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("a\tb\n1\t2\n3\n", encoding="utf-8")
    with pytest.raises(ReprotuneError, match=r"d\.tsv:3: expected 2 columns separated by '\\t' \(as the header"):
        read_delimited(path, "tsv")
    single = tmp_path / "s.csv"
    single.write_text('text\none\n""\n\ntwo\n', encoding="utf-8")
    assert [r.values for r in read_delimited(single, "csv")[1]] == [["one"], [""], ["two"]]


def test_column_lines_mark_blocks_and_check_the_width(tmp_path: Path) -> None:
    path = tmp_path / "d.conll"
    path.write_text("-DOCSTART- O\n\nEU B-ORG\n\nx O\ny O z\n", encoding="utf-8")
    seen = []
    lines = read_column_lines(path, " ", seen.append)
    assert next(lines) is None and next(lines) is None
    assert next(lines).values == ["EU", "B-ORG"] and [r.line for r in seen] == [3]
    assert next(lines) is None and next(lines).where == f"{path}:5"
    with pytest.raises(ReprotuneError, match=r"d\.conll:6: expected 2 columns separated by ' '"):
        next(lines)


def test_split_paths_refuse_folders_where_files_belong(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    params = DownloadParams(source="conll", path=str(tmp_path / "dir"))
    with pytest.raises(ReprotuneError, match="download.path '.*dir' is a folder; source 'conll' reads one file"):
        local_files(params)
    assert split_paths(params, "any") == {"train": [tmp_path / "dir"]}
    with pytest.raises(ReprotuneError, match="needs download.path or download.files"):
        local_files(DownloadParams(source="conll"))


def test_lines_or_repair(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes(b"ok\ncosts \xa315m\n")
    with pytest.raises(ReprotuneError, match=r"latin\.txt:2: not valid UTF-8.*invalid_utf8: replace"):
        read_lines_or_repair(path, "fail")
    assert read_lines_or_repair(path, "replace") == ([(1, "ok"), (2, "costs \ufffd15m")], True)
    assert read_lines_or_repair(path, "skip") == (None, True)
    with pytest.raises(ReprotuneError, match="cannot read"):
        read_lines_or_repair(tmp_path, "skip")  # a folder is no text file, whatever invalid_utf8 says


def test_one_source_split_each_and_first_repeat() -> None:
    data = Dataset.from_dict({"x": [1]})
    raw = DatasetDict({"train": Dataset.from_dict({"x": [0]}), "validation": data, "test": data})
    assert set(one_source_split_each(raw, {"test": "validation"})) == {"train", "test"}
    with pytest.raises(ReprotuneError, match="maps both"):
        one_source_split_each(raw, {"validation": "validation", "test": "validation"})
    assert first_repeat(["a", "b", "a"]) == (3, "a") and first_repeat([]) is None


def test_a_split_of_several_files_is_fingerprinted_file_by_file(tmp_path: Path) -> None:
    """`download.files.test: [a, b]` (classification concatenates them): each file has its entry,
    and editing the second one changes the fingerprint."""
    from reprotune.core.fingerprint import HashCache, data_fingerprint

    first, second = tmp_path / "a.tsv", tmp_path / "b.tsv"
    first.write_text("x\t0\n")
    second.write_text("y\t1\n")
    download = {"source": "tsv", "files": {"train": str(first), "test": [str(first), str(second)]}}
    before = data_fingerprint(download, HashCache(tmp_path / "cache.json"))
    assert [entry["ref"] for entry in before["files.test"]] == [str(first), str(second)]
    assert before["files.train"]["sha256"] == before["files.test"][0]["sha256"]
    second.write_text("y\t0\n")
    after = data_fingerprint(download, HashCache(tmp_path / "cache.json"))
    assert after["files.test"][1]["sha256"] != before["files.test"][1]["sha256"]
    assert after["files.train"] == before["files.train"]
