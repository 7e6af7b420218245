"""What each method keeps for the backward pass, by sequence length (issue 25): the bytes of
activations autograd saves in one training forward, next to the AdamW state that LoRA does
not hold. A steady step's memory peaks as its backward pass starts: every saved activation
is alive, the AdamW state exists, and the weight gradients do not yet (Trainer's zero_grad
set them to None after the previous step; they grow as the activations are freed).

RSS carries the allocator's slack and the high-water mark of whatever ran before. This
counts exactly what autograd keeps: the unique storages its saved-tensor hook sees,
parameters excluded. It runs one forward under the train stage's precision on random
tokens, for the default encoder's shape (random weights, nothing downloaded) and each LoRA
row built as the train stage builds it. Rows: full; LoRA on the attention projections
(`target_modules: auto`) and on every Linear (`all-linear`), with the adapters' dropout at
0.1 and 0. Each row runs with the attention probabilities' dropout at 0.1 (the encoders'
default) and at 0 (SDPA's fused CPU kernel then runs instead of its math path).

    python bench/saved_activations.py --shapes 32x48 16x384 --out bench/results/saved-activations-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from throughput_lora import build  # noqa: E402
from throughput_train import NUM_LABELS, SEED  # noqa: E402

ROWS = (
    ("full", "auto", 0.0),
    ("lora", "auto", 0.1),
    ("lora", "auto", 0.0),
    ("lora", "all-linear", 0.1),
    ("lora", "all-linear", 0.0),
)
"""(method, target_modules, LoRA dropout); the LoRA rows use `bias: none`, the params default."""
ADAMW_BYTES = 8
"""fp32 exp_avg and exp_avg_sq per trained parameter."""
GRAD_BYTES = 4
"""An fp32 gradient per trained parameter."""
MB = 2**20


def saved_bytes(model: torch.nn.Module, batch: int, length: int, precision: str) -> tuple[int, dict[str, int]]:
    """Bytes of the distinct tensors autograd saves in one training forward, in all and by dtype."""
    generator = torch.Generator().manual_seed(SEED)
    ids = torch.randint(1000, 20000, (batch, length), generator=generator)
    labels = torch.randint(0, NUM_LABELS, (batch, length), generator=generator)
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, tuple[str, int]] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            seen.setdefault(storage.data_ptr(), (str(tensor.dtype).removeprefix("torch."), storage.nbytes()))
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            model(input_ids=ids, labels=labels)
    by_dtype: Counter[str] = Counter()
    for dtype, size in seen.values():
        by_dtype[dtype] += size
    return sum(by_dtype.values()), dict(by_dtype)


def measure(model_name: str, shape: str, precision: str, attention_dropout: float) -> list[dict[str, Any]]:
    """One row per ROWS entry at one batch x length and attention dropout."""
    batch, length = (int(part) for part in shape.split("x"))
    rows = []
    for method, targets, dropout in ROWS:
        model = build(model_name, method, precision, "none", dropout, targets, attention_dropout)
        total, by_dtype = saved_bytes(model, batch, length, precision)
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        rows.append(
            {
                "shape": shape,
                "attention_dropout": attention_dropout,
                "method": method,
                "target_modules": targets if method == "lora" else None,
                "lora_dropout": dropout if method == "lora" else None,
                "saved_activations_bytes": total,
                "saved_activations_mb": round(total / MB, 1),
                "saved_by_dtype_mb": {dtype: round(size / MB, 1) for dtype, size in sorted(by_dtype.items())},
                "trainable_params": trained,
                "adamw_state_mb": round(trained * ADAMW_BYTES / MB, 1),
                "weight_grads_mb": round(trained * GRAD_BYTES / MB, 1),
            }
        )
    full = rows[0]
    full_held = full["saved_activations_mb"] + full["adamw_state_mb"]
    for row in rows:
        # what this row holds as a steady step's backward pass starts, beyond the weights, against full
        held = row["saved_activations_mb"] + row["adamw_state_mb"]
        row["activations_minus_full_mb"] = round(row["saved_activations_mb"] - full["saved_activations_mb"], 1)
        row["backward_start_minus_full_mb"] = round(held - full_held, 1) + 0.0  # no "-0.0"
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm-l6", help="a shape from bench/throughput_train.py")
    parser.add_argument("--shapes", nargs="+", default=["32x48", "16x384"], help="BATCHxLENGTH, e.g. 16x384")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--attention-dropout", type=float, nargs="+", default=[0.1, 0.0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rows = [
        row
        for shape in args.shapes
        for attention in args.attention_dropout
        for row in measure(args.model, shape, args.precision, attention)
    ]
    header = ["shape", "attention dropout", "method", "LoRA targets, dropout", "saved activations MB", "− full"]
    print("| " + " | ".join([*header, "+ AdamW − full"]) + " |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        lora = f"{row['target_modules']}, {row['lora_dropout']}" if row["method"] == "lora" else ""
        print(
            f"| {row['shape']} | {row['attention_dropout']} | {row['method']} | {lora} | {row['saved_activations_mb']} "
            f"| {row['activations_minus_full_mb']} | {row['backward_start_minus_full_mb']} |"
        )
    if args.out:
        command = "python bench/saved_activations.py " + " ".join(argv if argv is not None else sys.argv[1:])
        result = {"command": command, "model": args.model, "precision": args.precision, "rows": rows}
        temporary = args.out.with_suffix(".tmp")
        temporary.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        temporary.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
