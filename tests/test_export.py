"""Export, parity, latency, model card, Hub push, on tiny models
built in the test (tests/tiny.py), without the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from reprotune.core.errors import ReprotuneError
from reprotune.export import card, latency, parity
from reprotune.export.merge import merge_lora, save_checkpoint
from reprotune.export.onnx import export_onnx, input_names, output_names, quantize_int8
from reprotune.export.params import ExportParams
from reprotune.export.runtime import OnnxModel

LABELS = ["O", "B-person", "I-person", "B-location", "I-location"]
TEXTS = [
    "Obama visited Paris last week",
    "the cat sat on the mat",
    "Angela Merkel met Emmanuel Macron in Berlin",
    "nothing here",
    "I flew from London to New York and then to San Francisco for a conference",
    "ok",
    "Taylor Swift sings",
    "rain again in Manchester today",
]


def sharpen(model: torch.nn.Module, head: str, scale: float = 30.0, seed: int = 0) -> torch.nn.Module:
    """A random head gives logits near zero, where any rounding flips the argmax; a larger
    head makes the tiny model decide like a trained one."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = getattr(model, head).weight
        weight.copy_(torch.randn(weight.shape, generator=generator) * scale / weight.shape[1] ** 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def ner_model(tiny_model_dir: Path):
    from transformers import AutoModelForTokenClassification

    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(
        str(tiny_model_dir),
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    return sharpen(model, "classifier")


@pytest.fixture(scope="module")
def ner_features(tokenizer, ner_model):
    """Token features labelled with the PyTorch model's own predictions (-100 on special tokens)."""
    from datasets import Dataset

    encoded = tokenizer(TEXTS, truncation=True, max_length=32)
    labels = []
    with torch.no_grad():
        for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"]):
            logits = ner_model(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([mask])).logits[0]
            predicted = logits.argmax(-1).tolist()
            labels.append([-100] + predicted[1:-1] + [-100])
    return Dataset.from_dict({**encoded, "labels": labels})


@pytest.fixture(scope="module")
def ner_collate(tokenizer):
    from transformers import DataCollatorForTokenClassification

    return DataCollatorForTokenClassification(tokenizer)


@pytest.fixture(scope="module")
def ner_onnx(tmp_path_factory, ner_model, tokenizer) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ner-onnx")
    info = export_onnx(ner_model, tokenizer, folder / "onnx" / "model.onnx", opset=17)
    assert info["outputs"] == ["logits"] and "attention_mask" in info["inputs"]
    quantize_int8(folder / "onnx" / "model.onnx", folder / "onnx" / "model_int8.onnx")
    return {"fp32": folder / "onnx" / "model.onnx", "int8": folder / "onnx" / "model_int8.onnx"}


def run_compare(reference, candidates, features, collate, names=("logits",), tokenizer=None):
    inputs = input_names(reference, tokenizer) if tokenizer is not None else ("input_ids", "attention_mask")
    return parity.compare(
        reference, candidates, features, collate, batch_size=3, input_names=inputs, output_names=names
    )


# merge -----------------------------------------------------------------------------
def test_merged_lora_predicts_as_base_plus_adapter(tmp_path, tiny_model_dir, tokenizer, ner_features, ner_collate):
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForTokenClassification

    from reprotune.core.params import LoraTrainParams
    from reprotune.training.lora import apply_lora

    def base():
        torch.manual_seed(1)
        return AutoModelForTokenClassification.from_pretrained(str(tiny_model_dir), num_labels=len(LABELS))

    lora = apply_lora(base(), LoraTrainParams(r=4, alpha=8, dropout=0.0), "TOKEN_CLS", ("classifier",))
    with torch.no_grad():  # a trained adapter: LoRA B starts at zero, which would merge to nothing
        for name, param in lora.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.add_(torch.randn_like(param) * 0.5)
    lora.save_pretrained(str(tmp_path / "adapter"))

    reloaded = PeftModel.from_pretrained(base(), str(tmp_path / "adapter")).eval()
    merged = merge_lora(PeftModel.from_pretrained(base(), str(tmp_path / "adapter")))
    saved = save_checkpoint(merged, tokenizer, tmp_path / "merged", {"task": "t", "method": "lora"})
    plain = AutoModelForTokenClassification.from_pretrained(str(saved)).eval()

    with safe_open(str(saved / "model.safetensors"), "pt") as handle:
        assert not [key for key in handle.keys() if "lora" in key or "modules_to_save" in key]
    assert (saved / "tokenizer.json").is_file()
    assert json.loads((saved / "reprotune.json").read_text())["method"] == "lora"
    report = run_compare(reloaded, {"merged": plain}, ner_features, ner_collate)["merged"]
    parity.check_identical(report, "merged LoRA")
    assert report["max_abs_logit_diff"] < 1e-4 and report["predictions"] > 20


# ONNX ------------------------------------------------------------------------------
def test_onnx_and_int8_parity_pass(ner_model, ner_onnx, ner_features, ner_collate, tokenizer):
    candidates = {"onnx": OnnxModel(ner_onnx["fp32"]), "int8": OnnxModel(ner_onnx["int8"])}
    reports = run_compare(ner_model, candidates, ner_features, ner_collate, tokenizer=tokenizer)
    parity.check_identical(reports["onnx"])
    assert reports["onnx"]["max_abs_logit_diff"] < 1e-4
    assert reports["pytorch"]["label_accuracy"] == 1.0
    result = parity.check_metric(
        "label_accuracy",
        reports["pytorch"]["label_accuracy"],
        reports["int8"]["label_accuracy"],
        ExportParams().int8_tolerance,
    )
    assert result["drop"] <= result["tolerance"]
    assert reports["int8"]["max_abs_logit_diff"] > reports["onnx"]["max_abs_logit_diff"]
    assert ner_onnx["int8"].stat().st_size < ner_onnx["fp32"].stat().st_size / 2


def test_int8_metric_drop_beyond_tolerance_fails():
    with pytest.raises(ReprotuneError, match="int8_tolerance"):
        parity.check_metric("f1", 0.80, 0.70, 0.02)


def test_classification_onnx_parity(tmp_path, tiny_model_dir, tokenizer):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

    torch.manual_seed(2)
    model = sharpen(
        AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=3), "classifier", seed=2
    )
    export_onnx(model, tokenizer, tmp_path / "model.onnx")
    features = Dataset.from_dict(dict(tokenizer(TEXTS, truncation=True, max_length=32)))
    reports = run_compare(
        model,
        {"onnx": OnnxModel(tmp_path / "model.onnx")},
        features,
        DataCollatorWithPadding(tokenizer),
        tokenizer=tokenizer,
    )
    parity.check_identical(reports["onnx"])
    assert reports["onnx"]["predictions"] == len(TEXTS)


def test_qa_onnx_parity(tmp_path, tiny_model_dir, tokenizer):
    from datasets import Dataset
    from transformers import AutoModelForQuestionAnswering, DataCollatorWithPadding

    torch.manual_seed(3)
    model = sharpen(AutoModelForQuestionAnswering.from_pretrained(str(tiny_model_dir)), "qa_outputs", seed=3)
    info = export_onnx(model, tokenizer, tmp_path / "model.onnx")
    assert info["outputs"] == ["start_logits", "end_logits"]
    features = Dataset.from_dict(dict(tokenizer(["who went?"] * len(TEXTS), TEXTS, truncation=True)))
    reports = run_compare(
        model,
        {"onnx": OnnxModel(tmp_path / "model.onnx")},
        features,
        DataCollatorWithPadding(tokenizer),
        names=("start_logits", "end_logits"),
        tokenizer=tokenizer,
    )
    parity.check_identical(reports["onnx"])
    assert reports["onnx"]["predictions"] == 2 * len(TEXTS)


def test_broken_export_fails_parity(tmp_path, ner_model, ner_onnx, ner_features, ner_collate, tokenizer):
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(ner_onnx["fp32"]))
    # the head's weight matrix (constant folding may have transposed and renamed it)
    head = next(
        init for init in graph.graph.initializer if len(init.dims) == 2 and len(LABELS) in init.dims and 32 in init.dims
    )
    weights = numpy_helper.to_array(head)
    head.CopyFrom(numpy_helper.from_array(-weights, head.name))
    onnx.save(graph, str(tmp_path / "broken.onnx"))
    reports = run_compare(
        ner_model, {"onnx": OnnxModel(tmp_path / "broken.onnx")}, ner_features, ner_collate, tokenizer=tokenizer
    )
    with pytest.raises(ReprotuneError, match="predicts differently"):
        parity.check_identical(reports["onnx"])


def test_latency_and_sizes(ner_model, ner_onnx, ner_features, ner_collate, tokenizer):
    names = input_names(ner_model, tokenizer)
    single, batched = latency.inputs(ner_features, ner_collate, 4, 2, names)
    assert len(single) == 4 and len(batched) == 2 and "labels" not in single[0]
    torch_times = latency.measure_torch(ner_model, single, batched, threads=1)
    onnx_times = latency.measure(OnnxModel(ner_onnx["fp32"], threads=1), single, batched)
    for times in (torch_times, onnx_times):
        assert 0 < times["p50_ms"] <= times["p95_ms"] and times["batched_examples_per_second"] > 0
    assert latency.size_bytes(ner_onnx["fp32"].parent) == sum(p.stat().st_size for p in ner_onnx.values())


def test_onnx_model_runs_in_the_family_predict(tmp_path, tiny_model_dir, ner_model, ner_onnx, tokenizer):
    """OnnxModel stands in for the PyTorch model in NerFamily.predict_records."""
    from tiny_ner import tiny_task

    from reprotune import tasks

    params = tasks.params_module("ner").PARAMS.model_validate(tiny_task(tmp_path / "data", tiny_model_dir))
    meta = tasks.parse_meta("ner", {"labels": LABELS, "types_missing_from_train": []})
    family = tasks.family("ner")
    records = [{"text": text} for text in TEXTS[:4]]
    fast = __import__("transformers").AutoTokenizer.from_pretrained(str(tiny_model_dir), add_prefix_space=False)
    expected = family.predict_records(ner_model, fast, records, meta, params)
    got = family.predict_records(OnnxModel(ner_onnx["fp32"]), fast, records, meta, params)
    assert [[(e["type"], e["start"], e["end"]) for e in r["entities"]] for r in got] == [
        [(e["type"], e["start"], e["end"]) for e in r["entities"]] for r in expected
    ]
    assert any(r["entities"] for r in expected)


def test_output_names_refuse_unknown_heads(tiny_model_dir):
    from transformers import AutoModel

    with pytest.raises(ReprotuneError, match="no known task head"):
        output_names(AutoModel.from_pretrained(str(tiny_model_dir)))


# model card ------------------------------------------------------------------------
def test_model_card_holds_the_real_metrics(tmp_path):
    metrics = {
        "f1": 0.40678,
        "f1_ci_low": 0.35123,
        "f1_ci_high": 0.46011,
        "precision": 0.424242,
        "recall": 0.390698,
        "sentences": 360,
        "per_type": {"person": {"f1": 0.526316, "precision": 0.428571, "recall": 0.681818, "support": 66}},
    }
    (tmp_path / "metrics" / "wnut16").mkdir(parents=True)
    (tmp_path / "metrics" / "wnut16" / "lora.json").write_text(json.dumps(metrics))
    (tmp_path / "data" / "wnut16" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "wnut16" / "raw" / "download_report.json").write_text(
        json.dumps({"examples": {"train": 2000, "validation": 240, "test": 360}})
    )
    lock = {
        "schema": "2.0",
        "stages": {
            "download@wnut16": {
                "params": {
                    "params.yaml": {
                        "tasks.wnut16.download": {"source": "hub", "dataset": "wnut_16", "make_splits": {"test": 0.15}}
                    }
                }
            },
            "train-lora@wnut16": {
                "params": {
                    "params.yaml": {
                        "tasks.wnut16.train_lora": {"r": 8, "alpha": 16, "learning_rate": 0.001, "epochs": 3}
                    }
                },
                "outs": [{"path": "models/wnut16/lora", "md5": "0123456789abcdef0123456789abcdef.dir"}],
            },
        },
    }
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    model = type("M", (), {"name_or_path": "sentence-transformers/all-MiniLM-L6-v2", "revision": None})()
    info = card.gather(
        "wnut16",
        "lora",
        "ner",
        model,
        {"labels": LABELS, "types_missing_from_train": ["B-tvshow", "I-tvshow"]},
        {"size_bytes": {"pytorch": 1000, "onnx": 900, "int8": 300}},
        tmp_path,
        ["model", "onnx", "int8"],
    )
    text = card.render(info)
    head, body = card.split_card(text)
    assert head["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert head["pipeline_tag"] == "token-classification" and head["datasets"] == ["wnut_16"]
    results = {m["type"]: m["value"] for m in head["model-index"][0]["results"][0]["metrics"]}
    assert results["f1"] == 0.40678 and "sentences" not in results and "f1_ci_low" not in results
    assert "| f1 | 0.4068 | [0.3512, 0.4601] |" in body
    assert "| person |" in body and "0.5263" in body
    assert "| test | 360 |" in body and "| r | 8 |" in body and "| learning_rate | 0.0010 |" in body
    assert "0123456789abcdef0123456789abcdef.dir" in body and "train-lora@wnut16" in body
    assert "`B-tvshow`" in body and "Intended use" in body
    assert "onnx/model_int8.onnx" in body


# Hub push ----------------------------------------------------------------------------
def test_push_without_token_fails_in_one_line(tmp_path, monkeypatch):
    import huggingface_hub

    from reprotune.export.push import push

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ReprotuneError, match="HF_HUB_OFFLINE") as offline:
        push(tmp_path, "me/model", ["model"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ReprotuneError, match="no Hub token") as missing:
        push(tmp_path, "me/model", ["model"])
    assert "\n" not in str(offline.value) + str(missing.value)


def test_export_params_defaults_are_offline():
    settings = ExportParams()
    assert settings.push_to_hub is None and settings.onnx and settings.quantize_int8
    with pytest.raises(Exception, match="extra"):
        ExportParams.model_validate({"push": "me/x"})


# The HTTP server's tests are in tests/test_serve_app.py.


def test_stage_usage_error():
    from stages.export import main

    with pytest.raises(ReprotuneError, match="usage"):
        main(["only-task"])
    with pytest.raises(ReprotuneError, match="unknown method"):
        main(["task", "baseline"])
    assert np.isfinite(1.0)
