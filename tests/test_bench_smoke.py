"""Throughput harness (bench/throughput.py): the smoke run and the JSON it writes, the
quality check at tiny size, and that the project's batched tokenize-and-align output
equals the per-example implementation on real data, edge cases included."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

_TQDM_WAS_SET = "TQDM_DISABLE" in os.environ
import throughput  # noqa: E402

if not _TQDM_WAS_SET:  # the harness silences progress bars for its own runs, not for the other tests
    os.environ.pop("TQDM_DISABLE", None)
import throughput_align as align  # noqa: E402
import throughput_device as device  # noqa: E402
import throughput_train as train  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (SHARED / align.WIKIANN / "train").exists(), reason="../shared/data is missing")


@pytest.fixture(scope="module")
def tokenizer():
    return throughput.load_tokenizer_ref(throughput.DEFAULT_ENCODER)


# the smoke run ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "throughput.json"
    assert throughput.main(["--smoke", "--num-proc", "2", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_smoke_writes_the_device_block(smoke_result: dict) -> None:
    info = smoke_result["device"]
    assert smoke_result["smoke"] is True and smoke_result["kind"] == "throughput"
    assert info["cuda"] == torch.cuda.is_available()
    if not info["cuda"]:
        assert info["label"] == "cpu" and info["peak_tflops"] is None


@needs_data
def test_smoke_tokenize_rows_are_identical_and_timed(smoke_result: dict) -> None:
    rows = {row["task"]: row for row in smoke_result["tokenize"]}
    assert set(rows) == {"ner", "qa", "mlm"}
    for row in rows.values():
        assert row["identical"] is True, row
        assert row["examples"] > 0 and row["output_rows"] > 0
        assert row["map_examples_per_s"] > 0 and row["naive_examples_per_s"] > 0
        assert row["speedup"] == pytest.approx(row["naive_seconds"] / row["map_seconds"], abs=0.011)
        assert row["map_num_proc_2_examples_per_s"] > 0  # and its output is in `identical`
    assert rows["ner"]["examples"] == throughput.SIZES["smoke"]["ner"]
    assert rows["qa"]["output_rows"] >= rows["qa"]["examples"]  # one row per window


def test_smoke_train_rows_cover_models_methods_and_styles(smoke_result: dict) -> None:
    rows = smoke_result["train"]
    keys = {(r["model"], r["method"], r["style"]) for r in rows}
    assert keys == {
        (m.name, method, style) for m in train.SMOKE_MODELS for method in ("full", "lora") for style in ("seed", "fast")
    }
    for row in rows:
        assert row["samples_per_s"] > 0 and row["tokens_per_s"] > 0 and row["step_time_ms"] > 0
        assert row["peak_memory_mb"] > 0
        assert 0 <= row["padding_fraction"] < 1
        assert row["steps_measured"] == throughput.SIZES["smoke"]["steps"]
        if not torch.cuda.is_available():
            assert row["mfu"] == "n/a"
            assert row["precision"] == ("bf16" if row["precision_param"] == "bf16" else "fp32")
        if row["style"] == "seed":
            assert row["speedup"] == 1.0 and row["batch_size"] == 16
            assert row["sampling"] == "random" and row["optimizer"] == "adamw_torch"
        else:
            assert row["sampling"] == "group_by_length" and row["optimizer"] == "adamw_torch_fused"
        if row["method"] == "full":
            assert row["trainable_matmul_params"] == row["matmul_params"]
            assert row["flops_per_token"] == 6 * row["matmul_params"]
        else:
            assert row["trainable_matmul_params"] < row["matmul_params"] / 2
    if not torch.cuda.is_available():  # the train stage in fp32 and, on a CPU with native bf16, in bf16
        fast = {(r["model"], r["method"], r["precision_param"]) for r in rows if r["style"] == "fast"}
        precisions = ["fp32", "bf16"] if smoke_result["device"]["cpu_bf16"] else ["fp32"]
        assert fast == {
            (m.name, method, p) for m in train.SMOKE_MODELS for method in ("full", "lora") for p in precisions
        }
        for row in rows:
            if row["style"] == "fast":
                fp32 = next(
                    r
                    for r in rows
                    if r["style"] == "fast"
                    and r["precision_param"] == "fp32"
                    and (r["model"], r["method"], r["batch_size"]) == (row["model"], row["method"], row["batch_size"])
                )
                assert row["vs_fast_fp32"] == pytest.approx(row["samples_per_s"] / fp32["samples_per_s"], abs=0.011)
    # samples/s over tokens/s is the mean sentence length the rows saw (non-pad)
    lengths = [r["tokens_per_s"] / r["samples_per_s"] for r in rows]
    assert all(5 < n < 128 for n in lengths)


def test_smoke_lora_memory_and_inference(smoke_result: dict) -> None:
    ratios = smoke_result["lora_memory"]
    fast_precisions = 2 if not torch.cuda.is_available() and smoke_result["device"]["cpu_bf16"] else 1
    assert len(ratios) == (1 + fast_precisions) * len(train.SMOKE_MODELS)  # seed + each fast precision
    for row in ratios:
        assert row["ratio"] == pytest.approx(row["lora_mb"] / row["full_mb"], abs=1e-3)
    paths = {(r["model"], r["path"].split(":")[0]) for r in smoke_result["inference"]}
    assert {(m.name, p) for m in train.SMOKE_MODELS for p in ("seed", "pipeline")} <= paths
    for row in smoke_result["inference"]:
        assert row["examples"] == throughput.SIZES["smoke"]["infer"] and row["examples_per_s"] > 0
    if not torch.cuda.is_available():  # the evaluate stage in fp32 and, where the CPU has it, in bf16
        precisions = {
            (r["model"], r["precision"]) for r in smoke_result["inference"] if r["path"].startswith("pipeline")
        }
        expected = ["fp32", "bf16"] if smoke_result["device"]["cpu_bf16"] else ["fp32"]
        assert precisions == {(m.name, p) for m in train.SMOKE_MODELS for p in expected}


def test_smoke_mlm_rows_compare_the_dense_and_the_masked_only_head(smoke_result: dict) -> None:
    rows = smoke_result["mlm"]
    assert {(r["model"], r["style"]) for r in rows} == {
        (m.name, s) for m in train.SMOKE_MODELS for s in ("seed", "fast dense head", "fast")
    }
    for row in rows:
        assert row["samples_per_s"] > 0 and row["final_loss"] > 0
        assert row["head"] == ("masked positions" if row["style"] == "fast" else "every position")
        if row["style"] == "seed":
            assert row["speedup"] == 1.0


def test_quality_smoke_reports_both_f1s(tmp_path: Path) -> None:
    if not (SHARED / align.WIKIANN / "train").exists():
        pytest.skip("../shared/data is missing")
    out = tmp_path / "quality.json"
    assert throughput.main(["--smoke", "--quality", "--out", str(out)]) == 0
    quality = json.loads(out.read_text())["quality"]
    assert quality["sizes"] == throughput.SIZES["smoke"]["quality"]
    for style in ("seed", "fast"):
        assert 0.0 <= quality[style]["f1"] <= 1.0 and quality[style]["steps"] > 0
    assert quality["seed"]["sampling"] == "random" and quality["fast"]["sampling"] == "group_by_length"
    assert quality["delta_f1"] == pytest.approx(quality["fast"]["f1"] - quality["seed"]["f1"], abs=1e-6)
    assert quality["within_tolerance"] == (abs(quality["delta_f1"]) <= quality["tolerance"])
    paired = quality["paired_f1"]
    assert (paired["name_a"], paired["name_b"], paired["n_examples"]) == ("seed", "fast", 32)
    assert paired["ci_low"] <= paired["difference"] <= paired["ci_high"]


def test_quality_can_compare_fp32_with_cpu_bf16(tmp_path: Path) -> None:
    from reprotune.modeling.precision import cpu_bf16_support

    if not (SHARED / align.WIKIANN / "train").exists():
        pytest.skip("../shared/data is missing")
    if not (torch.cuda.is_available() or cpu_bf16_support()[0]):
        pytest.skip(f"no bf16 here: {cpu_bf16_support()[1]}")
    out = tmp_path / "quality.json"
    assert throughput.main(["--smoke", "--quality", "--quality-compare", "precision", "--out", str(out)]) == 0
    quality = json.loads(out.read_text())["quality"]
    assert quality["paths"] == ["fp32", "bf16"]
    for path in ("fp32", "bf16"):
        assert quality[path]["precision_mode"] == quality[path]["eval_precision"] == path
    assert quality["paired_f1"]["a"] == pytest.approx(quality["fp32"]["f1"], abs=1e-6)
    assert quality["paired_f1"]["b"] == pytest.approx(quality["bf16"]["f1"], abs=1e-6)


def test_per_sentence_counts_give_the_entity_f1_of_score() -> None:
    import pandas as pd
    from throughput_quality import entity_f1, sentence_counts

    from reprotune.tasks.ner.metrics import entity_scores

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"], ["O", "O"], ["B-LOC", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "O"], ["I-LOC", "O"], ["B-LOC", "O", "B-PER"]]
    counts = sentence_counts(pd.DataFrame({"gold": gold, "pred": pred}))
    assert entity_f1(counts)["f1"] == pytest.approx(entity_scores(gold, pred)["f1"], abs=1e-6)
    assert counts.sum().to_dict() == {"tp": 3, "fp": 1, "fn": 2}


# batched == per-example on real data ----------------------------------------------------
@needs_data
@pytest.mark.parametrize("max_length", [128, 12])  # 12 truncates most sentences: words_cut is exercised
def test_ner_batched_equals_naive_on_wikiann(tokenizer, max_length: int) -> None:
    records = align.wikiann(SHARED, "dev", 600)
    records.append(
        {"id": "dropped", "tokens": ["Paris", "\u200b", "is", "\u0085", "big"], "tags": ["B-LOC", "O", "O", "O", "O"]}
    )  # tokens the tokenizer drops
    labels = align.label_list({tag for r in records for tag in r["tags"]})
    fast = align.ner_fast(Dataset.from_list(records), tokenizer, labels, max_length)[:]
    naive = align.ner_naive(records, tokenizer, labels, max_length)
    assert align.first_difference(fast, naive) is None
    assert sum(naive["words_dropped"]) > 0
    assert (sum(naive["words_cut"]) > 0) == (max_length == 12)


@needs_data
def test_qa_batched_equals_naive_on_squad(tokenizer) -> None:
    records = align.squad(SHARED, 150)
    context = records[0]["context"]
    long_question = " ".join(["what"] * 100) + "?"
    tower = "The tower was built in 1889 by Gustave Eiffel's company for the World's Fair."
    records += [
        {
            "id": "long-question",
            "question": "   " + long_question,
            "context": context,
            "answers": records[0]["answers"],
        },
        {
            "id": "padded-answer",
            "question": "When was it built?",
            "context": tower,
            "answers": {"text": [" 1889 "], "answer_start": [tower.index(" 1889 ")]},
        },
        {"id": "unanswerable", "question": "Why?", "context": context, "answers": {"text": [], "answer_start": []}},
    ]
    settings = align.WindowSettings(max_length=96, doc_stride=24, max_question_length=16)  # many windows
    fast = align.qa_fast(Dataset.from_list(records), tokenizer, settings)[:]
    naive = align.qa_naive(records, tokenizer, settings)
    assert align.first_difference(fast, naive) is None
    assert any(naive["question_cut"]) and len(naive["window"]) > len(records) and max(naive["window"]) > 1
    assert any(naive["answer_in_window"]) and not all(naive["answer_in_window"])


@needs_data
def test_mlm_batched_equals_naive(tokenizer) -> None:
    text_dir = throughput.optional_path(throughput.DEFAULT_MLM_TEXT)
    documents, _ = align.mlm_documents(text_dir, SHARED, 30)
    documents.append({"id": "empty", "text": ""})
    fast = align.mlm_fast(Dataset.from_list(documents), tokenizer, 64)[:]
    naive = align.mlm_naive(documents, tokenizer, 64)
    assert align.first_difference(fast, naive) is None
    assert len(naive["input_ids"]) > 1 and len(naive["input_ids"][-1]) <= 64


def test_first_difference_names_the_column_and_row() -> None:
    a = {"labels": [[1, 2], [3, -100]], "input_ids": [[5], [6]]}
    assert align.first_difference(a, {k: [list(r) for r in v] for k, v in a.items()}) is None
    b = {"labels": [[1, 2], [3, 4]], "input_ids": [[5], [6]]}
    assert align.first_difference(a, b).startswith("labels row 1")
    assert "columns differ" in align.first_difference(a, {"labels": a["labels"]})


# helpers ----------------------------------------------------------------------------
def test_a_failing_row_is_recorded_and_the_run_goes_on() -> None:
    errors: list[str] = []
    assert throughput.guarded("train x", lambda: 1 / 0, errors) is None
    assert throughput.guarded("train y", lambda: {"ok": 1}, errors) == {"ok": 1}
    assert errors == ["train x: ZeroDivisionError: division by zero"]


def test_quality_without_data_names_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert throughput.main(["--quality", "--data-dir", str(tmp_path), "--out", str(tmp_path / "q.json")]) == 2
    assert f"under --data-dir {tmp_path}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("Tesla T4", None),
    ],
)
def test_peak_tflops_table(monkeypatch: pytest.MonkeyPatch, name: str, peak: float | None) -> None:
    monkeypatch.setattr(device, "cuda", lambda: True)
    monkeypatch.setattr(device, "device_name", lambda: name)
    assert device.peak_tflops(None) == peak
    assert device.peak_tflops(500.0) == 500.0


def test_lora_memory_pairs_rows_of_the_same_config() -> None:
    rows = [
        {"model": "m", "method": "full", "config": "fast bs16", "peak_memory_mb": 200.0, "memory_kind": "x"},
        {"model": "m", "method": "lora", "config": "fast bs16", "peak_memory_mb": 50.0, "memory_kind": "x"},
        {"model": "m", "method": "lora", "config": "fast bs64", "peak_memory_mb": 90.0, "memory_kind": "x"},
    ]
    (ratio,) = train.lora_memory(rows, 0.6)
    assert ratio["ratio"] == 0.25 and ratio["config"] == "fast bs16"


def test_packed_half_model_loads_as_fp32(tiny_model_dir: Path, tmp_path: Path) -> None:
    from throughput_pack import copy_tokenizer, half_model
    from transformers import AutoModel

    target = tmp_path / "model"
    copy_tokenizer(tiny_model_dir, target)
    half_model(tiny_model_dir, target)
    original = AutoModel.from_pretrained(str(tiny_model_dir))
    packed = AutoModel.from_pretrained(str(target))
    assert next(packed.parameters()).dtype == torch.float32
    for (name, a), (_, b) in zip(original.state_dict().items(), packed.state_dict().items()):
        assert torch.allclose(a.half().float(), b), name
    assert (target / "tokenizer.json").exists()
    assert (target / "model.safetensors").stat().st_size < 0.6 * (tiny_model_dir / "model.safetensors").stat().st_size


# the search benchmark ------------------------------------------------------------------
def test_lora_search_records_the_validation_choice_and_one_test_comparison(tmp_path: Path) -> None:
    """bench/lora_search.py turns the search on and reads what it chose; it compares no settings on test."""
    import lora_search

    assert lora_search.overrides("t", 6, 2) == [
        "tasks.t.search.enabled=true",
        "tasks.t.search.trials=6",
        "tasks.t.search.seed=2",
    ]
    metrics = tmp_path / "metrics" / "t"
    metrics.mkdir(parents=True)
    for method, value, chosen in (("full", 0.61, {"learning_rate": 5e-5}), ("lora", 0.6, {"r": 16})):
        summary = {"enabled": True, "metric": "eval_f1", "best_value": value, "chosen": chosen, "trials": 6}
        (metrics / f"search-{method}.json").write_text(json.dumps(summary))
        (metrics / f"{method}.json").write_text(json.dumps({"f1": value - 0.05}))
    significance = {
        "verdict_metric": "f1",
        "lora_minus_full.f1.difference": -0.01,
        "lora_minus_full.f1.ci_low": -0.03,
        "lora_minus_full.f1.ci_high": 0.01,
        "lora_minus_full.f1.verdict": "too small to tell",
        "examples": 377,
        "clusters": 345,
    }
    (metrics / "significance.json").write_text(json.dumps(significance))
    row = lora_search.record(tmp_path, "t")
    assert row["chosen_on"] == "validation"
    assert row["search"]["lora"]["chosen"] == {"r": 16} and row["search"]["full"]["best_value"] == 0.61
    assert row["test"]["difference"] == -0.01 and row["test"]["verdict"] == "too small to tell"
    assert row["test"]["full"] == pytest.approx(0.56) and row["test"]["clusters"] == 345
    assert "settings" not in row and not hasattr(lora_search, "SETTINGS"), "no hand-picked settings to rank on test"
    assert "chosen on validation" in lora_search.line("t", "default", row)


def test_lora_dropout_trains_the_validation_choice_with_only_the_dropout_changed(tmp_path: Path) -> None:
    """bench/lora_dropout.py reruns what the LoRA search chose on validation, search off, and
    varies nothing but the adapters' dropout; without a search it keeps params.yaml's recipe."""
    import lora_dropout

    search = tmp_path / "metrics" / "t" / "search-lora.json"
    search.parent.mkdir(parents=True)
    chosen = {"learning_rate": 0.004, "target_modules": "all-linear"}
    search.write_text(json.dumps({"enabled": True, "chosen": chosen}), encoding="utf-8")
    assert lora_dropout.recipe(tmp_path, "t") == chosen
    runs = [lora_dropout.overrides("t", chosen, dropout) for dropout in (0.1, 0.0)]
    assert runs[0][0] == runs[1][0] == "tasks.t.search.enabled=false"
    assert [a for a, b in zip(*runs) if a != b] == ["tasks.t.train_lora.dropout=0.1"]
    assert "tasks.t.train_lora.target_modules=all-linear" in runs[1]
    search.write_text(json.dumps({"enabled": False, "chosen": chosen}), encoding="utf-8")
    assert lora_dropout.recipe(tmp_path, "t") == {}  # no search ran, and none is recorded for task "t"


def test_profile_files_each_ops_own_time_under_its_phase() -> None:
    """bench/profile_lora.py: an op's own time goes to the phase of its nearest annotated
    ancestor (clipping inside the optimizer region would be the optimizer's), annotations
    carry none, and the arithmetic's ratio removes half of full's backward products and its
    optimizer and clipping time."""
    from types import SimpleNamespace

    import profile_lora

    def event(name: str, own_us: float, parent: object = None) -> SimpleNamespace:
        return SimpleNamespace(name=name, self_cpu_time_total=own_us, cpu_parent=parent)

    forward = event("model_forward", 5)
    backward = event("autograd::engine::evaluate_function: MmBackward0", 7)
    optimizer = event("Optimizer.step#AdamW.step", 3)
    clipping = event("clip_grad_norm", 1)
    events = [
        forward,
        event("aten::addmm", 4000, forward),
        event("aten::gelu", 1000, event("aten::linear", 0, forward)),
        backward,
        event("aten::mm", 6000, backward),
        event("aten::gelu_backward", 2000, backward),
        optimizer,
        event("aten::_fused_adamw_", 3000, optimizer),
        clipping,
        event("aten::_foreach_norm", 1000, clipping),
        event("aten::copy_", 500),
    ]
    ms = profile_lora.breakdown(events, steps=2)
    assert ms == {
        "all": 8.75,
        "backward": 4.0,
        "backward.matmul": 3.0,
        "backward.other": 1.0,
        "clipping": 0.5,
        "clipping.other": 0.5,
        "forward": 2.5,
        "forward.matmul": 2.0,
        "forward.other": 0.5,
        "optimizer": 1.5,
        "optimizer.other": 1.5,
        "trainer": 0.25,
        "trainer.other": 0.25,
    }
    lora = {**ms, "all": 5.0}
    ratios = profile_lora.attainable(ms, lora)
    assert ratios["arithmetic_ratio"] == round(8.75 / (8.75 - 1.5 - 1.5 - 0.5), 3)
    assert ratios["profiled_ratio"] == 1.75
    assert ratios["matmul_share_of_full_step"] == round(5.0 / 8.75, 3)


def test_saved_activations_count_what_autograd_keeps_per_method() -> None:
    """Frozen layers keep no input for a weight gradient, so LoRA on the attention keeps less
    than full; the adapters' dropout adds its masks; full alone holds AdamW state."""
    import saved_activations

    measured = saved_activations.measure("bert-tiny", "4x16", "fp32", 0.1)
    rows = {(r["method"], r["target_modules"], r["lora_dropout"]): r for r in measured}
    full = rows[("full", None, None)]
    saved = {key: row["saved_activations_bytes"] for key, row in rows.items()}
    assert full["activations_minus_full_mb"] == 0 and full["adamw_state_mb"] > 0
    assert saved[("lora", "auto", 0.0)] < saved[("full", None, None)]
    assert saved[("lora", "auto", 0.1)] - saved[("lora", "auto", 0.0)] == 2 * 3 * 4 * 16 * 32  # bool masks, q/k/v
    assert saved[("lora", "all-linear", 0.1)] > saved[("lora", "all-linear", 0.0)]
    for row in rows.values():
        expected = (
            row["saved_activations_mb"] + row["adamw_state_mb"] - full["saved_activations_mb"] - full["adamw_state_mb"]
        )
        assert row["backward_start_minus_full_mb"] == pytest.approx(expected, abs=0.11)
        if row["method"] == "lora":
            assert row["adamw_state_mb"] < full["adamw_state_mb"] / 20


def test_lora_peft_row_is_peft_own_path_input_cast_included() -> None:
    """The `lora-peft` baseline undoes the fold wholly: peft's Dropout modules, plain Linear A,
    and peft's cast of each input to the adapter's dtype switched back on."""
    from peft.tuners.lora import LoraLayer
    from throughput_lora import build

    from reprotune.training.lora import DropoutLoraA

    lean = build("bert-tiny", "lora", "fp32", "none", 0.1, "all-linear")
    peft_own = build("bert-tiny", "lora-peft", "fp32", "none", 0.1, "all-linear")
    assert all(
        getattr(m, "cast_input_dtype_enabled", True) is False for m in lean.modules() if isinstance(m, LoraLayer)
    )
    layers = [m for m in peft_own.modules() if isinstance(m, LoraLayer)]
    assert layers and all(getattr(m, "cast_input_dtype_enabled", True) for m in layers)
    assert not any(isinstance(m, DropoutLoraA) for m in peft_own.modules())
    assert all(isinstance(m.lora_dropout["default"], torch.nn.Dropout) for m in layers)
