"""Length-ordered evaluation batches: every row once, longest first, and each row's
output the same as when it is run alone (padding must not leak into results)."""

from __future__ import annotations

import torch
from datasets import Dataset

from reprotune.modeling.inference import autocast, batches, length_order


def tiny_tagger() -> torch.nn.Module:
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(0)
    return BertForTokenClassification(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=3,
        )
    )


def pad_collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    width = max(len(row["input_ids"]) for row in rows)
    ids = torch.tensor([row["input_ids"] + [0] * (width - len(row["input_ids"])) for row in rows])
    mask = torch.tensor([[1] * len(row["input_ids"]) + [0] * (width - len(row["input_ids"])) for row in rows])
    return {"input_ids": ids, "attention_mask": mask}


def varied_rows() -> Dataset:
    lengths = [3, 9, 5, 9, 2, 7, 4]
    return Dataset.from_dict(
        {
            "input_ids": [[(i * 7 + j) % 45 + 2 for j in range(n)] for i, n in enumerate(lengths)],
            "id": [f"row{i}" for i in range(len(lengths))],
        }
    )


def outputs_by_row(
    model: torch.nn.Module, features: Dataset, batch_size: int
) -> tuple[list[int], dict[int, torch.Tensor]]:
    seen, logits = [], {}
    for indices, _, output in batches(model, features, pad_collate, batch_size, ["input_ids"], "fp32"):
        for offset, row in enumerate(indices):
            seen.append(row)
            logits[row] = output.logits[offset, : len(features[row]["input_ids"])].clone()
    return seen, logits


def test_rows_come_longest_first_and_ties_keep_dataset_order() -> None:
    features = varied_rows()
    assert length_order(features) == [1, 3, 5, 2, 6, 0, 4]
    seen, _ = outputs_by_row(tiny_tagger(), features, batch_size=3)
    assert seen == [1, 3, 5, 2, 6, 0, 4]


def test_each_row_gets_the_output_it_gets_alone() -> None:
    model, features = tiny_tagger(), varied_rows()
    _, batched = outputs_by_row(model, features, batch_size=3)
    _, alone = outputs_by_row(model, features, batch_size=1)
    assert sorted(batched) == list(range(len(features)))
    for row, logits in alone.items():
        torch.testing.assert_close(batched[row], logits, rtol=1e-4, atol=1e-5, msg=f"row {row}")


def test_cpu_autocast_is_bf16_only_where_the_cpu_has_it() -> None:
    if torch.cuda.is_available():
        return
    from reprotune.modeling.precision import cpu_bf16_support

    capable = cpu_bf16_support()[0]
    with autocast("fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("auto"):
        assert torch.is_autocast_enabled("cpu") == capable
