"""tokenize: question + context into overlapping windows with start/end token labels.

Long contexts are never cut off: truncation touches only the context, and with
`return_overflowing_tokens` every part of it lands in some window, consecutive
windows sharing `doc_stride` tokens. A window that does not hold the whole answer
(and every window of an unanswerable question) points at the CLS token. Evaluation
features keep `offset_mapping` (None outside the context) and `example_id`, so
spans can be mapped back to the original context text."""

from __future__ import annotations

import unicodedata
from typing import Any

from datasets import Dataset, DatasetDict

from reprotune.core.errors import ReprotuneError
from reprotune.tasks.qa.params import QaMeta, QaTaskParams, WindowSettings

# Above this, tokenizers store "no limit" (1e30) as model_max_length.
_NO_LIMIT = 10**6
SPLITS = ("train", "validation", "test")


def check_settings(tokenizer: Any, settings: WindowSettings) -> None:
    """Refuse windows the model cannot take, or that leave the stride no room."""
    limit = tokenizer.model_max_length
    if limit < _NO_LIMIT and settings.max_length > limit:
        raise ReprotuneError(
            f"tokenize.max_length {settings.max_length} exceeds the model's maximum length {limit}; use at most {limit}"
        )
    room = settings.max_length - settings.max_question_length - tokenizer.num_special_tokens_to_add(pair=True)
    if settings.doc_stride >= room:
        raise ReprotuneError(
            f"tokenize.doc_stride {settings.doc_stride} must be below the context room of a window "
            f"({room} = max_length - max_question_length - special tokens); lower doc_stride or max_question_length"
        )


def cut_questions(questions: list[str], tokenizer: Any, max_tokens: int) -> tuple[list[str], list[bool]]:
    """Strip leading white space and cut questions longer than `max_tokens` tokens at a token boundary."""
    stripped = [q.lstrip() for q in questions]
    encoded = tokenizer(stripped, add_special_tokens=False, return_offsets_mapping=True)
    out, cut = [], []
    for question, offsets in zip(stripped, encoded["offset_mapping"]):
        if len(offsets) > max_tokens:
            out.append(question[: offsets[max_tokens - 1][1]])
            cut.append(True)
        else:
            out.append(question)
            cut.append(False)
    return out, cut


def answer_chars(context: str, text: str, start: int) -> tuple[int, int]:
    """Character span of an answer with white space at either end trimmed off, and
    combining marks at its end: uncased tokenizers strip accents, so the last token of
    a decomposed (NFD) "café" ends before its U+0301 and the full span would fit no window.
    Post-processing puts the marks back (`family.past_marks`)."""
    end = start + len(text)
    while start < end and context[start].isspace():
        start += 1
    while end > start and (context[end - 1].isspace() or unicodedata.combining(context[end - 1])):
        end -= 1
    return start, end


def token_span(offsets: list[tuple[int, int] | None], start_char: int, end_char: int) -> tuple[int, int] | None:
    """Token positions of the answer if this window holds all of it, else None.

    `offsets` is None for every token outside the context (question, special tokens)."""
    context = [(i, span) for i, span in enumerate(offsets) if span is not None]
    if not context:
        return None
    if context[0][1][0] > start_char or context[-1][1][1] < end_char:
        return None
    start = next((i for i, span in context if span[1] > start_char), None)
    end = next((i for i, span in reversed(context) if span[0] < end_char), None)
    if start is None or end is None or end < start:
        return None
    return start, end


def tokenize_batch(
    batch: dict[str, list], tokenizer: Any, settings: WindowSettings, keep_offsets: bool
) -> dict[str, list]:
    """Batched `map` function: one output row per window of each example."""
    pad_on_right = tokenizer.padding_side == "right"
    questions, cut = cut_questions(batch["question"], tokenizer, settings.max_question_length)
    first, second = (questions, batch["context"]) if pad_on_right else (batch["context"], questions)
    encoded = tokenizer(
        first,
        second,
        truncation="only_second" if pad_on_right else "only_first",
        max_length=settings.max_length,
        stride=settings.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )
    context_index = 1 if pad_on_right else 0
    sample_map = encoded.pop("overflow_to_sample_mapping")
    all_offsets = encoded.pop("offset_mapping")
    out: dict[str, list] = {
        key: []
        for key in (
            "start_positions",
            "end_positions",
            "cls_index",
            "example_id",
            "window",
            "question_cut",
            "answer_in_window",
        )
    }
    if keep_offsets:
        out["offset_mapping"] = []
    previous, window = -1, 0
    for feature, example in enumerate(sample_map):
        window = window + 1 if example == previous else 0
        previous = example
        ids = encoded["input_ids"][feature]
        cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        sequence_ids = encoded.sequence_ids(feature)
        offsets = [
            tuple(span) if sequence_ids[i] == context_index else None for i, span in enumerate(all_offsets[feature])
        ]
        answers = batch["answers"][example]
        span = None
        if answers["text"]:
            start_char, end_char = answer_chars(
                batch["context"][example], answers["text"][0], answers["answer_start"][0]
            )
            span = token_span(offsets, start_char, end_char)
        out["start_positions"].append(span[0] if span else cls)
        out["end_positions"].append(span[1] if span else cls)
        out["cls_index"].append(cls)
        out["answer_in_window"].append(span is not None)
        out["example_id"].append(batch["id"][example])
        out["window"].append(window)
        out["question_cut"].append(cut[example])
        if keep_offsets:
            out["offset_mapping"].append([list(span_) if span_ is not None else None for span_ in offsets])
    return {**encoded, **out}


def window_report(features: Any, raw: Any) -> dict[str, Any]:
    """What windowing did to one split: windows per example, where answers fell, what was cut."""
    windows: dict[str, int] = {}
    first_hit: dict[str, int] = {}
    cut: set[str] = set()
    for example_id, window, hit, question_cut in zip(
        features["example_id"], features["window"], features["answer_in_window"], features["question_cut"]
    ):
        windows[example_id] = windows.get(example_id, 0) + 1
        if hit and example_id not in first_hit:
            first_hit[example_id] = window
        if question_cut:
            cut.add(example_id)
    answerable = [rid for rid, answers in zip(raw["id"], raw["answers"]) if answers["text"]]
    return {
        "examples": len(raw),
        "windows": len(features),
        "max_windows_per_example": max(windows.values(), default=0),
        "examples_with_several_windows": sum(1 for count in windows.values() if count > 1),
        "answer_only_in_later_window": sum(1 for rid in answerable if first_hit.get(rid, 0) > 0),
        "answer_in_no_single_window": sum(1 for rid in answerable if rid not in first_hit),
        "unanswerable": len(raw) - len(answerable),
        "questions_cut": len(cut),
    }


def prepare_meta(raw: DatasetDict, download_report: dict[str, Any], params: QaTaskParams) -> QaMeta:
    """The null-answer flag (from the download report) and the window settings, which
    evaluate and predict need but may not read from the tokenize section."""
    return QaMeta(
        version_2_with_negative=bool(download_report["version_2_with_negative"]),
        window=WindowSettings(
            max_length=params.tokenize.max_length,
            doc_stride=params.tokenize.doc_stride,
            max_question_length=params.tokenize.max_question_length,
        ),
    )


def tokenize(
    raw: DatasetDict, tokenizer: Any, params: QaTaskParams, meta: QaMeta
) -> tuple[DatasetDict, dict[str, Any]]:
    """Windows for every split; validation and test keep offsets and example ids for post-processing."""
    settings = meta.window
    check_settings(tokenizer, settings)
    features: dict[str, Dataset] = {}
    report: dict[str, Any] = {
        "max_length": settings.max_length,
        "doc_stride": settings.doc_stride,
        "max_question_length": settings.max_question_length,
    }
    for split in SPLITS:
        features[split] = raw[split].map(
            tokenize_batch,
            batched=True,
            batch_size=params.tokenize.batch_size,
            num_proc=params.tokenize.num_proc,
            fn_kwargs={"tokenizer": tokenizer, "settings": settings, "keep_offsets": split != "train"},
            remove_columns=raw[split].column_names,
            desc=f"windows for {split}",
        )
        report[split] = window_report(features[split], raw[split])
    return DatasetDict(features), report
