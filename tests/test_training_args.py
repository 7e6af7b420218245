"""The speed params reach the Trainer: train_full/train_lora keys map onto the
TrainingArguments the train stage builds, with CPU-safe resolutions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reprotune.core.errors import ReprotuneError
from reprotune.core.params import LoraTrainParams, TrainParams
from reprotune.tasks import family
from reprotune.training.train import resolve_precision, training_arguments


def args_for(tmp_path: Path, **params: object):
    return training_arguments(TrainParams(**params), family("ner"), tmp_path)


def test_speed_params_map_onto_training_arguments(tmp_path: Path) -> None:
    args = args_for(
        tmp_path, batch_size=32, gradient_accumulation_steps=4, dataloader_workers=2, group_by_length=True, warmup=0.1
    )
    assert args.per_device_train_batch_size == 32 and args.gradient_accumulation_steps == 4
    assert args.dataloader_num_workers == 2 and args.dataloader_persistent_workers
    assert args.train_sampling_strategy == "group_by_length"
    assert str(getattr(args.optim, "value", args.optim)) == "adamw_torch_fused"
    assert args.warmup_steps == pytest.approx(0.1)
    assert args.dataloader_pin_memory == torch.cuda.is_available()


def test_plain_settings_switch_the_speed_features_off(tmp_path: Path) -> None:
    args = args_for(tmp_path, group_by_length=False, optim="adamw_torch", warmup=50)
    assert args.train_sampling_strategy == "random" and not args.dataloader_persistent_workers
    assert str(getattr(args.optim, "value", args.optim)) == "adamw_torch" and args.warmup_steps == 50
    assert not args.torch_compile


def test_precision_on_cpu_follows_the_cpus_bf16_support() -> None:
    """auto: bf16 autocast where the CPU has native bf16, else fp32; fp16 needs a GPU
    (the mocked cases are in test_precision.py)."""
    if torch.cuda.is_available():
        pytest.skip("CPU behaviour")
    from reprotune.modeling.precision import cpu_bf16_support

    capable = cpu_bf16_support()[0]
    assert resolve_precision(TrainParams()).trainer_flags() == {"bf16": capable, "fp16": False}
    assert resolve_precision(LoraTrainParams(precision="fp32")).trainer_flags() == {"bf16": False, "fp16": False}
    with pytest.raises(ReprotuneError, match="train.precision: 'fp16' needs a GPU"):
        resolve_precision(TrainParams(precision="fp16"))
    if capable:
        assert resolve_precision(TrainParams(precision="bf16")).trainer_flags()["bf16"]
    else:
        with pytest.raises(ReprotuneError, match="train.precision: 'bf16' needs a GPU or a CPU with native bf16"):
            resolve_precision(TrainParams(precision="bf16"))


def test_gradient_checkpointing_is_enabled_on_the_model_before_lora() -> None:
    from transformers import BertConfig, BertForTokenClassification

    from reprotune.training.lora import apply_lora
    from reprotune.training.train import enable_activation_checkpointing

    model = BertForTokenClassification(
        BertConfig(
            vocab_size=40,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=3,
        )
    )
    assert not model.is_activation_checkpointing
    enable_activation_checkpointing(model)
    assert model.is_activation_checkpointing
    wrapped = apply_lora(model, LoraTrainParams(target_modules=["query", "value"]), "TOKEN_CLS", ("classifier",))
    wrapped.train()
    ids = torch.randint(0, 40, (2, 6))
    wrapped(input_ids=ids, labels=torch.zeros_like(ids)).loss.backward()
    grads = {name: p.grad for name, p in wrapped.named_parameters() if "lora_" in name}
    assert grads and all(g is not None for g in grads.values())  # gradients reach through the recomputed layers
    assert all(g.abs().sum() > 0 for name, g in grads.items() if "lora_B" in name)  # B starts at 0, A's grad with it


def test_lora_all_linear_adapts_every_encoder_linear_layer_and_no_head() -> None:
    """`all-linear`: q/k/v, attention output, intermediate and output of every block, by full
    name; not the head (trained in full), not an MLM decoder tied to the embeddings. `auto`
    stays the attention projections."""
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    from reprotune.tasks.classification.family import FAMILY as CLASSIFICATION
    from reprotune.tasks.mlm.family import HEAD_MODULES
    from reprotune.training.lora import apply_lora, resolve_target_modules

    config = BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16)
    classifier = BertForSequenceClassification(config)
    assert resolve_target_modules(classifier, "auto", CLASSIFICATION.head_modules) == ["query", "key", "value"]
    targets = resolve_target_modules(classifier, "all-linear", CLASSIFICATION.head_modules)
    leaves = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense")
    leaves += ("intermediate.dense", "output.dense")
    assert len(targets) == 2 * 6 and all(name.startswith("bert.encoder.layer.") for name in targets)
    assert {name.split(".", 4)[-1] for name in targets} == set(leaves)
    all_linear = LoraTrainParams(target_modules="all-linear")
    wrapped = apply_lora(classifier, all_linear, "SEQ_CLS", CLASSIFICATION.head_modules)
    lora_layers = {name.rsplit(".lora_A", 1)[0] for name, _ in wrapped.named_parameters() if ".lora_A." in name}
    assert len(lora_layers) == 12 and not any("pooler" in name or "classifier" in name for name in lora_layers)

    masked_lm = BertForMaskedLM(config)
    targets = resolve_target_modules(masked_lm, "all-linear", HEAD_MODULES)
    assert not any(name.startswith("cls.") for name in targets) and len(targets) == 12
