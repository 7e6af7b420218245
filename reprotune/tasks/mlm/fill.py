"""Fill-mask for user text: the top-k tokens at each mask with their probabilities."""

from __future__ import annotations

import re
from typing import Any

import torch

from reprotune.core.errors import ReprotuneError
from reprotune.modeling.inference import device

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
        results.append({"text": record["text"], "masks": masks,
                        "filled": tokenizer.decode(filled, skip_special_tokens=True)})
    return results
