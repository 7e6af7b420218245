"""Tiny SQuAD-format QA task for the end-to-end test: six made-up articles, 36 questions
(48 with the SQuAD 2.0 variant's unanswerable ones).

Each article has a short paragraph and a long one whose answers sit past the first
window at the tiny max_length, so the stride path runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

TINY_TRAIN = {"max_steps": 4, "batch_size": 8, "eval_batch_size": 16, "logging_steps": 1}

TOWNS = [
    ("Arlen", "Mara Vell", "1852", "the river Oska", "timber", "a flood"),
    ("Brisk", "Tomas Hald", "1790", "the Grey Hills", "wool", "a fire"),
    ("Corvin", "Ilse Dorn", "1911", "Lake Pell", "glass", "a railway"),
    ("Dunmoor", "Petra Lund", "1688", "the north coast", "salt", "a storm"),
    ("Elsby", "Owen Marsh", "1834", "the Tarn valley", "copper", "a mine"),
    ("Fallow", "Nina Roe", "1765", "the old forest", "paper", "a bridge"),
]

FILLER = (
    "The streets are narrow and the houses are built of local stone. Visitors often remark on the quiet "
    "squares, the small gardens and the bells that ring at noon. Markets are held every week and the "
    "town council meets in a hall beside the church. "
)


def article(town: str, founder: str, year: str, place: str, trade: str, event: str) -> dict:
    short = f"{town} was founded in {year} by {founder}. The town lies beside {place}."
    long = (
        f"{FILLER * 2}The main trade of {town} is {trade}, which is sold across the region. "
        f"The town grew quickly because of {event} that brought new families."
    )

    def qa(qid: str, question: str, context: str, answer: str) -> dict:
        return {"id": qid, "question": question, "answers": [{"text": answer, "answer_start": context.index(answer)}]}

    return {
        "title": town,
        "paragraphs": [
            {
                "context": short,
                "qas": [
                    qa(f"{town}-when", f"When was {town} founded?", short, year),
                    qa(f"{town}-who", f"Who founded {town}?", short, founder),
                    qa(f"{town}-where", f"Where does {town} lie?", short, place),
                ],
            },
            {
                "context": long,
                "qas": [
                    qa(f"{town}-what", f"What is the main trade of {town}?", long, trade),
                    qa(f"{town}-why", f"Why did {town} grow quickly?", long, f"because of {event}"),
                    qa(f"{town}-how", "How often are markets held?", long, "every week"),
                ],
            },
        ],
    }


def with_unanswerable(article: dict) -> dict:
    """SQuAD 2.0 style: each paragraph also asks one question its text cannot answer."""
    town = article["title"]
    for number, paragraph in enumerate(article["paragraphs"]):
        question = f"Who is the mayor of {town}?" if number == 0 else f"What is the population of {town}?"
        paragraph["qas"].append(
            {"id": f"{town}-none-{number}", "question": question, "answers": [], "is_impossible": True}
        )
    return article


def write_squad(path: Path, unanswerable: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    articles = [article(*town) for town in TOWNS]
    data = {
        "version": "2.0" if unanswerable else "1.1",
        "data": [with_unanswerable(a) if unanswerable else a for a in articles],
    }
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def tiny_task(data_dir: Path, model_dir: Path, unanswerable: bool = False) -> dict:
    """The task section; `unanswerable`: SQuAD 2.0 style, 12 of 48 questions without an answer."""
    path = write_squad(data_dir / "tiny-squad.json", unanswerable)
    return {
        "type": "qa",
        "model": {"name_or_path": str(model_dir)},
        "download": {
            "source": "json",
            "path": str(path),
            "version_2_with_negative": unanswerable,
            "split_by": "title",
            "make_splits": {"validation": 0.2, "test": 0.2, "seed": 1},
        },
        "tokenize": {"max_length": 64, "doc_stride": 16, "max_question_length": 16},
        "train_full": {**TINY_TRAIN, "learning_rate": 1e-3},
        "train_lora": {**TINY_TRAIN, "learning_rate": 1e-2, "r": 4, "alpha": 8},
        "evaluate": {"batch_size": 16, "max_answer_length": 12},
        "error_analysis": {"worst_n": 3},
    }
