"""Precision resolution for training, evaluation and predict: bf16 autocast on CPUs with
native bf16, fp32 on other CPUs, bf16/fp16 on GPUs; refusals name the key. On a capable
CPU: autocast really happens in a train step and in inference, and bf16 runs repeat
bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reprotune.core.errors import ReprotuneError
from reprotune.core.params import TrainParams
from reprotune.modeling import precision
from reprotune.modeling.precision import Resolved, resolve

WHERE = "tasks.t.train_full.precision"


def machine(
    monkeypatch: pytest.MonkeyPatch, *, cuda: bool = False, cuda_bf16: bool = True, cpu_bf16: bool = False
) -> None:
    """Mock this machine: a GPU or not, and whether the CPU has native bf16."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    why = "avx512_bf16 (mock)" if cpu_bf16 else "no amx_bf16/avx512_bf16 (mock)"
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: (cpu_bf16, why))


# --- resolution, capability mocked ---------------------------------------------------


def test_capable_cpu_autocasts_bf16_for_auto_and_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    machine(monkeypatch, cpu_bf16=True)
    for choice in ("auto", "bf16"):
        got = resolve(choice, WHERE)
        assert (got.dtype, got.device, got.cpu_bf16) == ("bf16", "cpu", True)
        assert "avx512_bf16" in got.reason
        assert got.trainer_flags() == {"bf16": True, "fp16": False}
    assert resolve("fp32", WHERE) == Resolved("fp32", "cpu", True, "fp32 asked")
    with pytest.raises(ReprotuneError) as refused:
        resolve("fp16", WHERE)
    assert str(refused.value) == (
        f"{WHERE}: 'fp16' needs a GPU; on CPU use 'auto', 'fp32' or 'bf16' (CPUs with native bf16)"
    )


def test_incapable_cpu_stays_fp32_and_refuses_reduced_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    machine(monkeypatch, cpu_bf16=False)
    got = resolve("auto", WHERE)
    assert (got.dtype, got.device, got.cpu_bf16) == ("fp32", "cpu", False)
    assert got.trainer_flags() == {"bf16": False, "fp16": False}
    assert resolve("fp32", WHERE).dtype == "fp32"
    with pytest.raises(ReprotuneError) as refused:
        resolve("bf16", WHERE)
    message = str(refused.value)
    assert message.startswith(f"{WHERE}: 'bf16' needs a GPU or a CPU with native bf16")
    assert "no amx_bf16/avx512_bf16 (mock)" in message and message.endswith("use 'auto' or 'fp32'")
    assert "\n" not in message
    with pytest.raises(ReprotuneError, match=f"^{WHERE}: 'fp16' needs a GPU"):
        resolve("fp16", WHERE)
    with pytest.raises(ReprotuneError, match=f"^{WHERE}: unknown precision 'half'; allowed: auto, fp32, bf16, fp16$"):
        resolve("half", WHERE)


def test_gpu_auto_is_bf16_where_supported_else_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    machine(monkeypatch, cuda=True, cuda_bf16=True, cpu_bf16=False)
    assert (resolve("auto", WHERE).dtype, resolve("auto", WHERE).device) == ("bf16", "cuda")
    assert resolve("bf16", WHERE).dtype == "bf16"  # the CPU's lack of bf16 does not matter on a GPU
    assert resolve("fp16", WHERE).trainer_flags() == {"bf16": False, "fp16": True}
    assert resolve("fp32", WHERE).trainer_flags() == {"bf16": False, "fp16": False}
    machine(monkeypatch, cuda=True, cuda_bf16=False, cpu_bf16=True)
    older = resolve("auto", WHERE)
    assert (older.dtype, older.device, older.cpu_bf16) == ("fp16", "cuda", True)
    assert older.info("train_") == {"train_precision": "fp16", "train_device": "cuda", "train_cpu_bf16": True}


@pytest.mark.parametrize(
    ("caps", "native"),
    [
        ({"architecture": "x86_64", "avx512_bf16": True, "amx_bf16": False}, True),
        ({"architecture": "x86_64", "avx512_bf16": False, "amx_bf16": True}, True),
        ({"architecture": "x86_64", "avx512_bf16": False, "amx_bf16": False, "avx512_f": True}, False),
        ({"architecture": "aarch64", "bf16": True}, True),
        ({"architecture": "aarch64", "bf16": False, "sve": True}, False),
    ],
)
def test_capability_comes_from_torchs_cpu_feature_probe(
    monkeypatch: pytest.MonkeyPatch, caps: dict, native: bool
) -> None:
    precision.cpu_bf16_support.cache_clear()
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    try:
        found, why = precision.cpu_bf16_support()
    finally:
        precision.cpu_bf16_support.cache_clear()
    assert found is native and "torch.cpu.get_capabilities" in why


def test_capability_falls_back_to_proc_cpuinfo_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    precision.cpu_bf16_support.cache_clear()
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    try:
        monkeypatch.setattr(precision, "_cpuinfo_flags", lambda: {"fpu", "avx", "avx512f", "avx512_bf16"})
        assert precision.cpu_bf16_support() == (True, "avx512_bf16 (/proc/cpuinfo)")
        precision.cpu_bf16_support.cache_clear()
        monkeypatch.setattr(precision, "_cpuinfo_flags", lambda: {"fpu", "avx", "avx2"})
        assert precision.cpu_bf16_support()[0] is False
        precision.cpu_bf16_support.cache_clear()
        monkeypatch.setattr(precision, "_cpuinfo_flags", set)
        assert precision.cpu_bf16_support()[0] is False  # macOS without the torch probe: no guessing
        precision.cpu_bf16_support.cache_clear()
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
        assert precision.cpu_bf16_support()[0] is False
    finally:
        precision.cpu_bf16_support.cache_clear()


def test_training_arguments_carry_the_resolution_and_name_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from reprotune.tasks import family
    from reprotune.training.train import training_arguments

    machine(monkeypatch, cpu_bf16=True)
    args = training_arguments(TrainParams(), family("ner"), tmp_path)
    assert args.bf16 and not args.fp16 and args.use_cpu
    assert not training_arguments(TrainParams(precision="fp32"), family("ner"), tmp_path).bf16
    machine(monkeypatch, cpu_bf16=False)
    assert not training_arguments(TrainParams(), family("ner"), tmp_path).bf16
    with pytest.raises(ReprotuneError, match="^tasks.wnut.train_lora.precision: 'bf16' needs"):
        training_arguments(TrainParams(precision="bf16"), family("ner"), tmp_path, "tasks.wnut.train_lora.precision")


def test_inference_autocast_follows_the_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    from reprotune.modeling.inference import autocast

    machine(monkeypatch, cpu_bf16=False)
    with autocast("auto"):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ReprotuneError, match="^tasks.t.evaluate.precision: 'bf16' needs"):
        autocast("bf16", "tasks.t.evaluate.precision")
    machine(monkeypatch, cpu_bf16=True)
    for choice in ("auto", "bf16"):
        with autocast(choice):
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with autocast("fp32"):
        assert not torch.is_autocast_enabled("cpu")


# --- real bf16 on this CPU -----------------------------------------------------------

CAPABLE, WHY = precision.cpu_bf16_support()
needs_cpu_bf16 = pytest.mark.skipif(
    torch.cuda.is_available() or not CAPABLE,
    reason=f"needs a CPU-only run on a CPU with native bf16; here: {'a GPU' if torch.cuda.is_available() else WHY}",
)


def tiny_tagger(seed: int = 0) -> torch.nn.Module:
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(seed)
    return BertForTokenClassification(
        BertConfig(
            vocab_size=64,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=3,
        )
    )


def tagged_rows(count: int = 16) -> object:
    from datasets import Dataset

    lengths = [5 + (i * 3) % 7 for i in range(count)]
    ids = [[(i * 11 + j * 5) % 60 + 2 for j in range(n)] for i, n in enumerate(lengths)]
    return Dataset.from_dict(
        {
            "input_ids": ids,
            "attention_mask": [[1] * n for n in lengths],
            "labels": [[(t + j) % 3 for j, t in enumerate(row)] for row in ids],
        }
    )


def pad_collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    width = max(len(row["input_ids"]) for row in rows)
    out = {}
    for key, fill in (("input_ids", 0), ("attention_mask", 0), ("labels", -100)):
        if key in rows[0]:
            out[key] = torch.tensor([row[key] + [fill] * (width - len(row[key])) for row in rows])
    return out


def record_linear_dtypes(model: torch.nn.Module) -> list[tuple[bool, torch.dtype]]:
    """(training?, output dtype) of the first attention query Linear, per forward pass."""
    seen: list[tuple[bool, torch.dtype]] = []
    query = model.bert.encoder.layer[0].attention.self.query
    query.register_forward_hook(lambda module, args, output: seen.append((module.training, output.dtype)))
    return seen


def train_tiny(tmp_path: Path, choice: str, seed: int = 7) -> tuple[torch.nn.Module, list, list]:
    """Two steps of the train stage's Trainer setup (training_arguments) on a tiny tagger."""
    from transformers import Trainer, set_seed

    from reprotune.tasks import family
    from reprotune.training.train import training_arguments

    params = TrainParams(
        precision=choice,
        seed=seed,
        max_steps=2,
        batch_size=4,
        eval_batch_size=8,
        logging_steps=1,
        metric_for_best_model="loss",
        learning_rate=1e-3,
        optim="adamw_torch",
        group_by_length=False,
    )
    set_seed(seed)
    model = tiny_tagger(seed)
    seen = record_linear_dtypes(model)
    args = training_arguments(params, family("ner"), tmp_path / "out")
    args.disable_tqdm = True
    rows = tagged_rows()
    trainer = Trainer(model=model, args=args, data_collator=pad_collate, train_dataset=rows, eval_dataset=rows)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return trainer.model, seen, losses


@needs_cpu_bf16
def test_train_step_autocasts_bf16_on_this_cpu_and_keeps_fp32_weights(tmp_path: Path) -> None:
    model, seen, losses = train_tiny(tmp_path / "bf16", "bf16")
    training = {dtype for is_training, dtype in seen if is_training}
    assert training == {torch.bfloat16}, seen
    assert {dtype for is_training, dtype in seen if not is_training} == {torch.bfloat16}  # in-training eval too
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not a bf16 model
    assert len(losses) == 2
    _, seen32, _ = train_tiny(tmp_path / "fp32", "fp32")
    assert {dtype for _, dtype in seen32} == {torch.float32}


@needs_cpu_bf16
def test_inference_batches_autocast_bf16_on_this_cpu() -> None:
    from reprotune.modeling.inference import batches

    for choice, expected in (("auto", torch.bfloat16), ("bf16", torch.bfloat16), ("fp32", torch.float32)):
        model = tiny_tagger()
        seen = record_linear_dtypes(model)
        rows = tagged_rows(6).remove_columns(["labels"])
        columns = ["input_ids", "attention_mask"]
        outputs = [output.logits for _, _, output in batches(model, rows, pad_collate, 4, columns, choice)]
        assert {dtype for _, dtype in seen} == {expected}, choice
        assert len(outputs) == 2


@needs_cpu_bf16
def test_bf16_training_on_this_cpu_is_bit_identical_across_runs(tmp_path: Path) -> None:
    first, _, first_losses = train_tiny(tmp_path / "a", "bf16")
    second, _, second_losses = train_tiny(tmp_path / "b", "bf16")
    assert first_losses == second_losses
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, different
    reference = tiny_tagger(7).state_dict()
    assert any(not torch.equal(a[name], reference[name]) for name in a)  # training moved the weights
