"""The masked-only head (reprotune.tasks.mlm.family.masked_only_trainer) must give the dense path's
loss and gradients, for every architecture family the MLM task supports, under LoRA,
and inside the Trainer that the train stage builds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reprotune.tasks.mlm.family import PositionGather, encoder_of, masked_only_trainer, sparse_inputs
from reprotune.tasks.mlm.preprocess import IGNORE


def tiny_masked_lm(kind: str) -> torch.nn.Module:
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        DistilBertConfig,
        DistilBertForMaskedLM,
        ElectraConfig,
        ElectraForMaskedLM,
        RobertaConfig,
        RobertaForMaskedLM,
    )

    torch.manual_seed(0)
    common = {"vocab_size": 120, "max_position_embeddings": 64}
    if kind == "bert":
        return BertForMaskedLM(
            BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **common)
        )
    if kind == "roberta":
        return RobertaForMaskedLM(
            RobertaConfig(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                pad_token_id=1,
                **common,
            )
        )
    if kind == "distilbert":
        return DistilBertForMaskedLM(DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **common))
    if kind == "electra":
        return ElectraForMaskedLM(
            ElectraConfig(
                embedding_size=16,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                **common,
            )
        )
    raise ValueError(kind)


def masked_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 120, (3, 10), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 7:] = 0
    labels = torch.full_like(input_ids, IGNORE)
    for row, positions in enumerate(([1, 4], [0, 2, 9], [3])):
        labels[row, positions] = input_ids[row, positions]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def loss_and_grads(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], sparse: bool
) -> tuple[float, dict[str, torch.Tensor]]:
    model.eval()  # no dropout: both paths see the same activations
    model.zero_grad()
    if sparse:
        gathered, keep = sparse_inputs(batch)
        gather = PositionGather(encoder_of(model))
        try:
            with gather.only(keep):
                output = model(**gathered)
        finally:
            gather.remove()
        assert output.logits.shape[:2] == (1, int(keep.sum()))  # the head saw masked positions only
    else:
        output = model(**batch)
    output.loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return float(output.loss.detach()), grads


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert", "electra"])
def test_masked_only_head_gives_the_dense_loss_and_gradients(kind: str) -> None:
    model = tiny_masked_lm(kind)
    batch = masked_batch()
    dense_loss, dense_grads = loss_and_grads(model, batch, sparse=False)
    sparse_loss, sparse_grads = loss_and_grads(model, batch, sparse=True)
    assert sparse_loss == pytest.approx(dense_loss, rel=1e-5)
    assert dense_grads.keys() == sparse_grads.keys()
    for name, grad in dense_grads.items():
        torch.testing.assert_close(sparse_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_hook_is_inert_outside_its_context_and_after_removal() -> None:
    model = tiny_masked_lm("bert").eval()
    batch = masked_batch()
    gather = PositionGather(encoder_of(model))
    with torch.no_grad():
        assert model(**batch).logits.shape == (3, 10, 120)
        with gather.only(batch["labels"] != IGNORE):
            assert model(**sparse_inputs(batch)[0]).logits.shape == (1, 6, 120)
        gather.remove()
        assert model(**batch).logits.shape == (3, 10, 120)


def test_no_labels_or_no_masked_position_keeps_the_dense_path() -> None:
    batch = masked_batch()
    assert sparse_inputs({"input_ids": batch["input_ids"]}) is None
    assert sparse_inputs({**batch, "labels": torch.full_like(batch["labels"], IGNORE)}) is None


def test_masked_only_head_under_lora_matches_dense() -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        tiny_masked_lm("bert"),
        LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["transform"], init_lora_weights=False),
    )
    batch = masked_batch()
    dense_loss, dense_grads = loss_and_grads(model, batch, sparse=False)
    sparse_loss, sparse_grads = loss_and_grads(model, batch, sparse=True)
    assert sparse_loss == pytest.approx(dense_loss, rel=1e-5)
    assert any("lora_" in name for name in sparse_grads) and any("transform" in name for name in sparse_grads)
    for name, grad in dense_grads.items():
        torch.testing.assert_close(sparse_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_trainer_steps_match_the_dense_trainer(tmp_path: Path) -> None:
    """Two optimizer steps through the Trainer: the masked-only subclass ends at the
    dense Trainer's weights, and its evaluation loss is the dense one."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    batch = masked_batch()
    rows = Dataset.from_dict({key: value.tolist() for key, value in batch.items()})
    results = {}
    for name, trainer_class in (("dense", Trainer), ("sparse", masked_only_trainer(Trainer))):
        model = tiny_masked_lm("bert")
        args = TrainingArguments(
            output_dir=str(tmp_path / name),
            max_steps=2,
            per_device_train_batch_size=3,
            per_device_eval_batch_size=3,
            learning_rate=1e-2,
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
            save_strategy="no",
        )
        trainer = trainer_class(model=model, args=args, train_dataset=rows, eval_dataset=rows)
        trainer.train()
        results[name] = (trainer.evaluate()["eval_loss"], dict(model.named_parameters()))
    assert results["sparse"][0] == pytest.approx(results["dense"][0], rel=1e-4)
    for name, weight in results["dense"][1].items():
        torch.testing.assert_close(results["sparse"][1][name], weight, rtol=1e-4, atol=1e-5, msg=name)
