"""Masked-LM model side: the encoder with a masked-LM head (new where the checkpoint has
none), a Trainer that runs the vocabulary head on masked positions only and reports
the token-weighted validation loss, the per-token predictions table on the fixed test
masks, and fill-mask for user text."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import torch
from datasets import Dataset

from reprotune.core.errors import ReprotuneError
from reprotune.core.params import ModelParams
from reprotune.modeling.inference import batches, device
from reprotune.modeling.model import load_pretrained
from reprotune.tasks.base import TaskFamily
from reprotune.tasks.mlm.metrics import masked_token_loss
from reprotune.tasks.mlm.params import MaskSettings, MlmMeta, MlmTaskParams
from reprotune.tasks.mlm.preprocess import IGNORE, MlmCollator, Vocab

SELECTION_METRIC = "masked_token_loss"
"""train_metrics key the best checkpoint is chosen by (lower is better)."""


# head -------------------------------------------------------------------
# A checkpoint saved without a masked-LM head (a plain BertModel such as the default
# sentence encoder) gets a new one from AutoModelForMaskedLM, its decoder tied to the
# input embeddings where the architecture ties them; the untrained part is reported
# once, because until it is trained the baseline perplexity measures noise, not the encoder.
# The head's own layers (not the tied decoder, which would copy the embedding matrix),
# trained in full under LoRA: BERT/MiniLM `cls.predictions.transform`, DistilBERT
# `vocab_transform` + `vocab_layer_norm`, ELECTRA `generator_predictions`.
HEAD_MODULES = ("transform", "vocab_transform", "vocab_layer_norm", "generator_predictions")

_warned: set[str] = set()


def new_head_keys(model: Any, missing: set[str] | list[str]) -> list[str]:
    """Missing weights outside the encoder, i.e. the part of the head that was initialised fresh."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    return sorted(key for key in missing if not key.startswith(prefix))


def is_tied(model: Any) -> bool:
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    return out is not None and inp is not None and out.weight is inp.weight


def lora_trains_head(model: Any) -> bool:
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return any(name in names for name in HEAD_MODULES)


def warn_untrained_head(model: Any, name: str, keys: list[str]) -> str:
    """Print (once per model and process) which head weights are new and what that means."""
    message = (
        f"'{name}' has no masked-LM head: {len(keys)} head weights ({', '.join(keys[:4])}"
        f"{', ...' if len(keys) > 4 else ''}) are newly initialised"
        f"{'; the decoder is tied to the input embeddings' if is_tied(model) else ''}. "
        "The baseline perplexity therefore measures an untrained head, not the encoder; "
        "full fine-tuning trains the head"
        + (
            " and LoRA trains it in full (modules_to_save)."
            if lora_trains_head(model)
            else f", but LoRA's head modules ({', '.join(HEAD_MODULES)}) do not exist in this architecture, "
            "so LoRA leaves the head untrained."
        )
    )
    if name not in _warned:
        _warned.add(name)
        print(f"warning: {message}", file=sys.stderr, flush=True)
    return message


def load_masked_lm(model_params: ModelParams) -> Any:
    """AutoModelForMaskedLM from `model_params`, warning when the head is new."""
    from transformers import AutoModelForMaskedLM

    model, info = load_pretrained(AutoModelForMaskedLM, model_params, output_loading_info=True)
    keys = new_head_keys(model, info.get("missing_keys", ()))
    model.reprotune_new_head = keys
    if keys:
        warn_untrained_head(model, model_params.name_or_path, keys)
    return model


# masked-only head ---------------------------------------------------------
# HF's *ForMaskedLM models project every position onto the vocabulary, although the
# loss reads only the ~15% that are masked. For a small encoder that projection is
# about half the compute (MiniLM: 384 x 30,522 per token against ~10M multiply-adds
# for all six layers), and its [batch, length, vocab] logits dominate memory.
# A forward hook on the encoder keeps the hidden states of the labelled positions, as
# a [1, n_masked, hidden] batch, and the labels are gathered the same way, so the
# model's own head and loss run unchanged (any architecture whose head reads the
# encoder's first output: BERT, RoBERTa, DistilBERT, ELECTRA, DeBERTa). The loss is
# the same mean cross-entropy over masked tokens as the dense path.
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


def block_loss_stats(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One (sum of masked-token losses, masked tokens) row per block of `labels`.

    `logits` holds either every position ([batch, length, vocab]) or, from the
    masked-only head, the labelled positions in row-major order ([1, masked, vocab]).
    Per block rather than per batch, so the Trainer's cross-process gathering (which
    drops the samples padded in to even out the last batch) keeps the rows it should."""
    keep = labels != IGNORE
    masked = logits[keep] if logits.shape[:2] == keep.shape else logits[0]
    losses = torch.nn.functional.cross_entropy(masked.float(), labels[keep], reduction="none")
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=labels.device)
    sums.index_add_(0, keep.nonzero()[:, 0], losses)
    return torch.stack([sums, keep.sum(dim=1).float()], dim=1)


def masked_only_trainer(base: type) -> type:
    """`base` (a Trainer class) whose loss runs the head on masked positions only.
    With compute_metrics (`MlmFamily.train_metrics`), a validation step returns each
    block's loss sum and masked-token count instead of the gathered logits, which
    would not line up with the full-length labels and would hold the vocabulary per token."""

    class MaskedOnlyTrainer(base):
        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            sparse = sparse_inputs(inputs)
            if sparse is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            gather = getattr(self, "_reprotune_gather", None)
            if gather is None:
                gather = self._reprotune_gather = PositionGather(encoder_of(model))
            gathered, keep = sparse
            with gather.only(keep):
                return super().compute_loss(model, gathered, return_outputs, num_items_in_batch)

        def prediction_step(
            self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
        ) -> Any:
            loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
            if prediction_loss_only or logits is None or labels is None:
                return loss, logits, labels
            stats = block_loss_stats(logits[0] if isinstance(logits, tuple) else logits, labels)
            return loss, stats, stats[:, 1]

    return MaskedOnlyTrainer


# predictions ----------------------------------------------------------------
COLUMNS = [
    "block",
    "position",
    "label_id",
    "label",
    "loss",
    "pred",
    "correct",
    "top_k",
    "in_top_k",
    "train_count",
    "probe_context",
    "probe_fills",
]


def token_rows(
    model: Any,
    tokenizer: Any,
    features: Dataset,
    collate: Callable,
    batch_size: int,
    top_k: int,
    precision: str = "auto",
) -> list[dict[str, Any]]:
    """One row per masked test token: its loss (-log p of the gold token), the top-k
    fills and whether the gold token is first / among them. The vocabulary head runs
    on the masked positions only (sparse_head), in the same row-major order."""
    counts = features["label_train_counts"] if "label_train_counts" in features.column_names else None
    gather = PositionGather(encoder_of(model))

    def masked_logits(net: Any, batch: dict[str, torch.Tensor]) -> Any:
        with gather.only(batch["labels"] != IGNORE):
            return net(**{key: value for key, value in batch.items() if key != "labels"})

    rows: list[dict[str, Any]] = []
    try:
        for indices, batch, output in batches(
            model, features, collate, batch_size, ["input_ids", "labels"], precision, masked_logits
        ):
            rows.extend(_rows_of_batch(tokenizer, indices, batch["labels"], output.logits[0], counts, top_k))
    finally:
        gather.remove()
    return sorted(rows, key=lambda row: (row["block"], row["position"]))


def _rows_of_batch(
    tokenizer: Any,
    indices: list[int],
    labels: torch.Tensor,
    masked_logits: torch.Tensor,
    counts: list | None,
    top_k: int,
) -> list[dict[str, Any]]:
    """Rows for one batch; `masked_logits` holds the labelled positions in row-major order."""
    where = (labels != IGNORE).nonzero().cpu()
    log_probs = torch.log_softmax(masked_logits.float(), dim=-1)
    gold = labels[labels != IGNORE]
    losses = (-log_probs.gather(1, gold[:, None]).squeeze(1)).cpu().tolist()
    best = log_probs.topk(min(top_k, log_probs.shape[-1]), dim=-1).indices.cpu().tolist()
    rows = []
    for (row, position), label_id, loss, fills in zip(where.tolist(), gold.cpu().tolist(), losses, best):
        block = indices[row]
        fill_tokens = tokenizer.convert_ids_to_tokens(fills)
        rows.append(
            {
                "block": block,
                "position": position,
                "label_id": label_id,
                "label": tokenizer.convert_ids_to_tokens(label_id),
                "loss": round(float(loss), 6),
                "pred": fill_tokens[0],
                "correct": fills[0] == label_id,
                "top_k": fill_tokens,
                "in_top_k": label_id in fills,
                "train_count": int(counts[block][position]) if counts is not None else -1,
                "probe_context": "",
                "probe_fills": [],
            }
        )
    return rows


def original_ids(input_ids: list[int], labels: list[int]) -> list[int]:
    """The unmasked block: a label where one is stored, else the input id."""
    return [label if label != IGNORE else token for token, label in zip(input_ids, labels)]


def probe_position(tokenizer: Any, ids: list[int], labels: list[int], word_ids: list[int]) -> int | None:
    """The first masked position whose token is a whole alphabetic word of 4+ letters
    (one sub-token, so not 'the'/'and'), so a fill reads naturally; None if the block has none."""
    for position, label in enumerate(labels):
        if label == IGNORE or word_ids[position] < 0:
            continue
        same_word = sum(1 for w in word_ids if w == word_ids[position])
        token = tokenizer.convert_ids_to_tokens(ids[position])
        if same_word == 1 and token.isalpha() and len(token) >= 4:
            return position
    return None


def probes(
    model: Any, tokenizer: Any, features: Dataset, count: int, top_k: int, window: int = 12
) -> dict[tuple[int, int], tuple[str, list[str]]]:
    """Classic fill-mask on the first `count` test blocks: the block as written with
    ONE word replaced by the mask token; (block, position) -> (context, top-k fills)."""
    chosen: list[tuple[int, int, list[int]]] = []
    for block in range(min(count, len(features))):
        row = features[block]
        ids = original_ids(row["input_ids"], row["labels"])
        position = probe_position(tokenizer, ids, row["labels"], row["word_ids"])
        if position is not None:
            chosen.append((block, position, ids))
    if not chosen:
        return {}
    # the probe's label marks its position, so the collator leaves the input as built
    inputs = Dataset.from_dict(
        {
            "input_ids": [ids[:p] + [tokenizer.mask_token_id] + ids[p + 1 :] for _, p, ids in chosen],
            "labels": [[IGNORE] * p + [ids[p]] + [IGNORE] * (len(ids) - p - 1) for _, p, ids in chosen],
        }
    )
    collate = MlmCollator(Vocab.from_tokenizer(tokenizer), MaskSettings(strategy="token", probability=0.15))
    out: dict[tuple[int, int], tuple[str, list[str]]] = {}
    for indices, _, output in batches(model, inputs, collate, 16, ["input_ids", "labels"]):
        for offset, index in enumerate(indices):
            block, position, ids = chosen[index]
            top = output.logits[offset, position].float().topk(top_k).indices.cpu().tolist()
            start, end = max(0, position - window), min(len(ids), position + window + 1)
            left = tokenizer.decode(ids[start:position], skip_special_tokens=True)
            right = tokenizer.decode(ids[position + 1 : end], skip_special_tokens=True)
            context = f"{left} {tokenizer.mask_token} {right}".strip()
            out[(block, position)] = (context, tokenizer.convert_ids_to_tokens(top))
    return out


def predictions_frame(
    rows: list[dict[str, Any]], probe_results: dict[tuple[int, int], tuple[str, list[str]]]
) -> pd.DataFrame:
    for row in rows:
        found = probe_results.get((row["block"], row["position"]))
        if found:
            row["probe_context"], row["probe_fills"] = found[0], list(found[1])
    return pd.DataFrame(rows, columns=COLUMNS)


# fill-mask ------------------------------------------------------------------
MASK_SPELLINGS = re.compile(r"\[MASK\]|<mask>")


def fill_masks(model: Any, tokenizer: Any, records: list[dict[str, Any]], top_k: int) -> list[dict[str, Any]]:
    """Write the mask as [MASK] or <mask> (either works for any tokenizer)."""
    results = []
    model.eval()
    model.to(device())
    for number, record in enumerate(records, start=1):
        text = MASK_SPELLINGS.sub(tokenizer.mask_token, record["text"])
        encoded = tokenizer(text, return_tensors="pt", truncation=True).to(device())
        positions = (encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
        if not positions:
            raise ReprotuneError(f"input record {number} has no mask; write [MASK] where a word should be filled")
        with torch.inference_mode():
            probs = torch.softmax(model(**encoded).logits[0, positions].float(), dim=-1)
        top = probs.topk(top_k, dim=-1)
        masks = []
        for index, position in enumerate(positions):
            candidates = [
                {"token": tokenizer.convert_ids_to_tokens(int(token)), "score": round(float(score), 4)}
                for score, token in zip(top.values[index], top.indices[index])
            ]
            masks.append({"position": position, "candidates": candidates})
        filled = encoded["input_ids"][0].clone()
        for index, position in enumerate(positions):
            filled[position] = top.indices[index][0]
        results.append(
            {"text": record["text"], "masks": masks, "filled": tokenizer.decode(filled, skip_special_tokens=True)}
        )
    return results


class MlmFamily(TaskFamily[MlmTaskParams, MlmMeta]):
    name = "mlm"
    head_modules = HEAD_MODULES
    default_metric = SELECTION_METRIC
    greater_is_better = False

    def build_model(self, params: MlmTaskParams, meta: MlmMeta, source: str | None = None) -> Any:
        model_params = params.model if source is None else params.model.model_copy(update={"name_or_path": source})
        return load_masked_lm(model_params)

    def collator(self, tokenizer: Any, params: MlmTaskParams, meta: MlmMeta) -> MlmCollator:
        return MlmCollator(Vocab.from_tokenizer(tokenizer), meta.masking)

    def trainer_class(self, base: type) -> type:
        """The vocabulary head runs on masked positions only (same loss, less compute)."""
        return masked_only_trainer(base)

    def model_columns(self) -> list[str]:
        """word_ids reach the collator (whole-word masking), which does not pass them to the model."""
        return ["input_ids", "labels", "word_ids"]

    def train_metrics(
        self, meta: MlmMeta, params: MlmTaskParams, raw_eval: Dataset, features_eval: Dataset
    ) -> Callable[[Any], dict[str, float]]:
        """The token-weighted loss over the fixed validation masks (log of the perplexity
        the test reports), from the per-block rows `masked_only_trainer` returns."""

        def compute(prediction: Any) -> dict[str, float]:
            return {SELECTION_METRIC: masked_token_loss(prediction.predictions)}

        return compute

    def predict(
        self, model: Any, tokenizer: Any, raw: Dataset, features: Dataset, meta: MlmMeta, params: MlmTaskParams
    ) -> pd.DataFrame:
        """One row per masked test token (the fixed masks), with its loss and top-k fills."""
        settings = params.evaluate
        rows = token_rows(
            model,
            tokenizer,
            features,
            self.collator(tokenizer, params, meta),
            settings.batch_size,
            settings.top_k,
            settings.precision,
        )
        found = probes(model, tokenizer, features, settings.fill_mask_examples, settings.top_k)
        return predictions_frame(rows, found)

    def predict_records(
        self, model: Any, tokenizer: Any, records: list[dict[str, Any]], meta: MlmMeta, params: MlmTaskParams
    ) -> list[dict[str, Any]]:
        return fill_masks(model, tokenizer, records, params.evaluate.top_k)


FAMILY = MlmFamily()
