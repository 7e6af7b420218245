"""Read labelled examples from the Hub, local tables (CSV/TSV with or without a
header, JSON, JSONL, Parquet) or a folder per class, into rows with the columns
`id`, `text`, `text_pair` (sentence pairs only) and `label` (a label name).

Every bad value is reported with the file and line (or the split and row) it came
from; rows a source marks as unlabelled are dropped and counted, never guessed."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from reprotune.core.errors import ReprotuneError
from reprotune.sources.hub import load_hub
from reprotune.sources.readers import (
    Row,
    class_id_to_name,
    class_label_names,
    first_repeat,
    one_source_split_each,
    parquet_feature,
    read_delimited,
    read_lines_or_repair,
    read_objects,
    split_paths,
    visible_files,
)
from reprotune.tasks.classification.params import (
    ClassificationDownloadParams,
    ClassificationTaskParams,
    Column,
)

Example = dict[str, str]
FOLDER_FIELDS = ("text", "title", "body")

SPLIT_GROUP_COLUMN: str | None = None
TEXT_FIELDS = ("text", "text_pair")


def load_raw(params: ClassificationDownloadParams) -> tuple[DatasetDict, dict[str, Any]]:
    """The labelled rows of the source as splits with a ClassLabel `label`, so the label
    order travels with the data; the report names the text columns and the order's origin."""
    return to_dataset(params, collect(params))


def validate_raw(raw: DatasetDict, params: ClassificationTaskParams) -> None:
    """Every validation and test label must occur in train."""
    train_labels = set(class_names(raw["train"], raw["train"].unique("label")))
    for split in ("validation", "test"):
        rows = raw[split].select_columns(["id", "label"]).to_dict()
        check_seen_in_train(split, rows["id"], class_names(raw[split], rows["label"]), train_labels)


def class_names(dataset: Dataset, ids: list[int]) -> list[str]:
    """Label ids of a split saved by `to_dataset` as their names."""
    return list(dataset.features["label"].int2str(ids))


# Label values -------------------------------------------------------------------
# Normalise raw values to label names, catch bad ones with their row, and fix one
# label order that training, evaluation and reports share.

INTEGER = re.compile(r"^[+-]?\d+(\.0*)?$")


def is_integer_like(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, str) and bool(INTEGER.match(value.strip()))


def integer_column(values: Sequence[Any]) -> bool:
    """A label column is numeric when most of its non-empty values are integers; then
    a value that is not one (a typo, a shifted column) is an error, not a new class."""
    filled = [v for v in values if v is not None and str(v).strip() != ""]
    return bool(filled) and sum(is_integer_like(v) for v in filled) * 2 > len(filled)


def label_value(value: Any, numeric: bool, where: str, column: str) -> str:
    """The canonical string of one raw label value (integers as `str(int)`), or an
    error naming `where` (file:line or split row) for an empty or unparseable value."""
    if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
        raise ReprotuneError(f"{where}: empty label in column '{column}'; every row needs a label")
    if isinstance(value, (list, dict)):
        raise ReprotuneError(f"{where}: label in column '{column}' is a {type(value).__name__}, not a single value")
    if numeric:
        if not is_integer_like(value):
            raise ReprotuneError(
                f"{where}: label {str(value).strip()!r} in column '{column}' is not an integer like the column's "
                "other labels; fix or remove the row"
            )
        return str(int(float(value)))
    if isinstance(value, float) and not value.is_integer():
        raise ReprotuneError(
            f"{where}: label {value!r} in column '{column}' is a fraction; classification needs class labels"
        )
    return str(int(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value).strip()


def apply_label_map(label: str, label_map: dict[str, str] | None, where: str) -> str:
    if label_map is None:
        return label
    if label not in label_map:
        raise ReprotuneError(
            f"{where}: label '{label}' is not a key of download.label_map ({', '.join(sorted(label_map))})"
        )
    return label_map[label]


def sort_labels(labels: Iterable[str]) -> list[str]:
    """Sorted, numerically when every label is an integer (so '10' follows '9')."""
    distinct = set(labels)
    if distinct and all(INTEGER.match(label) for label in distinct):
        return sorted(distinct, key=lambda label: float(label))
    return sorted(distinct)


def check_allowed(label: str, allowed: Sequence[str] | None, where: str) -> None:
    if allowed is not None and label not in allowed:
        raise ReprotuneError(f"{where}: label '{label}' is not in download.labels ({', '.join(allowed)})")


def check_seen_in_train(split: str, ids: Sequence[str], labels: Sequence[str], train_labels: set[str]) -> None:
    """A validation/test label the model never saw in training cannot be learned:
    name the split and row so the user can fix the data or the split."""
    for row, (row_id, label) in enumerate(zip(ids, labels), start=1):
        if label not in train_labels:
            raise ReprotuneError(
                f"{split} row {row} (id {row_id}): label '{label}' does not occur in train "
                f"(train labels: {', '.join(sort_labels(train_labels))}); "
                "add training examples of it or drop those rows"
            )


@dataclass
class Collected:
    """Rows per split, the label order the source defines (ClassLabel), and what was dropped."""

    rows: dict[str, list[Example]] = field(default_factory=dict)
    source_order: list[str] | None = None
    dropped: dict[str, Counter] = field(
        default_factory=lambda: {"no_gold_label": Counter(), "skip_labels": Counter(), "empty_text": Counter()}
    )
    files_not_utf8: list[str] = field(default_factory=list)


class RowMaker:
    """Turns one record's text and label values into a Example, applying empty_text,
    skip_labels, label_map and download.labels with the record's location in errors."""

    def __init__(self, params: ClassificationDownloadParams, collected: Collected, split: str) -> None:
        self.params, self.collected, self.split = params, collected, split
        self.names = ["text", "text_pair"][: len(params.text_fields)]

    def make(
        self, row_id: str, texts: list[Any], label: Any, numeric: bool, where: str, label_column: str
    ) -> Example | None:
        params = self.params
        value = label_value(label, numeric, where, label_column)
        if value in params.skip_labels:
            self.collected.dropped["skip_labels"][self.split] += 1
            return None
        name = apply_label_map(value, params.label_map, where)
        check_allowed(name, params.labels, where)
        row: Example = {"id": row_id}
        for key, column, text in zip(self.names, params.text_fields, texts):
            text = "" if text is None else str(text).strip()
            if not text:
                if params.empty_text == "drop":
                    self.collected.dropped["empty_text"][self.split] += 1
                    return None
                raise ReprotuneError(
                    f"{where}: empty text in column '{column}'; fix the row or set download.empty_text: drop"
                )
            row[key] = text
        row["label"] = name
        return row


# Hub --------------------------------------------------------------------------


def hub_column(column: Column, dataset: Dataset, split: str, key: str) -> str:
    if isinstance(column, int):
        raise ReprotuneError(f"download.{key}: Hub datasets name their columns; use a name, not position {column}")
    if column not in dataset.column_names:
        raise ReprotuneError(
            f"{split} split has no column '{column}' (it has {', '.join(dataset.column_names)}); set download.{key}"
        )
    return column


def hub_rows(dataset: Dataset, params: ClassificationDownloadParams, split: str, collected: Collected) -> list[Example]:
    """Rows of one Hub split; ClassLabel ids become names and -1 ("no gold label",
    e.g. SNLI's unresolved pairs, GLUE's hidden test labels) drops the row."""
    text_columns = [hub_column(c, dataset, split, "text_fields") for c in params.text_fields]
    label_column = hub_column(params.label_field, dataset, split, "label_field")
    id_column = hub_column(params.id_field, dataset, split, "id_field") if params.id_field is not None else None
    feature = dataset.features[label_column]
    names = class_label_names(feature)
    wanted = [*text_columns, label_column, *([id_column] if id_column else [])]
    columns = dataset.select_columns(list(dict.fromkeys(wanted))).to_dict()  # one Arrow read
    labels = columns[label_column]
    numeric = names is None and integer_column(labels)
    ids = columns[id_column] if id_column else None
    maker = RowMaker(params, collected, split)
    rows = []
    for index, label in enumerate(labels):
        where = f"Hub {params.dataset} {split} row {index}"
        if names is not None:
            label = class_id_to_name(label, names, where, label_column)
            if label is None:
                collected.dropped["no_gold_label"][split] += 1
                continue
        row_id = str(ids[index]) if ids is not None else f"{split}:{index}"
        row = maker.make(row_id, [columns[c][index] for c in text_columns], label, numeric, where, label_column)
        if row is not None:
            rows.append(row)
    if len(dataset) and not rows and collected.dropped["no_gold_label"][split] == len(dataset):
        raise ReprotuneError(
            f"Hub {params.dataset} split '{split}' has no gold labels (every label is -1, as in GLUE's and SNLI's "
            "hidden test sets); map download.splits.test to a labelled split, e.g. {test: validation}"
        )
    if names is not None:
        remember_class_order(names, params, collected, f"{split} ClassLabel")
    return rows


def remember_class_order(
    names: list[str], params: ClassificationDownloadParams, collected: Collected, where: str
) -> None:
    """The first ClassLabel seen fixes the label order (after skip_labels and label_map)."""
    if collected.source_order is None:
        kept = [name for name in names if name not in params.skip_labels]
        order = [apply_label_map(name, params.label_map, where) for name in kept]
        collected.source_order = list(dict.fromkeys(order))


def collect_hub(params: ClassificationDownloadParams, collected: Collected) -> None:
    raw = one_source_split_each(load_hub(params), params.splits)
    for split, dataset in raw.items():
        collected.rows[split] = hub_rows(dataset, params, split, collected)


# Local tables -------------------------------------------------------------------


def column_key(column: Column, names: list[str] | None, path: Path, key: str, positional: bool) -> str | int:
    """A record key: a position into the values of a CSV/TSV row, or a field name."""
    if isinstance(column, int):
        if not positional:
            raise ReprotuneError(f"download.{key}: position {column} needs a csv/tsv file; name the field of {path}")
        return column
    if names is None or column not in names:
        if names is None:
            raise ReprotuneError(
                f"download.{key}: '{column}' names a column, but {path} has no header; give its position "
                "(0-based) or name the columns with download.columns"
            )
        raise ReprotuneError(f"{path}: no column '{column}' (it has {', '.join(names)}); set download.{key}")
    return names.index(column) if positional else column


def getter(key: str | int, width: int | None, path: Path, name: str) -> Callable[[Any], Any]:
    if isinstance(key, int):
        if width is not None and not -width <= key < width:
            raise ReprotuneError(f"download.{name}: column {key} is out of range; {path} has {width} columns")
        return lambda values: values[key]

    def get(values: dict[str, Any]) -> Any:
        return values.get(key)

    return get


def check_header_is_not_data(path: Path, header: list[str] | None, labels: list[Any], position: int) -> None:
    """`header: true` (the default) on a file without one would silently drop its first row:
    refuse when the header's cell in the label column looks like one of the labels."""
    cell = header[position].strip() if header and -len(header) <= position < len(header) else None
    if cell is None:
        return
    numeric = integer_column(labels)
    if (numeric and is_integer_like(cell)) or (not numeric and cell in {str(v).strip() for v in labels}):
        raise ReprotuneError(
            f"{path}:1: download.header is true, but the first line's label cell {cell!r} looks like a label, "
            "not a column name; set download.header: false if the file has no header"
        )


def table_rows(path: Path, params: ClassificationDownloadParams, split: str, collected: Collected) -> list[Example]:
    fmt = params.source
    positional = fmt in ("csv", "tsv")
    records: list[Row]
    if positional:
        names, records = read_delimited(path, fmt, params.header, params.columns, params.tsv_quoting)
    else:
        names, records = read_objects(path, fmt)
    if not records:
        raise ReprotuneError(f"{path}: no data rows")
    width = len(records[0].values) if positional else None
    get_texts = [
        getter(column_key(c, names, path, "text_fields", positional), width, path, "text_fields")
        for c in params.text_fields
    ]
    get_label = getter(
        column_key(params.label_field, names, path, "label_field", positional), width, path, "label_field"
    )
    get_id = (
        getter(column_key(params.id_field, names, path, "id_field", positional), width, path, "id_field")
        if params.id_field is not None
        else None
    )
    label_column = str(params.label_field)
    if positional and params.header and params.columns is None and isinstance(params.label_field, int):
        check_header_is_not_data(path, names, [get_label(row.values) for row in records], params.label_field)
    class_names = (
        class_label_names(parquet_feature(path, params.label_field))
        if fmt == "parquet" and isinstance(params.label_field, str)
        else None
    )
    numeric = class_names is None and integer_column([get_label(row.values) for row in records])
    maker = RowMaker(params, collected, split)
    rows = []
    for where, line, position, values, _ in records:
        number = line if line is not None and fmt != "json" else position
        label = get_label(values)
        if class_names is not None:
            label = class_id_to_name(label, class_names, where, label_column)
            if label is None:
                collected.dropped["no_gold_label"][split] += 1
                continue
        row_id = str(get_id(values)) if get_id else f"{path.name}:{number}"
        row = maker.make(row_id, [get(values) for get in get_texts], label, numeric, where, label_column)
        if row is not None:
            rows.append(row)
    if class_names is not None:
        remember_class_order(class_names, params, collected, f"{path} ClassLabel")
    return rows


# Folder per class ---------------------------------------------------------------


def read_document(file: Path, invalid_utf8: str, collected: Collected, root: Path) -> str | None:
    """The file's text; not UTF-8: stop (naming file and line), replace bad bytes, or skip the file."""
    lines, not_utf8 = read_lines_or_repair(file, invalid_utf8)
    if not_utf8:
        collected.files_not_utf8.append(file.relative_to(root).as_posix())
    return None if lines is None else "\n".join(line for _, line in lines)


def title_and_body(text: str) -> dict[str, str]:
    """First non-empty line = title, the rest = body (BBC News files); text = both."""
    lines = text.strip().splitlines()
    title = lines[0].strip() if lines else ""
    body = "\n".join(line.rstrip() for line in lines[1:]).strip()
    return {"text": text.strip(), "title": title, "body": body}


def class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise ReprotuneError(f"{root} is not a folder; source 'folders' needs one sub-folder per class")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    if len(folders) < 2:
        raise ReprotuneError(f"{root}: found {len(folders)} class folder(s); source 'folders' needs one per class")
    return folders


def folder_rows(root: Path, params: ClassificationDownloadParams, split: str, collected: Collected) -> list[Example]:
    """One row per file under root/<class>/ matching download.pattern; the folder is the label."""
    for column in params.text_fields:
        if column not in FOLDER_FIELDS:
            raise ReprotuneError(
                f"download.text_fields: '{column}' is not a field of source 'folders'; "
                f"allowed: {', '.join(FOLDER_FIELDS)}"
            )
    maker = RowMaker(params, collected, split)
    rows = []
    for folder in class_folders(root):
        files = visible_files(folder, params.pattern)
        if not files:
            raise ReprotuneError(f"{folder}: no files match download.pattern '{params.pattern}'")
        for file in files:
            text = read_document(file, params.invalid_utf8, collected, root)
            if text is None:
                continue
            fields = title_and_body(text)
            row = maker.make(
                f"{folder.name}/{file.name}",
                [fields[str(c)] for c in params.text_fields],
                folder.name,
                False,
                str(file),
                "folder name",
            )
            if row is not None:
                rows.append(row)
    return rows


# Together -------------------------------------------------------------------------


def collect(params: ClassificationDownloadParams) -> Collected:
    collected = Collected()
    if params.source == "hub":
        collect_hub(params, collected)
    else:
        read = folder_rows if params.source == "folders" else table_rows
        for split, paths in split_paths(params, "any" if params.source == "folders" else "file").items():
            collected.rows[split] = [row for path in paths for row in read(path, params, split, collected)]
    check_unique_ids(collected.rows)
    return collected


def check_unique_ids(rows: dict[str, list[Example]]) -> None:
    """Full and LoRA predictions are compared by id, so ids must not repeat within a split."""
    for split, split_rows in rows.items():
        repeat = first_repeat(row["id"] for row in split_rows)
        if repeat is not None:
            number, row_id = repeat
            raise ReprotuneError(
                f"{split} row {number}: id '{row_id}' occurs twice in {split}; ids must be unique: give the "
                "files distinct names or set download.id_field to a unique column"
            )


def label_order(params: ClassificationDownloadParams, collected: Collected) -> tuple[list[str], str]:
    """download.labels, else the source's ClassLabel order, else every label seen, sorted."""
    if params.labels:
        return list(params.labels), "download.labels"
    seen = {row["label"] for rows in collected.rows.values() for row in rows}
    if collected.source_order is not None:
        return collected.source_order + sort_labels(seen - set(collected.source_order)), "source ClassLabel"
    return sort_labels(seen), "sorted"


def to_dataset(params: ClassificationDownloadParams, collected: Collected) -> tuple[DatasetDict, dict[str, Any]]:
    """Arrow splits with a ClassLabel `label` column, so the order travels with the data."""
    names, order_from = label_order(params, collected)
    if len(names) < 2:
        column = (
            "the class folders"
            if params.source == "folders"
            else f"column '{params.label_field}' (download.label_field)"
        )
        raise ReprotuneError(
            f"found only the label(s) {names} in {column}; classification needs at least two "
            "classes (after download.skip_labels and download.label_map)"
        )
    text_columns = ["text", "text_pair"][: len(params.text_fields)]
    features = Features(
        {"id": Value("string"), **{c: Value("string") for c in text_columns}, "label": ClassLabel(names=names)}
    )
    index = {name: i for i, name in enumerate(names)}
    out = {}
    for split, rows in collected.rows.items():
        columns: dict[str, list] = {key: [r[key] for r in rows] for key in ("id", *text_columns)}
        columns["label"] = [index[r["label"]] for r in rows]
        out[split] = Dataset.from_dict(columns, features=features)
    report = {
        "source": params.source,
        "text_fields": [str(c) for c in params.text_fields],
        "labels": names,
        "label_order": order_from,
        "dropped": {kind: dict(sorted(counts.items())) for kind, counts in collected.dropped.items()},
        "files_not_utf8": {"action": params.invalid_utf8, "files": collected.files_not_utf8},
    }
    return DatasetDict(out), report
