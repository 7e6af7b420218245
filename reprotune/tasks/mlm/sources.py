"""Read raw text documents from the Hub, plain-text files/folders or tables into
splits with columns `id` and `text`; empty and repeated documents are counted, not kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from reprotune.core.errors import ReprotuneError
from reprotune.sources.hub import load_hub
from reprotune.sources.readers import (
    local_files,
    read_delimited,
    read_lines_or_repair,
    read_objects,
    visible_files,
)
from reprotune.tasks.mlm.params import MlmDownloadParams, MlmTaskParams

Document = dict[str, str]

SPLIT_GROUP_COLUMN: str | None = None
"""Documents are independent, so carved splits need no grouping."""
TEXT_FIELDS: tuple[str, ...] = ("text",)


def text_documents(
    path: Path, document_per: str, pattern: str, invalid_utf8: str = "fail", not_utf8: list[str] | None = None
) -> list[Document]:
    """A file, or every file under a folder matching `pattern`, read as UTF-8.

    `document_per: file` keeps each file whole (BBC News: one article per file);
    `line` makes every non-empty line its own document. Files that are not UTF-8
    (replaced or skipped per `invalid_utf8`) are appended to `not_utf8`."""
    if path.is_dir():
        files = visible_files(path, pattern)
        if not files:
            raise ReprotuneError(f"{path}: no files match download.pattern '{pattern}'")
        root = path
    else:
        files, root = [path], path.parent
    documents: list[Document] = []
    for file in files:
        name = file.relative_to(root).as_posix()
        lines, repaired = read_lines_or_repair(file, invalid_utf8)
        if repaired and not_utf8 is not None:
            not_utf8.append(name)
        if lines is None:
            continue
        if document_per == "file":
            documents.append({"id": name, "text": "\n".join(line for _, line in lines).strip()})
        else:
            documents.extend({"id": f"{name}:{number}", "text": line.strip()} for number, line in lines)
    return documents


def table_documents(path: Path, fmt: str, text_field: str, tsv_quoting: str = "none") -> list[Document]:
    """Rows of a CSV/TSV/JSON/JSONL/Parquet file; a non-text value names its row."""
    if fmt in ("csv", "tsv"):  # cells stay strings ("123", "NA" are text); empty cells are dropped as empty
        header, rows = read_delimited(path, fmt, tsv_quoting=tsv_quoting)
        names = header or []
        records = [dict(zip(names, row.values)) for row in rows]
    else:
        names, rows = read_objects(path, fmt, "document")
        records = [row.values for row in rows]
    if text_field not in names:
        raise ReprotuneError(
            f"{path}: no column '{text_field}' (it has {', '.join(map(str, names))}); set download.text_field"
        )
    values = [record.get(text_field) for record in records]
    documents: list[Document] = []
    for row, value in enumerate(values, start=1):
        if value is None or (isinstance(value, float) and value != value):
            value = ""
        if not isinstance(value, str):
            raise ReprotuneError(
                f"{path}: data row {row}: '{text_field}' is {type(value).__name__} {value!r}, not text"
            )
        documents.append({"id": f"{path.name}:{row}", "text": value.strip()})
    return documents


def dataset_documents(dataset: Dataset, text_field: str, split: str) -> list[Document]:
    if text_field not in dataset.column_names:
        raise ReprotuneError(
            f"{split} split has no column '{text_field}' (it has {', '.join(dataset.column_names)}); "
            "set download.text_field"
        )
    ids = dataset["id"] if "id" in dataset.column_names else None
    documents = []
    for index, value in enumerate(dataset[text_field]):
        if value is not None and not isinstance(value, str):
            raise ReprotuneError(f"{split} example {index}: '{text_field}' is {type(value).__name__}, not text")
        name = str(ids[index]) if ids is not None else f"{split}:{index}"
        documents.append({"id": name, "text": (value or "").strip()})
    return documents


def load_documents(params: MlmDownloadParams, not_utf8: list[str] | None = None) -> dict[str, list[Document]]:
    """Split name -> documents, from whichever source params name."""
    if params.source == "hub":
        hub = load_hub(params)
        return {split: dataset_documents(dataset, params.text_field, split) for split, dataset in hub.items()}
    if params.source == "text":
        return {
            split: text_documents(path, params.document_per, params.pattern, params.invalid_utf8, not_utf8)
            for split, path in local_files(params, "any").items()
        }
    files = local_files(params)
    return {
        split: table_documents(path, params.source, params.text_field, params.tsv_quoting)
        for split, path in files.items()
    }


def clean(splits: dict[str, list[Document]], deduplicate: bool) -> tuple[DatasetDict, dict[str, Any]]:
    """Drop empty documents and, with `deduplicate`, repeats (train first, so a held-out
    document that also occurs in train is the one dropped: it would leak)."""
    report: dict[str, Any] = {"empty_documents": {}, "duplicate_documents": {}}
    seen: set[str] = set()
    out: dict[str, Dataset] = {}
    order = sorted(
        splits, key=lambda s: ("train", "validation", "test").index(s) if s in ("train", "validation", "test") else 3
    )
    for split in order:
        kept, empty, repeated = [], 0, 0
        for document in splits[split]:
            if not document["text"]:
                empty += 1
            elif deduplicate and document["text"] in seen:
                repeated += 1
            else:
                seen.add(document["text"])
                kept.append(document)
        report["empty_documents"][split] = empty
        report["duplicate_documents"][split] = repeated
        out[split] = Dataset.from_list(kept) if kept else Dataset.from_dict({"id": [], "text": []})
    return DatasetDict(out), report


def load_raw(params: MlmDownloadParams) -> tuple[DatasetDict, dict[str, Any]]:
    """The documents of every split, cleaned; the report counts what was dropped and
    names the files that were not UTF-8."""
    not_utf8: list[str] = []
    raw, report = clean(load_documents(params, not_utf8), params.deduplicate)
    report["files_not_utf8"] = {"action": params.invalid_utf8, "files": not_utf8}
    return raw, report


def validate_raw(raw: DatasetDict, params: MlmTaskParams) -> None:
    """Nothing to check: any text is valid masked-LM input (tokenize refuses splits too short to chunk)."""
