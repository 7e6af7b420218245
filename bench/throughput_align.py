"""Tokenize-and-align throughput: the project's batched `map` functions (NER tag
alignment, QA windows, MLM chunking) against a straightforward per-example Python
implementation of the same rules, timed on the same records. The naive outputs must
equal the batched ones column for column, so a speed-up never hides a behaviour change.

Every path is timed until its output is an Arrow table ready for `save_to_disk`, as
the tokenize stage writes it: `map` returns one; the naive and direct paths build
Python lists and convert them. Reading outputs back for the equality check is not timed.

The naive versions are written from the rules in the module docstrings, not by calling
the project's helpers, so the equality check compares two implementations."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from reprotune.tasks.mlm import preprocess as mlm_preprocess
from reprotune.tasks.mlm.sources import text_documents
from reprotune.tasks.ner.preprocess import tokenize_batch as ner_tokenize_batch
from reprotune.tasks.ner.sources import label_list, read_conll
from reprotune.tasks.qa.params import WindowSettings
from reprotune.tasks.qa.preprocess import tokenize_batch as qa_tokenize_batch
from reprotune.tasks.qa.sources import read_squad_json

IGNORE = -100
WIKIANN = "wikiann-en"
SQUAD = "squad-v1.1/train-v1.1-subset.json"
NER_MAX_LENGTH = 128  # TokenizeParams default
QA_WINDOWS = WindowSettings(max_length=384, doc_stride=128, max_question_length=64)  # QaTokenizeParams defaults
MLM_CHUNK = 128  # MlmTokenizeParams default
MAP_BATCH = 1000  # TokenizeParams.batch_size default


# data -------------------------------------------------------------------------
def wikiann(data_dir: Path, split: str, limit: int | None) -> list[dict]:
    """WikiANN-en sentences as {id, tokens, tags}, the 'en:' prefix stripped."""
    rows = read_conll(data_dir / WIKIANN / split, 0, -1, "\t", "en:")
    return [{"id": r["id"], "tokens": r["tokens"], "tags": r["tags"]} for r in rows[:limit]]


def squad(data_dir: Path, limit: int | None) -> list[dict]:
    records = read_squad_json(data_dir / SQUAD)[:limit]
    return [{k: r[k] for k in ("id", "question", "context", "answers")} for r in records]


def mlm_documents(text_dir: Path | None, data_dir: Path, limit: int | None) -> tuple[list[dict], str]:
    """BBC News articles (one per file) when the folder exists, else WikiANN sentences."""
    if text_dir is not None and text_dir.is_dir():
        return text_documents(text_dir, "file", "**/*.txt", "replace")[:limit], f"bbcnews ({text_dir})"
    rows = wikiann(data_dir, "train", limit)
    return [{"id": r["id"], "text": " ".join(r["tokens"])} for r in rows], "wikiann-en train sentences"


# naive per-example implementations ---------------------------------------------
def ner_naive(records: list[dict], tokenizer: Any, labels: list[str], max_length: int) -> dict[str, list]:
    """One tokenizer call per sentence; the first sub-token of a word gets its tag."""
    label_id = {label: i for i, label in enumerate(labels)}
    out: dict[str, list] = {
        k: []
        for k in ("input_ids", "token_type_ids", "attention_mask", "labels", "word_ids", "words_dropped", "words_cut")
    }
    for record in records:
        encoded = tokenizer(record["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
        word_ids = encoded.word_ids()
        row_labels, previous = [], None
        for word in word_ids:
            row_labels.append(IGNORE if word is None or word == previous else label_id[record["tags"][word]])
            previous = word
        present = {w for w in word_ids if w is not None}
        last = max(present) if present else -1
        truncated = len(encoded["input_ids"]) >= max_length
        cut = dropped = 0
        for word in range(len(record["tokens"])):
            if word not in present:
                if truncated and word > last:
                    cut += 1
                else:
                    dropped += 1
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            if key in encoded:
                out[key].append(encoded[key])
        out["labels"].append(row_labels)
        out["word_ids"].append([-1 if w is None else w for w in word_ids])
        out["words_dropped"].append(dropped)
        out["words_cut"].append(cut)
    return {k: v for k, v in out.items() if v or not records}


def qa_naive(records: list[dict], tokenizer: Any, settings: WindowSettings) -> dict[str, list]:
    """One tokenizer call per question (right-padding tokenizers): cut long questions,
    window the context, and walk each window's context tokens to find the answer."""
    if tokenizer.padding_side != "right":
        raise ValueError("the naive QA implementation handles right-padding tokenizers only")
    keys = (
        "input_ids",
        "token_type_ids",
        "attention_mask",
        "start_positions",
        "end_positions",
        "cls_index",
        "example_id",
        "window",
        "question_cut",
        "answer_in_window",
        "offset_mapping",
    )
    out: dict[str, list] = {k: [] for k in keys}
    for record in records:
        question = record["question"].lstrip()
        alone = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
        was_cut = len(alone["input_ids"]) > settings.max_question_length
        if was_cut:
            question = question[: alone["offset_mapping"][settings.max_question_length - 1][1]]
        encoded = tokenizer(
            question,
            record["context"],
            truncation="only_second",
            max_length=settings.max_length,
            stride=settings.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        answer = None
        if record["answers"]["text"]:
            start = record["answers"]["answer_start"][0]
            end = start + len(record["answers"]["text"][0])
            context = record["context"]
            while start < end and context[start].isspace():
                start += 1
            while end > start and context[end - 1].isspace():
                end -= 1
            answer = (start, end)
        for window in range(len(encoded["input_ids"])):
            ids = encoded["input_ids"][window]
            sequence = encoded.sequence_ids(window)
            offsets = [tuple(o) if sequence[i] == 1 else None for i, o in enumerate(encoded["offset_mapping"][window])]
            cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
            first = sequence.index(1) if 1 in sequence else None
            last = len(sequence) - 1 - sequence[::-1].index(1) if 1 in sequence else None
            span = None
            if answer and first is not None and offsets[first][0] <= answer[0] and offsets[last][1] >= answer[1]:
                i = first
                while i <= last and offsets[i][1] <= answer[0]:
                    i += 1
                j = last
                while j >= first and offsets[j][0] >= answer[1]:
                    j -= 1
                if first <= i <= last and first <= j <= last and i <= j:
                    span = (i, j)
            for key in ("input_ids", "token_type_ids", "attention_mask"):
                if key in encoded:
                    out[key].append(encoded[key][window])
            out["start_positions"].append(span[0] if span else cls)
            out["end_positions"].append(span[1] if span else cls)
            out["cls_index"].append(cls)
            out["example_id"].append(record["id"])
            out["window"].append(window)
            out["question_cut"].append(was_cut)
            out["answer_in_window"].append(span is not None)
            out["offset_mapping"].append([list(o) if o is not None else None for o in offsets])
    return {k: v for k, v in out.items() if v or not records}


def mlm_naive(documents: list[dict], tokenizer: Any, chunk_size: int) -> dict[str, list]:
    """One tokenizer call per document, concatenated into Python lists and sliced into blocks."""
    ids: list[int] = []
    words: list[int] = []
    offset = 0
    for document in documents:
        encoded = tokenizer(document["text"], add_special_tokens=True, truncation=False, verbose=False)
        local = [-1 if w is None else w for w in encoded.word_ids()]
        ids.extend(encoded["input_ids"])
        words.extend(w + offset if w >= 0 else -1 for w in local)
        offset += max(local, default=-1) + 1
    blocks_ids, blocks_words = [], []
    for start in range(0, len(ids), chunk_size):
        block = words[start : start + chunk_size]
        present = [w for w in block if w >= 0]
        low = min(present) if present else 0
        blocks_ids.append(ids[start : start + chunk_size])
        blocks_words.append([w - low if w >= 0 else -1 for w in block])
    return {"input_ids": blocks_ids, "word_ids": blocks_words}


# the project's batched paths ----------------------------------------------------
def ner_fast(
    dataset: Dataset, tokenizer: Any, labels: list[str], max_length: int, num_proc: int | None = None
) -> Dataset:
    """NerFamily.tokenize's map call."""
    features = dataset.map(
        ner_tokenize_batch,
        batched=True,
        batch_size=MAP_BATCH,
        remove_columns=["tokens", "tags"],
        num_proc=num_proc,
        fn_kwargs={"tokenizer": tokenizer, "labels": labels, "max_length": max_length, "label_all_tokens": False},
    )
    return features.remove_columns([c for c in ("id",) if c in features.column_names])


def qa_fast(dataset: Dataset, tokenizer: Any, settings: WindowSettings, num_proc: int | None = None) -> Dataset:
    """QaFamily.tokenize's map call, with offsets kept (as for validation and test)."""
    return dataset.map(
        qa_tokenize_batch,
        batched=True,
        batch_size=MAP_BATCH,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        fn_kwargs={"tokenizer": tokenizer, "settings": settings, "keep_offsets": True},
    )


def mlm_fast(dataset: Dataset, tokenizer: Any, chunk_size: int, num_proc: int | None = None) -> Dataset:
    """reprotune.tasks.mlm.preprocess.tokenize's steps for one split: map, concatenate, cut into blocks."""
    tokenized = dataset.map(
        mlm_preprocess.tokenize_documents,
        batched=True,
        batch_size=MAP_BATCH,
        num_proc=num_proc,
        fn_kwargs={"tokenizer": tokenizer},
        remove_columns=dataset.column_names,
    )
    stream = mlm_preprocess.concatenate(tokenized)
    bounds = mlm_preprocess.chunk_bounds(len(stream.input_ids), chunk_size, "keep")
    ids, words = mlm_preprocess.blocks(stream, bounds, np.arange(len(bounds)))
    return Dataset.from_dict({"input_ids": ids, "word_ids": words})


def as_arrow(lists: dict[str, list]) -> Dataset:
    """The naive and direct paths' lists as the Arrow table the tokenize stage saves."""
    return Dataset.from_dict(lists)


def direct(
    function: Callable[..., dict], records: list[dict], fields: tuple[str, ...], **kwargs: Any
) -> dict[str, list]:
    """The project's batched function on plain Python batches of MAP_BATCH, without datasets.map:
    separates the function's own speed from map's Arrow round trip."""
    out: dict[str, list] = {}
    for start in range(0, len(records), MAP_BATCH):
        chunk = records[start : start + MAP_BATCH]
        encoded = function({field: [r[field] for r in chunk] for field in fields}, **kwargs)
        for key, values in encoded.items():
            out.setdefault(key, []).extend(values)
    return out


# comparison and timing -----------------------------------------------------------
def first_difference(fast: dict[str, list], naive: dict[str, list]) -> str | None:
    """None when both hold the same columns and values; else where they first differ."""
    if sorted(fast) != sorted(naive):
        return f"columns differ: batched {sorted(fast)} vs naive {sorted(naive)}"
    for column in sorted(fast):
        a, b = list(fast[column]), list(naive[column])
        if len(a) != len(b):
            return f"{column}: {len(a)} rows batched vs {len(b)} naive"
        for row, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return f"{column} row {row}: batched {str(x)[:120]} vs naive {str(y)[:120]}"
    return None


@dataclass
class AlignResult:
    task: str
    source: str
    examples: int
    outputs: int
    seconds: dict[str, float]
    """Path name (naive, direct, map, map_num_proc_N) -> seconds until an Arrow table."""
    difference: str | None

    def as_dict(self) -> dict[str, Any]:
        rates = {path: round(self.examples / seconds, 1) for path, seconds in self.seconds.items() if seconds}
        naive = rates.get("naive")
        row: dict[str, Any] = {
            "task": self.task,
            "source": self.source,
            "examples": self.examples,
            "output_rows": self.outputs,
        }
        for path, seconds in self.seconds.items():
            row[f"{path}_seconds"] = round(seconds, 4)
            row[f"{path}_examples_per_s"] = rates.get(path)
            if path != "naive" and naive and rates.get(path):
                row[f"{path}_speedup"] = round(rates[path] / naive, 2)
        row["speedup"] = row.get("map_speedup")
        row.update({"identical": self.difference is None, "first_difference": self.difference})
        return row


def timed(run: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def measure(
    task: str,
    source: str,
    records: list[dict],
    fast: Callable[[Dataset, int | None], Dataset],
    naive: Callable[[list[dict]], dict[str, list]],
    plain: Callable[[list[dict]], dict[str, list]] | None = None,
    num_proc: int | None = None,
) -> AlignResult:
    """Time the paths on the same records (the Dataset is built outside the clock, as the
    pipeline's raw splits already are), each until its output is Arrow; every output must
    equal the naive one. The first output column counts the output rows."""
    dataset = Dataset.from_list(records)
    naive(records[:8])  # warm the tokenizer before any clock starts
    seconds: dict[str, float] = {}
    naive_out, seconds["naive"] = timed(lambda: as_arrow(naive(records)))
    naive_out = naive_out[:]
    differences: list[str] = []
    if plain is not None:
        plain_out, seconds["direct"] = timed(lambda: as_arrow(plain(records)))
        plain_out = {k: v for k, v in plain_out[:].items() if k in naive_out}
        if (found := first_difference(plain_out, naive_out)) is not None:
            differences.append(f"direct: {found}")
    fast_out, seconds["map"] = timed(lambda: fast(dataset, None))
    fast_out = fast_out[:]
    if (found := first_difference(fast_out, naive_out)) is not None:
        differences.append(f"map: {found}")
    if num_proc and num_proc > 1:
        parallel_out, seconds[f"map_num_proc_{num_proc}"] = timed(lambda: fast(dataset, num_proc))
        if (found := first_difference(parallel_out[:], naive_out)) is not None:
            differences.append(f"map num_proc={num_proc}: {found}")
    outputs = len(next(iter(fast_out.values()))) if fast_out else 0
    return AlignResult(task, source, len(records), outputs, seconds, "; ".join(differences) or None)


def run_all(
    data_dir: Path, mlm_text: Path | None, tokenizer: Any, limits: dict[str, int | None], num_proc: int | None = None
) -> list[dict]:
    """NER, QA and MLM rows for the results file; a task whose data is missing is skipped."""
    rows: list[dict] = []
    if (data_dir / WIKIANN / "train").exists():
        records = wikiann(data_dir, "train", limits["ner"])
        labels = label_list({tag for r in records for tag in r["tags"]})
        rows.append(
            measure(
                "ner",
                f"{WIKIANN}/train",
                records,
                lambda d, n: ner_fast(d, tokenizer, labels, NER_MAX_LENGTH, n),
                lambda r: ner_naive(r, tokenizer, labels, NER_MAX_LENGTH),
                lambda r: direct(
                    ner_tokenize_batch,
                    r,
                    ("tokens", "tags"),
                    tokenizer=tokenizer,
                    labels=labels,
                    max_length=NER_MAX_LENGTH,
                    label_all_tokens=False,
                ),
                num_proc,
            ).as_dict()
        )
    else:
        rows.append({"task": "ner", "skipped": f"{data_dir / WIKIANN / 'train'} not found"})
    if (data_dir / SQUAD).exists():
        records = squad(data_dir, limits["qa"])
        rows.append(
            measure(
                "qa",
                SQUAD,
                records,
                lambda d, n: qa_fast(d, tokenizer, QA_WINDOWS, n),
                lambda r: qa_naive(r, tokenizer, QA_WINDOWS),
                lambda r: direct(
                    qa_tokenize_batch,
                    r,
                    ("id", "question", "context", "answers"),
                    tokenizer=tokenizer,
                    settings=QA_WINDOWS,
                    keep_offsets=True,
                ),
                num_proc,
            ).as_dict()
        )
    else:
        rows.append({"task": "qa", "skipped": f"{data_dir / SQUAD} not found"})
    if (mlm_text is not None and mlm_text.is_dir()) or (data_dir / WIKIANN / "train").exists():
        documents, source = mlm_documents(mlm_text, data_dir, limits["mlm"])
        rows.append(
            measure(
                "mlm",
                source,
                documents,
                lambda d, n: mlm_fast(d, tokenizer, MLM_CHUNK, n),
                lambda r: mlm_naive(r, tokenizer, MLM_CHUNK),
                num_proc=num_proc,
            ).as_dict()
        )
    else:
        rows.append({"task": "mlm", "skipped": "neither the MLM text folder nor wikiann-en found"})
    return rows
