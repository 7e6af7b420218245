"""Read SQuAD-format questions from the Hub, nested SQuAD JSON or flat JSONL into
splits with columns id, title, context, question, answers{text, answer_start}, group.

Every record is checked on the way in: an answer_start that does not point at its
answer text names the record, so a broken file never trains a model silently. Lone
UTF-16 surrogates (JSON allows the escape "\\ud83c" on its own; Arrow cannot store it)
are repaired to U+FFFD, one character for one so answer offsets stay right, and counted
in the report."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Features, List, Value

from reprotune.core.errors import ReprotuneError
from reprotune.sources.hub import load_hub
from reprotune.sources.readers import (
    JsonLinesInstead,
    first_repeat,
    local_files,
    one_source_split_each,
    read_json_file,
    read_json_lines,
)
from reprotune.tasks.qa.params import QaDownloadParams, QaTaskParams

Record = dict[str, Any]

FEATURES = Features(
    {
        "id": Value("string"),
        "title": Value("string"),
        "context": Value("string"),
        "question": Value("string"),
        "answers": {"text": List(Value("string")), "answer_start": List(Value("int32"))},
        "group": Value("string"),
    }
)
SPLIT_GROUP_COLUMN: str | None = "group"
"""Article or paragraph (download.split_by): carved splits never share one, so no context leaks."""
TEXT_FIELDS: tuple[str, ...] = ("question", "context")
SURROGATE = re.compile("[\ud800-\udfff]")
MIN_TITLE_GROUPS = 10
"""`split_by: auto` trusts titles only when train has this many: the SQuAD train subset
keeps a single placeholder title, which would make one unsplittable group."""


def _answers(raw: Any, where: str) -> dict[str, list]:
    """HF layout {text: [...], answer_start: [...]} or SQuAD layout [{text, answer_start}, ...]."""
    if raw is None:
        return {"text": [], "answer_start": []}
    if isinstance(raw, dict) and "text" in raw and "answer_start" in raw:
        texts, starts = list(raw["text"]), list(raw["answer_start"])
        if len(texts) != len(starts):
            raise ReprotuneError(f"{where}: answers has {len(texts)} texts but {len(starts)} answer_start values")
        return {"text": texts, "answer_start": starts}
    if isinstance(raw, list) and all(isinstance(a, dict) and "text" in a and "answer_start" in a for a in raw):
        return {"text": [a["text"] for a in raw], "answer_start": [a["answer_start"] for a in raw]}
    raise ReprotuneError(
        f"{where}: answers must be {{text: [...], answer_start: [...]}} or a list of {{text, answer_start}} "
        f"(got {str(raw)[:80]!r})"
    )


def check_record(record: Record, where: str, allow_unanswerable: bool) -> None:
    """Raise on anything that would train or score wrongly; `where` names the file or split."""
    rid = record["id"]
    if not isinstance(record["context"], str) or not record["context"].strip():
        raise ReprotuneError(f"{where}: record '{rid}' has an empty context")
    if not isinstance(record["question"], str) or not record["question"].strip():
        raise ReprotuneError(f"{where}: record '{rid}' has an empty question")
    answers = record["answers"]
    if not answers["text"] and not allow_unanswerable:
        raise ReprotuneError(
            f"{where}: record '{rid}' has no answer; unanswerable questions (SQuAD v2) need "
            "download.version_2_with_negative: true"
        )
    context = record["context"]
    for text, start in zip(answers["text"], answers["answer_start"]):
        if not isinstance(text, str) or not text.strip():
            raise ReprotuneError(f"{where}: record '{rid}' has an empty answer text")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ReprotuneError(
                f"{where}: record '{rid}': answer_start must be a non-negative integer (got {start!r})"
            )
        found = context[start : start + len(text)]
        if found != text:
            raise ReprotuneError(
                f"{where}: record '{rid}': answer_start {start} does not point at the answer {text!r} "
                f"(the context has {found!r} there); fix answer_start or the answer text"
            )


def _record(rid: Any, title: Any, context: Any, question: Any, answers: Any, where: str) -> Record:
    return {
        "id": str(rid),
        "title": "" if title is None else str(title),
        "context": context,
        "question": question,
        "answers": _answers(answers, f"{where}: record '{rid}'"),
    }


def _record_id(value: Any, fallback: str) -> Any:
    """The record's own id unless it has none; an id of 0 is an id."""
    return fallback if value is None or value == "" else value


def _missing_key(where: str, rid: Any, key: str, row: dict[str, Any]) -> ReprotuneError:
    """A question without `answers` is an error, never unanswerable: a misspelt key would
    otherwise turn every question into a SQuAD v2 null answer."""
    hint = (
        "give it answers: [{text, answer_start}], or answers: [] for an unanswerable question "
        "(with download.version_2_with_negative: true)"
        if key == "answers"
        else "each record needs context, question and answers"
    )
    return ReprotuneError(
        f"{where}: record '{rid}' has no '{key}' (it has {', '.join(map(str, row)) or 'no keys'}); " + hint
    )


def _squad_answers(qa: dict[str, Any], where: str, rid: Any) -> Any:
    """`is_impossible: true` needs no answers; otherwise the key must be there."""
    if qa.get("is_impossible"):
        return []
    if "answers" not in qa:
        raise _missing_key(where, rid, "answers", qa)
    return qa["answers"]


def _read_json(path: Path) -> Any:
    try:
        return read_json_file(path)
    except JsonLinesInstead:
        raise ReprotuneError(f"{path}: holds one JSON object per line, not SQuAD JSON; set download.source: jsonl")


def read_squad_json(path: Path) -> list[Record]:
    """SQuAD v1.1/v2.0 JSON: {data: [{title, paragraphs: [{context, qas: [{id, question, answers}]}]}]}."""
    data = _read_json(path)
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list):
        raise ReprotuneError(
            f"{path}: expected SQuAD JSON, an object with a 'data' list of articles "
            "(for one flat record per line use download.source: jsonl)"
        )
    records: list[Record] = []
    for a, article in enumerate(articles):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise ReprotuneError(f"{path}: data[{a}] has no 'paragraphs' list")
        for p, paragraph in enumerate(paragraphs):
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
                raise ReprotuneError(f"{path}: data[{a}].paragraphs[{p}] has no 'context' string")
            for q, qa in enumerate(paragraph.get("qas") or []):
                if not isinstance(qa, dict):
                    raise ReprotuneError(f"{path}: data[{a}].paragraphs[{p}].qas[{q}] is not an object")
                rid = _record_id(qa.get("id"), f"{path.name}:{a}.{p}.{q}")
                answers = _squad_answers(qa, f"{path}: data[{a}].paragraphs[{p}].qas[{q}]", rid)
                records.append(
                    _record(rid, article.get("title"), paragraph["context"], qa.get("question"), answers, str(path))
                )
    if not records:
        raise ReprotuneError(f"{path}: no questions found under data[].paragraphs[].qas[]")
    return records


def read_jsonl(path: Path) -> list[Record]:
    """One object a line: id, context, question, answers (HF or SQuAD layout), optional title."""
    records: list[Record] = []
    for number, row in read_json_lines(path):
        rid = _record_id(row.get("id"), f"{path.name}:{number}")
        if row.get("is_impossible") and "answers" not in row:
            row = {**row, "answers": []}
        missing = [key for key in ("context", "question", "answers") if key not in row]
        if missing:
            raise _missing_key(f"{path}:{number}", rid, missing[0], row)
        records.append(_record(rid, row.get("title"), row["context"], row["question"], row["answers"], str(path)))
    if not records:
        raise ReprotuneError(f"{path}: no records found (expected one JSON object per line)")
    return records


def hub_records(dataset: Dataset, where: str) -> list[Record]:
    missing = [c for c in ("id", "context", "question", "answers") if c not in dataset.column_names]
    if missing:
        raise ReprotuneError(
            f"{where} has no column '{missing[0]}' (it has {', '.join(dataset.column_names)}); "
            "qa needs SQuAD columns id, title, context, question, answers"
        )
    return [
        _record(row["id"], row.get("title"), row["context"], row["question"], row["answers"], where) for row in dataset
    ]


def read_splits(params: QaDownloadParams) -> tuple[dict[str, list[Record]], dict[str, str]]:
    """Records per split and, per split, the place to name in errors."""
    if params.source == "hub":
        hub = one_source_split_each(load_hub(params), params.splits)
        where = {split: f"hub dataset '{params.dataset}' split '{split}'" for split in hub}
        return {split: hub_records(data, where[split]) for split, data in hub.items()}, where
    reader = read_squad_json if params.source == "json" else read_jsonl
    files = local_files(params)
    return {split: reader(path) for split, path in files.items()}, {split: str(path) for split, path in files.items()}


def group_key(record: Record, split_by: str) -> str:
    if split_by == "title":
        return "title:" + record["title"]
    return "context:" + hashlib.sha1(record["context"].encode("utf-8")).hexdigest()[:16]


def choose_split_by(train: list[Record], requested: str) -> str:
    titles = {r["title"] for r in train}
    if requested == "title":
        untitled = next((r for r in train if not r["title"]), None)
        if untitled is not None:
            raise ReprotuneError(
                f"download.split_by is 'title' but train record '{untitled['id']}' has no title; "
                "use split_by: context (or auto)"
            )
        return "title"
    if requested == "context":
        return "context"
    return "title" if "" not in titles and len(titles) >= MIN_TITLE_GROUPS else "context"


def _no_surrogates(value: Any) -> Any:
    return SURROGATE.sub("\ufffd", value) if isinstance(value, str) else value


def repair_surrogates(record: Record) -> bool:
    """Replace lone surrogates with U+FFFD in every text field; True if any was there."""
    before = [record[key] for key in ("id", "title", "context", "question")] + list(record["answers"]["text"])
    for key in ("id", "title", "context", "question"):
        record[key] = _no_surrogates(record[key])
    record["answers"]["text"] = [_no_surrogates(text) for text in record["answers"]["text"]]
    after = [record[key] for key in ("id", "title", "context", "question")] + record["answers"]["text"]
    return before != after


def train_source(params: QaDownloadParams) -> str:
    """The train data as errors name it."""
    if params.source == "hub":
        return f"hub dataset '{params.dataset}'"
    return (params.files or {}).get("train") or params.path or "download.path"


def check_splittable(report: dict[str, Any], params: QaDownloadParams) -> None:
    """Refuse before carving when train has too few groups: every split carved out of
    train takes at least one whole article or paragraph, and train must keep one."""
    missing = [split for split in ("validation", "test") if split not in report["groups"]]
    groups = report["groups"]["train"]
    if not missing or groups > len(missing):
        return
    unit = "article (title)" if report["split_by"] == "title" else "paragraph (context)"
    chosen = params.split_by if params.split_by == report["split_by"] else f"{params.split_by} -> {report['split_by']}"
    own = (
        "map source splits to them with download.splits"
        if params.source == "hub"
        else "give them their own files with " + " / ".join(f"download.files.{split}" for split in missing)
    )
    fix = "set download.split_by: context to split by paragraph, or " + own if report["split_by"] == "title" else own
    raise ReprotuneError(
        f"{train_source(params)}: download.make_splits cannot carve {' and '.join(missing)} out of train: "
        f"download.split_by ({chosen}) keeps each {unit} whole and train has only {groups} of them "
        f"({len(missing) + 1} needed); {fix}"
    )


def load_records(params: QaDownloadParams) -> tuple[DatasetDict, dict[str, Any]]:
    """Checked splits with a `group` column for article- or paragraph-level splitting."""
    splits, where = read_splits(params)
    if "train" not in splits:
        raise ReprotuneError(f"source has no 'train' split (it has {', '.join(splits)}); map one with download.splits")
    split_by = choose_split_by(splits["train"], params.split_by)
    report: dict[str, Any] = {
        "split_by": split_by,
        "version_2_with_negative": params.version_2_with_negative,
        "unanswerable": {},
        "groups": {},
    }
    out = {}
    for split, records in splits.items():
        repaired = sum(repair_surrogates(record) for record in records)
        if repaired:
            report.setdefault("lone_surrogates_replaced", {})[split] = repaired
        repeat = first_repeat(record["id"] for record in records)
        for number, record in enumerate(records, start=1):
            if repeat is not None and number == repeat[0]:
                raise ReprotuneError(f"{where[split]}: record id '{repeat[1]}' occurs twice; ids must be unique")
            check_record(record, where[split], params.version_2_with_negative)
            record["group"] = group_key(record, split_by)
        report["unanswerable"][split] = sum(1 for r in records if not r["answers"]["text"])
        report["groups"][split] = len({r["group"] for r in records})
        out[split] = Dataset.from_list(records, features=FEATURES)
    return DatasetDict(out), report


def load_raw(params: QaDownloadParams) -> tuple[DatasetDict, dict[str, Any]]:
    """The checked splits; the report carries version_2_with_negative on to tokenize (meta)."""
    # Checked here, not in load_records: the generic carving that follows would only
    # say "cannot split by 'group'", while this check names the split_by/files keys.
    raw, report = load_records(params)
    check_splittable(report, params)
    return raw, report


def validate_raw(raw: DatasetDict, params: QaTaskParams) -> None:
    """Nothing left to check: every record was checked as it was read (`check_record`)."""
