"""Label values: normalise raw values to label names, catch bad ones with their
row, and fix one label order that training, evaluation and reports share."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from reprotune.core.errors import ReprotuneError

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
