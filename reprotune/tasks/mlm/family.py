"""Masked-language-model domain adaptation as a task family for the generic stages.

tokenize cuts each split's concatenated tokens into blocks and masks validation
and test ONCE (seeded), so every evaluation scores the same tokens; train blocks
are masked afresh in each batch by the collator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset, DatasetDict

from reprotune.core.errors import ReprotuneError
from reprotune.tasks.base import Meta, TaskFamily
from reprotune.tasks.mlm import analysis, chunking, perplexity
from reprotune.tasks.mlm.fill import fill_masks
from reprotune.tasks.mlm.head import HEAD_MODULES, load_masked_lm
from reprotune.tasks.mlm.masking import (
    IGNORE,
    MaskSettings,
    MlmCollator,
    Vocab,
    mask_batch,
    pad,
)
from reprotune.tasks.mlm.params import MlmDownloadParams, MlmTaskParams
from reprotune.tasks.mlm.sources import clean, load_documents
from reprotune.tasks.mlm.sparse_head import masked_only_trainer

SPLITS = ("train", "validation", "test")
# Above this, tokenizers store "no limit" (1e30) as model_max_length.
_NO_LIMIT = 10**6


class MlmFamily(TaskFamily):
    name = "mlm"
    params_model = MlmTaskParams
    peft_task_type = None
    head_modules = HEAD_MODULES
    default_metric = "loss"
    greater_is_better = False

    # download -------------------------------------------------------------
    def load_raw(self, params: MlmDownloadParams) -> tuple[DatasetDict, dict[str, Any]]:  # type: ignore[override]
        not_utf8: list[str] = []
        raw, report = clean(load_documents(params, not_utf8), params.deduplicate)
        report["files_not_utf8"] = {"action": params.invalid_utf8, "files": not_utf8}
        return raw, report

    # tokenize -------------------------------------------------------------
    def prepare_meta(self, raw: DatasetDict, params: MlmTaskParams) -> Meta:  # type: ignore[override]
        settings = params.tokenize
        probability = settings.mlm_probability if settings.masking == "token" else settings.wwm_probability
        masking = MaskSettings(settings.masking, probability, settings.mask_replace_prob, settings.random_replace_prob)
        return {"masking": masking.to_meta(), "chunk_size": settings.chunk_size}

    @staticmethod
    def _check_tokenizer(tokenizer: Any, chunk_size: int) -> None:
        if tokenizer.mask_token_id is None:
            raise ReprotuneError(
                f"tokenizer of '{tokenizer.name_or_path}' has no mask token; masked-LM needs an encoder "
                "tokenizer with one (e.g. [MASK] or <mask>)"
            )
        limit = tokenizer.model_max_length
        if limit < _NO_LIMIT and chunk_size > limit:
            raise ReprotuneError(
                f"tokenize.chunk_size {chunk_size} exceeds the model's maximum length {limit}; use at most {limit}"
            )

    def tokenize(self, raw: DatasetDict, tokenizer: Any, params: MlmTaskParams,  # type: ignore[override]
                 meta: Meta) -> tuple[DatasetDict, dict[str, Any]]:
        settings = params.tokenize
        self._check_tokenizer(tokenizer, settings.chunk_size)
        tokenized = raw.map(
            chunking.tokenize_documents, batched=True, batch_size=settings.batch_size, num_proc=settings.num_proc,
            fn_kwargs={"tokenizer": tokenizer}, remove_columns=raw["train"].column_names, desc="tokenize documents",
        )
        masking = MaskSettings.from_meta(meta["masking"])
        vocab = Vocab.from_tokenizer(tokenizer)
        features: dict[str, Dataset] = {}
        report: dict[str, Any] = {"chunk_size": settings.chunk_size, "last_chunk": settings.last_chunk,
                                  "masking": masking.to_meta()}
        train_counts: np.ndarray | None = None
        for index, split in enumerate(SPLITS):
            stream = chunking.concatenate(tokenized[split])
            total = len(stream.input_ids)
            bounds = chunking.chunk_bounds(total, settings.chunk_size, settings.last_chunk)
            if not bounds:
                raise ReprotuneError(
                    f"{split} has {total} tokens, fewer than tokenize.chunk_size {settings.chunk_size}; "
                    "lower chunk_size or set tokenize.last_chunk: keep"
                )
            limit = settings.max_train_samples if split == "train" else settings.max_eval_samples
            keep = chunking.sample_indices(len(bounds), limit, settings.sample_seed)
            ids, words = chunking.blocks(stream, bounds, keep)
            report[split] = {
                "documents": stream.documents, "tokens": total, "blocks": len(bounds),
                "tail_tokens_dropped": total - sum(end - start for start, end in bounds),
                "blocks_kept": len(ids), "tokens_kept": sum(len(block) for block in ids),
            }
            if split == "train":
                train_counts = np.bincount(np.concatenate([np.asarray(b) for b in ids]), minlength=len(tokenizer))
                columns: dict[str, list] = {"input_ids": ids}
                if masking.strategy == "whole_word":
                    columns["word_ids"] = words
                features[split] = Dataset.from_dict(columns)
                continue
            generator = torch.Generator().manual_seed(settings.mask_seed + index)
            masked, labels = self._fixed_masks(ids, words, masking, vocab, generator)
            columns = {"input_ids": masked, "labels": labels, "word_ids": words}
            if split == "test":
                assert train_counts is not None
                columns["label_train_counts"] = [
                    [int(train_counts[label]) if label != IGNORE else -1 for label in row] for row in labels
                ]
            report[split]["masked_tokens"] = sum(sum(1 for label in row if label != IGNORE) for row in labels)
            features[split] = Dataset.from_dict(columns)
        return DatasetDict(features), report

    @staticmethod
    def _fixed_masks(ids: list[list[int]], words: list[list[int]], masking: MaskSettings, vocab: Vocab,
                     generator: torch.Generator) -> tuple[list[list[int]], list[list[int]]]:
        """Mask the evaluation blocks once; stored with the data, they never change."""
        lengths = [len(block) for block in ids]
        attention = pad([[1] * n for n in lengths], 0)
        masked, labels = mask_batch(pad(ids, vocab.pad_id), pad(words, -1), attention, masking, vocab, generator)
        return ([row[:n] for row, n in zip(masked.tolist(), lengths)],
                [row[:n] for row, n in zip(labels.tolist(), lengths)])

    # train ----------------------------------------------------------------
    def build_model(self, params: MlmTaskParams, meta: Meta, source: str | None = None) -> Any:  # type: ignore[override]
        model_params = params.model if source is None else params.model.model_copy(update={"name_or_path": source})
        return load_masked_lm(model_params)

    def collator(self, tokenizer: Any, params: MlmTaskParams, meta: Meta) -> Callable:  # type: ignore[override]
        return MlmCollator(Vocab.from_tokenizer(tokenizer), MaskSettings.from_meta(meta["masking"]))

    def trainer_class(self, base: type) -> type:
        """The vocabulary head runs on masked positions only (same loss, less compute)."""
        return masked_only_trainer(base)

    def model_columns(self) -> list[str]:
        """word_ids reach the collator (whole-word masking), which does not pass them to the model."""
        return ["input_ids", "labels", "word_ids"]

    # evaluate -------------------------------------------------------------
    def predict(self, model: Any, tokenizer: Any, raw: Dataset, features: Dataset, meta: Meta,  # type: ignore[override]
                params: MlmTaskParams) -> pd.DataFrame:
        """One row per masked test token (the fixed masks), with its loss and top-k fills."""
        settings = params.evaluate
        rows = perplexity.token_rows(model, tokenizer, features, self.collator(tokenizer, params, meta),
                                     settings.batch_size, settings.top_k, settings.precision)
        probes = perplexity.probes(model, tokenizer, features, settings.fill_mask_examples, settings.top_k)
        return perplexity.predictions_frame(rows, probes)

    def predict_records(self, model: Any, tokenizer: Any, records: list[dict[str, Any]], meta: Meta,  # type: ignore[override]
                        params: MlmTaskParams) -> list[dict[str, Any]]:
        return fill_masks(model, tokenizer, records, params.evaluate.top_k)

    def score(self, predictions: pd.DataFrame, meta: Meta, params: MlmTaskParams) -> dict[str, Any]:  # type: ignore[override]
        return perplexity.scores(predictions)

    # error-analysis -------------------------------------------------------
    def analyse(self, predictions: dict[str, pd.DataFrame], meta: Meta, params: MlmTaskParams,  # type: ignore[override]
                report_dir: Path, confusion_dir: Path) -> dict[str, Any]:
        settings = params.error_analysis
        return analysis.analyse(predictions, settings.frequency_edges, settings.worst_n, settings.min_token_count,
                                report_dir, confusion_dir)


FAMILY = MlmFamily()
