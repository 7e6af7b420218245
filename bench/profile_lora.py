"""Where a training step's time goes, full fine-tuning against LoRA, on the train stage's path
(issue 25): torch.profiler over the same steps bench/throughput_lora.py times, each op's own
CPU time filed by phase (forward, backward, optimizer, gradient clipping, data loading, the
Trainer's own work) and kind (matrix products, everything else), in milliseconds per step.

The arithmetic behind "LoRA should be ~1.5x faster" counts matrix products only: a frozen
layer skips its weight gradient, a third of its products. This table shows how much of a
step that arithmetic covers, and so the speed-up it allows on this machine.

    python bench/profile_lora.py --model minilm-l6 --precision fp32 bf16 --threads 1 \\
        --out bench/results/profile-lora-cpu.json
    python bench/profile_lora.py --smoke      # a tiny model, seconds: checks the harness runs
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

BENCH = Path(__file__).resolve().parent
for entry in (str(BENCH.parent), str(BENCH)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

MATMUL_OPS = frozenset(
    {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear", "aten::_addmm_activation"}
)
"""Ops whose own time is a matrix product (oneDNN's bf16 kernels run inside them too)."""

PHASE_MARKERS = (
    ("Optimizer.", "optimizer"),
    ("clip_grad_norm", "clipping"),
    ("autograd::engine::evaluate_function", "backward"),
    ("model_forward", "forward"),
    ("enumerate(DataLoader)", "data"),
)
"""An op belongs to the phase of its first ancestor whose name starts with one of these;
`clip_grad_norm` and `model_forward` are this script's own annotations."""


def phase_of(event: Any) -> str:
    node = event
    while node is not None:
        for prefix, phase in PHASE_MARKERS:
            if node.name.startswith(prefix):
                return phase
        node = node.cpu_parent
    return "trainer"


def kind_of(name: str) -> str:
    return "matmul" if name in MATMUL_OPS or name.startswith("mkldnn::") else "other"


def ops(events: Any) -> list[Any]:
    """The events that do work: annotations (names without `::`, e.g. `Optimizer.step#AdamW.step`)
    and the autograd engine's wrappers have no work of their own."""
    return [event for event in events if "::" in event.name and not event.name.startswith("autograd::engine")]


def breakdown(events: Any, steps: int) -> dict[str, float]:
    """Own CPU time per (phase, kind) and per phase, ms per step."""
    totals: dict[str, float] = defaultdict(float)
    for event in ops(events):
        ms = event.self_cpu_time_total / 1000 / steps
        phase, kind = phase_of(event), kind_of(event.name)
        totals[f"{phase}.{kind}"] += ms
        totals[phase] += ms
        totals["all"] += ms
    return {key: round(value, 2) for key, value in sorted(totals.items())}


def top_ops(events: Any, steps: int, count: int) -> list[dict[str, Any]]:
    """The ops with the most own CPU time, with their phase: where the rest of the step goes."""
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for event in ops(events):
        totals[(phase_of(event), event.name)] += event.self_cpu_time_total / 1000 / steps
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:count]
    return [{"phase": phase, "op": name, "ms_per_step": round(ms, 2)} for (phase, name), ms in ranked]


def profile_row(spec: dict[str, Any]) -> dict[str, Any]:
    """Train warmup + steps optimizer steps of one method, the last `steps` under the profiler."""
    import throughput_train as tt
    import torch
    from throughput_lora import prepare_row
    from torch.profiler import ProfilerActivity, profile, record_function, schedule
    from transformers import TrainerCallback

    warmup, steps = spec["warmup"], spec["steps"]
    output_dir = Path(tempfile.mkdtemp(prefix="reprotune-profile-lora-"))
    try:
        row = prepare_row(spec, output_dir)
        profiler = profile(
            activities=[ProfilerActivity.CPU], schedule=schedule(wait=0, warmup=warmup, active=steps, repeat=1)
        )

        class Step(TrainerCallback):
            def on_step_end(self, *_: Any, **__: Any) -> None:
                profiler.step()

        class Annotated(tt.ordered_eval_trainer()):  # type: ignore[misc]
            """The stage's Trainer with the forward pass and gradient clipping named in the profile."""

            def compute_loss(self, *args: Any, **kwargs: Any) -> Any:
                with record_function("model_forward"):
                    return super().compute_loss(*args, **kwargs)

        trainer = tt.quiet(
            Annotated(
                model=row.model,
                args=row.args,
                train_dataset=row.train_set,
                data_collator=tt.collator(row.tokenizer, "fast"),
                processing_class=row.tokenizer,
                callbacks=[Step()],
            )
        )
        clip = trainer.accelerator.clip_grad_norm_

        def named_clip(*args: Any, **kwargs: Any) -> Any:
            with record_function("clip_grad_norm"):
                return clip(*args, **kwargs)

        trainer.accelerator.clip_grad_norm_ = named_clip
        with profiler:
            trainer.train()
        events = profiler.events()
        return {
            "model": spec["model"],
            "method": spec["method"],
            "precision": spec["precision"],
            "batch_size": spec["batch_size"],
            "lora_bias": spec["bias"] if row.method == "lora" else None,
            "lora_dropout": spec["dropout"] if row.method == "lora" else None,
            "steps": steps,
            "threads": torch.get_num_threads(),
            "trainable_params": sum(p.numel() for p in row.model.parameters() if p.requires_grad),
            "ms_per_step": breakdown(events, steps),
            "top_ops": top_ops(events, steps, 12),
            "data": row.source,
        }
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)


def attainable(full: dict[str, float], lora: dict[str, float]) -> dict[str, float]:
    """The profiled speed-up, and what it would be if LoRA saved exactly the arithmetic's share
    (half its backward products, i.e. a third of all, and the whole optimizer step and gradient
    clipping) and nothing else changed."""
    saved = full.get("backward.matmul", 0.0) / 2 + full.get("optimizer", 0.0) + full.get("clipping", 0.0)
    arithmetic = full["all"] - saved
    share = (full.get("forward.matmul", 0.0) + full.get("backward.matmul", 0.0)) / full["all"]
    return {
        "profiled_ratio": round(full["all"] / lora["all"], 3),
        "arithmetic_ratio": round(full["all"] / arithmetic, 3),
        "matmul_share_of_full_step": round(share, 3),
    }


def main() -> int:
    from throughput import DEFAULT_ENCODER, LORA_DROPOUT

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm-l6", help="a bench/throughput_train.py model spec name")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    parser.add_argument("--methods", nargs="+", default=["full", "lora"], choices=("full", "lora", "lora-peft"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, help="torch threads (default torch's)")
    parser.add_argument("--lora-bias", choices=("none", "all", "lora_only"), default="all")
    parser.add_argument("--lora-dropout", type=float, default=LORA_DROPOUT)
    parser.add_argument("--tokenizer", default=DEFAULT_ENCODER, help="tokenizer directory or package:NAME/path")
    shared = BENCH.parents[1] / "shared" / "data"
    parser.add_argument("--data-dir", type=Path, default=shared, help="holds wikiann-en/ (else synthetic sentences)")
    parser.add_argument("--smoke", action="store_true", help="bert-tiny, 2+2 steps of batch 4")
    parser.add_argument("--out", type=Path, help="write the rows and ratios as JSON here")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.batch_size, args.warmup, args.steps = "bert-tiny", 4, 2, 2

    import datasets
    import transformers

    from reprotune.core.atomic import write_json

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    result: dict[str, Any] = {"command": " ".join(["python", "bench/profile_lora.py", *sys.argv[1:]]), "rows": []}
    for precision in args.precision:
        rows = {}
        for method in args.methods:
            spec = {
                "model": args.model,
                "method": method,
                "precision": precision,
                "batch_size": args.batch_size,
                "warmup": args.warmup,
                "steps": args.steps,
                "threads": args.threads,
                "bias": args.lora_bias,
                "dropout": args.lora_dropout,
                "tokenizer": args.tokenizer,
                "data_dir": str(args.data_dir),
            }
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rows[method] = profile_row(spec)
            result["rows"].append(rows[method])
            print(precision, method, json.dumps(rows[method]["ms_per_step"]), flush=True)
        if "full" in rows and "lora" in rows:
            ratios = {"precision": precision, **attainable(rows["full"]["ms_per_step"], rows["lora"]["ms_per_step"])}
            result.setdefault("ratios", []).append(ratios)
            print(precision, json.dumps(ratios), flush=True)
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
