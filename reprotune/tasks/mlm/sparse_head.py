"""Run the masked-LM head on masked positions only.

HF's *ForMaskedLM models project every position onto the vocabulary, although the
loss reads only the ~15% that are masked. For a small encoder that projection is
about half the compute (MiniLM: 384 x 30,522 per token against ~10M multiply-adds
for all six layers), and its [batch, length, vocab] logits dominate memory.

A forward hook on the encoder keeps the hidden states of the labelled positions,
as a [1, n_masked, hidden] batch, and the labels are gathered the same way, so the
model's own head and loss run unchanged (any architecture whose head reads the
encoder's first output: BERT, RoBERTa, DistilBERT, ELECTRA, DeBERTa). The loss is
the same mean cross-entropy over masked tokens as the dense path."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

IGNORE = -100


def encoder_of(model: Any) -> torch.nn.Module:
    """The transformer body under DDP/compile wrappers, PEFT and the masked-LM head."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module  # DistributedDataParallel
    model = getattr(model, "_orig_mod", model)  # torch.compile
    if hasattr(model, "get_base_model"):  # PeftModel
        model = model.get_base_model()
    body = getattr(model, "base_model", None)
    if body is None or body is model:
        raise TypeError(f"{type(model).__name__} has no separate encoder (base_model) to gather from")
    return body


class PositionGather:
    """A forward hook that, while `keep` is set, replaces the encoder's first output
    with its rows at `keep` (a boolean [batch, length] mask)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        self.keep: torch.Tensor | None = None
        self.handle = encoder.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> Any:
        if self.keep is None:
            return output
        if isinstance(output, tuple):
            return (output[0][self.keep].unsqueeze(0), *output[1:])
        output.last_hidden_state = output.last_hidden_state[self.keep].unsqueeze(0)
        return output

    @contextmanager
    def only(self, keep: torch.Tensor) -> Iterator[None]:
        self.keep = keep
        try:
            yield
        finally:
            self.keep = None

    def remove(self) -> None:
        self.handle.remove()


def sparse_inputs(inputs: dict[str, Any]) -> tuple[dict[str, Any], torch.Tensor] | None:
    """The inputs with labels gathered to the masked positions, and the mask; None
    when there are no labels (nothing to gain) or no masked position (keep the dense path)."""
    labels = inputs.get("labels")
    if labels is None:
        return None
    keep = labels != IGNORE
    if not bool(keep.any()):
        return None
    return {**inputs, "labels": labels[keep].unsqueeze(0)}, keep


def masked_only_trainer(base: type) -> type:
    """`base` (a Trainer class) whose loss runs the head on masked positions only.
    Evaluation still reports the loss only (MLM has no compute_metrics), so the
    gathered logits are never compared with full-length labels."""

    class MaskedOnlyTrainer(base):  # type: ignore[misc, valid-type]
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            sparse = sparse_inputs(inputs)
            if sparse is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            gather = getattr(self, "_reprotune_gather", None)
            if gather is None:
                gather = self._reprotune_gather = PositionGather(encoder_of(model))
            gathered, keep = sparse
            with gather.only(keep):
                return super().compute_loss(model, gathered, return_outputs, num_items_in_batch)

    return MaskedOnlyTrainer
