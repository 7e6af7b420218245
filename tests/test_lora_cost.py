"""LoRA costs what its arithmetic says (issue 25): a step leaves no gradient on a frozen
weight, the optimizer holds state only for the trained parameters, the adapters' dropout
keeps a 1-byte mask instead of two float activations, and under bf16 autocast the frozen
weights are stored in bf16; the last two give bit-identical training."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest
import torch

from reprotune.core.params import LoraTrainParams
from reprotune.modeling.precision import Resolved, frozen_linear_weights, store_frozen_in_autocast_dtype
from reprotune.training import lora
from reprotune.training.lora import DropoutLoraA, apply_lora

VOCAB = 50


def tiny_token_classifier(seed: int = 0) -> torch.nn.Module:
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, num_labels=3
    )
    return BertForTokenClassification(config)


def batch(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (4, 12), generator=generator)
    return {"input_ids": ids, "labels": torch.randint(0, 3, (4, 12), generator=generator)}


def autocast(dtype: str) -> Callable[[], AbstractContextManager[Any]]:
    if dtype == "fp32":
        return nullcontext
    return lambda: torch.autocast("cpu", dtype=torch.bfloat16)


def train_steps(model: torch.nn.Module, steps: int, dtype: str) -> dict[str, torch.Tensor]:
    """`steps` AdamW steps (seeded dropout); the trained parameters afterwards."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(1)
    for step in range(steps):
        with autocast(dtype)():
            loss = model(**batch(step)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def lora_model(bias: str = "all", dropout: float = 0.1, lean: bool = True, **extra: Any) -> Any:
    params = LoraTrainParams(bias=bias, dropout=dropout, **extra)  # type: ignore[arg-type]
    if lean:
        return apply_lora(tiny_token_classifier(), params, "TOKEN_CLS", ("classifier",))
    saved = lora.lean_lora_dropout
    lora.lean_lora_dropout = lambda model: 0  # type: ignore[assignment]  # peft's own dropout path
    try:
        return apply_lora(tiny_token_classifier(), params, "TOKEN_CLS", ("classifier",))
    finally:
        lora.lean_lora_dropout = saved


@pytest.mark.parametrize("bias", ["none", "all"])
def test_a_lora_step_touches_only_the_trained_parameters(bias: str) -> None:
    model = lora_model(bias=bias)
    model.train()
    model(**batch(0)).loss.backward()
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    assert frozen and trained
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad), "a frozen weight got a gradient"
    assert all(p.grad is not None for name, p in model.named_parameters() if p.requires_grad and "lora_B" in name)
    assert not any("embeddings.word_embeddings" in name for name in trained)
    assert all("bias" in name or "lora_" in name or "modules_to_save" in name for name in trained)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], fused=True)
    optimizer.step()
    held = sum(t.numel() for state in optimizer.state.values() for t in state.values() if t.dim() > 0)
    assert held == 2 * sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_adapter_dropout_is_folded_into_a_and_keeps_a_byte_mask() -> None:
    """What the backward pass keeps for one adapted layer beyond its input and weights:
    with peft's dropout a float mask and the dropped-out input (8 bytes per element),
    folded a bool mask (1 byte)."""

    def kept_bytes(model: torch.nn.Module) -> int:
        layer = model.base_model.model.bert.encoder.layer[0].attention.self.query
        x = torch.randn(4, 12, 16, requires_grad=True)
        excluded = {x.untyped_storage().data_ptr()} | {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in excluded:
                seen[storage.data_ptr()] = storage.nbytes()
            return tensor

        layer.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = layer(x)
        out.sum().backward()
        assert x.grad is not None
        return sum(seen.values())

    lean, plain = lora_model(), lora_model(lean=False)
    folded = [m for m in lean.modules() if isinstance(m, DropoutLoraA)]
    assert len(folded) == 2 * 3  # q, k, v of both layers
    assert not any(isinstance(m, DropoutLoraA) for m in plain.modules())
    elements = 4 * 12 * 16
    assert kept_bytes(plain) - kept_bytes(lean) == 7 * elements
    assert set(lean.state_dict()) == set(plain.state_dict())  # same adapter file


@pytest.mark.parametrize(("bias", "targets"), [("none", "auto"), ("all", "auto"), ("none", "all-linear")])
def test_folded_dropout_trains_bit_identically_to_peft_dropout(bias: str, targets: str) -> None:
    """all-linear adapts layers whose input is a bf16 activation under autocast (the
    attention output and the feed-forward), where the fold does peft's fp32 cast itself."""
    from reprotune.modeling.precision import cpu_bf16_support

    for dtype in ("fp32", "bf16") if cpu_bf16_support()[0] else ("fp32",):
        lean = train_steps(lora_model(bias=bias, target_modules=targets), 3, dtype)
        plain = train_steps(lora_model(bias=bias, lean=False, target_modules=targets), 3, dtype)
        assert lean.keys() == plain.keys()
        assert all(torch.equal(lean[name], plain[name]) for name in lean), f"{dtype}: folded dropout changed training"


def test_folded_adapter_keeps_a_bf16_input_uncast() -> None:
    """Under bf16 autocast a feed-forward layer's input is a bf16 activation. peft casts it to
    the adapter's fp32 and its A keeps that copy (4 bytes per element) for the backward pass;
    folded, the layer keeps nothing of x's shape but the 1-byte mask (x itself is excluded)."""

    def kept(model: torch.nn.Module) -> list[tuple[torch.dtype, int]]:
        layer = model.base_model.model.bert.encoder.layer[0].output.dense
        x = torch.randn(4, 12, 32).to(torch.bfloat16).requires_grad_()
        excluded = {x.untyped_storage().data_ptr()} | {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen: list[tuple[torch.dtype, int]] = []

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            if tensor.untyped_storage().data_ptr() not in excluded and tensor.shape == x.shape:
                seen.append((tensor.dtype, tensor.untyped_storage().nbytes()))
            return tensor

        layer.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = layer(x)
        out.float().sum().backward()
        assert x.grad is not None and x.grad.dtype == torch.bfloat16
        return seen

    elements = 4 * 12 * 32
    lean = kept(lora_model(target_modules="all-linear"))
    plain = kept(lora_model(lean=False, target_modules="all-linear"))
    assert lean == [(torch.bool, elements)]
    assert (torch.float32, 4 * elements) in plain


def test_eval_mode_and_dora_keep_their_paths() -> None:
    model = lora_model()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch(0)).logits, model(**batch(0)).logits)  # no dropout at evaluation
    dora = lora_model(use_dora=True)
    assert not any(isinstance(m, DropoutLoraA) for m in dora.modules())


def test_bf16_keeps_frozen_linear_weights_in_bf16_and_trains_bit_identically() -> None:
    from reprotune.modeling.precision import cpu_bf16_support

    bf16 = Resolved("bf16", "cpu", True, "test")
    model = lora_model()
    frozen = frozen_linear_weights(model)
    assert frozen and all(not p.requires_grad for p in frozen)
    assert store_frozen_in_autocast_dtype(model, Resolved("fp32", "cpu", False, "test")) == 0
    changed = store_frozen_in_autocast_dtype(model, bf16)
    assert changed == sum(p.numel() for p in frozen)
    assert all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    embeddings = model.get_input_embeddings().weight
    assert embeddings.dtype == torch.float32  # not a Linear weight: looked up in its own dtype
    if not cpu_bf16_support()[0]:
        pytest.skip("this CPU lacks native bf16: the training comparison needs bf16 autocast")
    cast_once = train_steps(model, 3, "bf16")
    cast_every_step = train_steps(lora_model(), 3, "bf16")
    assert all(torch.equal(cast_once[name], cast_every_step[name]) for name in cast_once)


def test_tied_mlm_decoder_stays_in_the_embeddings_dtype() -> None:
    from transformers import BertConfig, BertForMaskedLM

    model = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2))
    model.requires_grad_(False)
    decoder = model.get_output_embeddings().weight
    assert decoder is model.get_input_embeddings().weight
    store_frozen_in_autocast_dtype(model, Resolved("bf16", "cpu", True, "test"))
    assert decoder.dtype == torch.float32
    assert model.bert.encoder.layer[0].attention.self.query.weight.dtype == torch.bfloat16
